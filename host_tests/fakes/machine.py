# Fake `machine` for desktop tests of boards/*: ADC, Pin, Timer, mem32, idle, WDT, reset_cause.
# Usable under CPython and the MicroPython unix port: host_tests/fakes goes first on the
# firmware path (runner.run(..., extra=[FAKES])).
#
# Simulated time: a clock that advances only when the fake hardware acts: each ADC read costs
# ADC_READ_NS, each Timer tick moves it to the tick's due time. It is kept as two small ints,
# microseconds (wrapping at 2^30, as ticks_us does) and the nanoseconds within one
# (`now[0]`, `now[1]`): one nanosecond count would pass 2^30 after a second and become a
# heap-allocated long int on a 32-bit port, which the allocation tests would then count.
# fake_ticks_us() reads it; pass it to a board as `ticks=` for exact start-up measurements.
# idle() runs the fake hardware once (one hook: a Timer firing or rp2.DMA moving a half).
# Nothing here allocates per sample, so gc.mem_alloc() around a board's read() measures the
# board alone.

import array

now = [0, 0]  # [microseconds & TICKS_MASK, nanoseconds 0..999]
TICKS_MASK = 0x3FFFFFFF
ADC_READ_NS = 25000  # one ADC read: the inter-channel delay a board should measure
ADC_READ_US, ADC_READ_SUB = divmod(ADC_READ_NS, 1000)
UV_PER_COUNT = 805   # fake read_uv() characteristic: uv = UV_PER_COUNT * raw + UV_OFFSET
UV_OFFSET = 142000
hook = [None]        # the fake hardware idle() drives
_idle_calls = [0]


def fake_ticks_us():
    return now[0]


def _add(t, add_us, add_ns):
    """t = [us, ns] moved on by add_us + add_ns, in place (no tuple: nothing allocated)."""
    ns = t[1] + add_ns
    us = t[0] + add_us
    if ns >= 1000:
        ns -= 1000
        us += 1
    t[0] = us & TICKS_MASK
    t[1] = ns


def idle():
    _idle_calls[0] += 1
    h = hook[0]
    if h is None:
        raise RuntimeError("idle() with no fake hardware running: the board would wait forever")
    h()


irq_state = [0]      # disable_irq() depth: take() must not nest or leave IRQs off


def disable_irq():
    irq_state[0] += 1
    return irq_state[0]


def enable_irq(state):
    irq_state[0] -= 1


def freq():
    return 240000000


# reset causes (the ESP32 port's values) and the one reset_cause() reports
PWRON_RESET = 1
HARD_RESET = 2
WDT_RESET = 3
DEEPSLEEP_RESET = 4
SOFT_RESET = 5
cause = [PWRON_RESET]


def reset_cause():
    return cause[0]


class WDT:
    """Records its timeout and every feed (the fake cannot reset anything)."""
    instances = []

    def __init__(self, id=0, timeout=5000):
        self.timeout = timeout
        self.feeds = 0
        WDT.instances.append(self)

    def feed(self):
        self.feeds += 1


class Pin:
    IN = 1
    OUT = 3
    PULL_UP = 1
    PULL_DOWN = 2
    IRQ_FALLING = 4
    IRQ_RISING = 8
    instances = {}

    def __init__(self, id, mode=None, pull=None, value=None, **kw):
        self.id = id
        self.mode = mode
        self.pull = pull
        self._value = value if value is not None else (1 if pull == Pin.PULL_UP else 0)
        self._irq = None
        self._trigger = 0
        Pin.instances[id] = self

    def irq(self, handler=None, trigger=0, **kw):
        self._irq = handler
        self._trigger = trigger

    def drive(self, level):
        """The outside world sets the pin's level: the IRQ runs on an edge it listens for
        (as it would, at once, on a board)."""
        if level == self._value:
            return
        self._value = level
        if self._irq is not None and self._trigger & (Pin.IRQ_RISING if level
                                                      else Pin.IRQ_FALLING):
            self._irq(self)

    def value(self, v=None):
        if v is None:
            return self._value
        self._value = v

    def __repr__(self):
        return "Pin(%r)" % (self.id,)


class ADC:
    ATTN_0DB = 0
    ATTN_2_5DB = 1
    ATTN_6DB = 2
    ATTN_11DB = 3
    WIDTH_12BIT = 3
    instances = {}  # pin id -> ADC

    def __init__(self, pin, atten=None):
        self.pin = pin.id if isinstance(pin, Pin) else pin
        self.attn = atten
        self.bits = None
        self.source = array.array("H", [2048])  # canned raw counts, cycled
        self.index = 0
        ADC.instances[self.pin] = self

    def atten(self, a):
        self.attn = a

    def width(self, w):
        self.bits = w

    def feed(self, codes):
        """Canned raw counts (any iterable), returned in turn by read() and cycled."""
        self.source = array.array("H", codes)
        self.index = 0

    def read(self):
        _add(now, ADC_READ_US, ADC_READ_SUB)
        k = self.index
        v = self.source[k]
        k += 1
        self.index = 0 if k == len(self.source) else k
        return v

    def read_u16(self):
        r = self.read()
        return (r << 4) | (r >> 8)

    def read_uv(self):
        return UV_PER_COUNT * self.read() + UV_OFFSET


class Timer:
    ONE_SHOT = 0
    PERIODIC = 1
    hard_supported = True  # set False to act like a port whose Timer has no hard=
    per_idle = 64          # ticks run per idle() call
    instances = {}

    def __init__(self, id=-1, **kw):
        self.id = id
        self.callback = None
        self.inits = []
        self.skip = 0
        Timer.instances[id] = self
        self._run = self._on_idle  # bound once: idle() allocates nothing
        if kw:
            self.init(**kw)

    def init(self, mode=PERIODIC, freq=None, period=None, callback=None, hard=None):
        if hard is not None and not Timer.hard_supported:
            raise TypeError("unexpected keyword argument 'hard'")
        if freq is None:
            freq = 1000 / period
        self.inits.append({"mode": mode, "freq": freq, "hard": hard})
        self.freq = freq
        self.hard = hard
        self.callback = callback
        self.period_ns = int(1000000000 // freq)
        self.period_us, self.period_sub = divmod(self.period_ns, 1000)
        self.next = [now[0], now[1]]
        _add(self.next, self.period_us, self.period_sub)
        hook[0] = self._run

    def deinit(self):
        self.callback = None
        if hook[0] == self._run:
            hook[0] = None

    def drop(self, n):
        """The next n ticks produce no callback (a soft callback lost in the queue)."""
        self.skip += n

    def fire(self, n):
        for _ in range(n):
            now[0] = self.next[0]
            now[1] = self.next[1]
            _add(self.next, self.period_us, self.period_sub)
            if self.skip:
                self.skip -= 1
                continue
            if self.callback is None:
                return
            self.callback(self)

    def _on_idle(self):
        self.fire(Timer.per_idle)


class _Mem:
    """machine.mem32: register reads and writes recorded per address."""

    def __init__(self):
        self.regs = {}
        self.writes = []
        self.w1c = {}  # address -> bits that writing 1 clears (they read back as 0)

    def __getitem__(self, addr):
        return self.regs.get(addr, 0)

    def __setitem__(self, addr, value):
        self.writes.append((addr, value))
        self.regs[addr] = value & ~self.w1c.get(addr, 0)


mem32 = _Mem()


def reset():
    """Fresh fake hardware (between test cases in one process)."""
    now[0] = now[1] = 0
    hook[0] = None
    Pin.instances = {}
    ADC.instances = {}
    Timer.instances = {}
    Timer.hard_supported = True
    mem32.regs = {}
    mem32.writes = []
    WDT.instances = []
    cause[0] = PWRON_RESET


rtc_set = []         # every datetime tuple given to RTC().datetime(...)


class RTC:
    def datetime(self, value=None):
        if value is not None:
            rtc_set.append(tuple(value))
        return rtc_set[-1] if rtc_set else (2000, 1, 1, 5, 0, 0, 0, 0)
