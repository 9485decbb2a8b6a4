# Pulse inputs (docs/pulses.md): a legacy meter's S0 or open-collector pulse output on a GPIO,
# counted in the pin's IRQ. The only code that touches the pins; the firmware (pulses.py)
# takes the counts and turns them into energy.
#
# Debounce: the IRQ fires on both edges and remembers when the last edge of either kind came.
# An edge into the active level counts only if the input had been still for debounce_us
# before it: the bounces of a contact closing, and those of it opening (which also pass
# through the active level), come within microseconds to milliseconds of another edge and
# are refused. A stuck input makes no edges and counts nothing; a chattering one counts
# nothing until it is still again.
#
# The handler can run as a hard IRQ: it allocates nothing (its state is small ints in one
# array, the bound method is made once) and only counts. take() reads and clears the count
# with IRQs off, so no pulse is lost or counted twice between the two.

import array

import machine
from mpshim import ticks_diff, ticks_us

_COUNT = 0      # pulses accepted and not yet taken
_LAST = 1       # ticks_us of the last edge, either kind
_BOUNCES = 2    # edges into the active level refused (bounce or a spike)
_SEEN = 3       # 1 once an edge has been seen (the first one counts if active)


class PulseInput:
    def __init__(self, pin_id, debounce_us=20000, active_low=True, ticks=None):
        pull = machine.Pin.PULL_UP if active_low else machine.Pin.PULL_DOWN
        self.pin = machine.Pin(pin_id, machine.Pin.IN, pull)
        self.pin_id = pin_id
        self.active = 0 if active_low else 1
        self.debounce_us = debounce_us
        self._ticks = ticks or ticks_us
        self.s = array.array("i", [0, 0, 0, 0])
        self._handler = self._edge              # one bound method, made here, not per IRQ
        self.pin.irq(handler=self._handler,
                     trigger=machine.Pin.IRQ_FALLING | machine.Pin.IRQ_RISING)

    def _edge(self, pin):
        s = self.s
        now = self._ticks()
        still = s[_SEEN] == 0 or ticks_diff(now, s[_LAST]) >= self.debounce_us
        s[_LAST] = now
        s[_SEEN] = 1
        if pin.value() != self.active:
            return                              # the edge out of a pulse
        if still:
            s[_COUNT] += 1
        else:
            s[_BOUNCES] += 1

    def take(self):
        """Pulses accepted since the last take (read and cleared with IRQs off)."""
        state = machine.disable_irq()
        n = self.s[_COUNT]
        self.s[_COUNT] = 0
        machine.enable_irq(state)
        return n

    def bounces(self):
        return self.s[_BOUNCES]

    def deinit(self):
        self.pin.irq(handler=None)


def make_inputs(pins, debounce_us, ticks=None):
    """PulseInputs for a config's pulse_pins ("4,5": GPIO numbers); BoardError-free: a pin
    the port refuses raises its own ValueError, which the App reports."""
    return [PulseInput(int(p), debounce_us, ticks=ticks) for p in pins.split(",") if p.strip()]


class PulseOnlyBoard:
    """The board of a transport box (config pulse_only): pulse inputs and no CT or PT. It
    has the contract's figures so the App can be built, and no samples: the transport box
    (firmware/transport_box.py) never reads any."""

    sample_rate = 1600.0
    rate_ratio = (1600, 1)
    channel_delay_s = 0.0
    v_gain = 1.0
    i_gain = 1.0
    v_mid = 2048
    i_mid = 2048

    def read(self, vbuf, ibuf):
        return 0

    def pulse_inputs(self, pins, debounce_us):
        return make_inputs(pins, debounce_us)
