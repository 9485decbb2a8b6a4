# Fake `rp2` for desktop tests: DMA channels that record their set-up and a simulated ADC
# FIFO that moves data when machine.idle() runs.
#
# pack_ctrl()/unpack_ctrl() use the RP2040 CHx_CTRL_TRIG bit layout. The simulation: while
# the ADC is free-running (machine.mem32[ADC_CS] has EN and START_MANY) and its FIFO has DREQ
# enabled, each idle() lets the one active channel paced by DREQ_ADC run to completion: it
# writes `count` halfwords from the canned interleaved FIFO data (`fifo_source`, cycled) into
# its write buffer (wrapping as its ring does), raises its interrupt unless irq_quiet, and
# triggers its chain_to channel. No allocation per step.

import array

import machine

DREQ_ADC = 36
ADC_BASE = 0x4004C000
ADC_CS = ADC_BASE
ADC_FCS = ADC_BASE + 0x08
ADC_FIFO = ADC_BASE + 0x0C
ADC_DIV = ADC_BASE + 0x10

_FIELDS = (  # name, shift, width (RP2040 datasheet, DMA CHx_CTRL_TRIG)
    ("enable", 0, 1), ("high_pri", 1, 1), ("size", 2, 2), ("inc_read", 4, 1),
    ("inc_write", 5, 1), ("ring_size", 6, 4), ("ring_sel", 10, 1), ("chain_to", 11, 4),
    ("treq_sel", 15, 6), ("irq_quiet", 21, 1), ("bswap", 22, 1), ("sniff_en", 23, 1),
    ("busy", 24, 1), ("write_err", 29, 1), ("read_err", 30, 1), ("ahb_err", 31, 1),
)

channels = {}
fifo_source = [array.array("H", [2048])]
_fifo_index = [0]
halves_per_idle = [1]


def feed_fifo(codes):
    fifo_source[0] = array.array("H", codes)
    _fifo_index[0] = 0


def reset():
    channels.clear()
    fifo_source[0] = array.array("H", [2048])
    _fifo_index[0] = 0
    halves_per_idle[0] = 1


class DMA:
    def __init__(self):
        ch = 0
        while ch in channels:
            ch += 1
        if ch > 11:
            raise OSError("no free DMA channel")
        self.channel = ch
        channels[ch] = self
        self.read = 0
        self.write = 0
        self.count = 0
        self.ctrl = self.pack_ctrl()
        self.configs = []
        self.handler = None
        self.hard = None
        self._active = False
        self._buf = None
        self._pos = 0
        self._reload = 0
        self.closed = False
        machine.hook[0] = _step
        machine.mem32.w1c[ADC_FCS] = 0xC00  # FCS.OVER, FCS.UNDER

    def pack_ctrl(self, default=None, **kw):
        if default is None:
            vals = {"enable": 1, "size": 2, "inc_read": 1, "inc_write": 1,
                    "chain_to": self.channel, "treq_sel": 0x3F, "irq_quiet": 1}
        else:
            vals = DMA.unpack_ctrl(default)
        for k, v in kw.items():
            if k not in vals and k not in [f[0] for f in _FIELDS]:
                raise TypeError("unknown ctrl field %r" % (k,))
            vals[k] = int(v)
        out = 0
        for name, shift, width in _FIELDS:
            v = vals.get(name, 0)
            if v >> width:
                raise ValueError("%s=%d does not fit %d bits" % (name, v, width))
            out |= v << shift
        return out

    @staticmethod
    def unpack_ctrl(value):
        return {name: (value >> shift) & ((1 << width) - 1) for name, shift, width in _FIELDS}

    def config(self, read=None, write=None, count=None, ctrl=None, trigger=False):
        self.configs.append({"read": read, "write": write, "count": count, "ctrl": ctrl,
                             "trigger": trigger})
        if read is not None:
            self.read = read
        if write is not None:
            self.write = write
            self._buf = write
            self._pos = 0
        if count is not None:
            self.count = self._reload = count
        if ctrl is not None:
            self.ctrl = ctrl
        if trigger:
            self._active = True

    def irq(self, handler=None, hard=False):
        self.handler = handler
        self.hard = hard

    def active(self, value=None):
        if value is None:
            return self._active
        self._active = bool(value)

    def close(self):
        self._active = False
        self.closed = True
        channels.pop(self.channel, None)

    def _run(self):
        """Run this channel's whole transfer from the fake FIFO, as the hardware would."""
        c = self.ctrl
        if not (c & 1) or ((c >> 15) & 0x3F) != DREQ_ADC or self.read != ADC_FIFO:
            raise RuntimeError("fake DMA: channel %d is not an enabled ADC FIFO reader"
                               % (self.channel,))
        buf = self._buf
        n = len(buf)
        src = fifo_source[0]
        m = len(src)
        j = _fifo_index[0]
        p = self._pos
        for _ in range(self._reload):
            buf[p] = src[j]
            j += 1
            if j == m:
                j = 0
            p += 1
            if p == n:
                p = 0  # the write ring wraps (a ring exactly the buffer's size)
        _fifo_index[0] = j
        self._pos = p
        self._active = False
        if not (c >> 21) & 1 and self.handler is not None:
            self.handler(self)
        nxt = (c >> 11) & 0xF
        if nxt != self.channel:
            channels[nxt]._active = True


def _step():
    cs = machine.mem32[ADC_CS]
    fcs = machine.mem32[ADC_FCS]
    if not (cs & 1 and cs & 8 and fcs & 1 and fcs & 8):
        raise RuntimeError("fake ADC is not free-running with DREQ on (CS=%x FCS=%x)" % (cs, fcs))
    for _ in range(halves_per_idle[0]):
        ch = 0
        while ch < 12:  # the active channel (a dict lookup by int key: no allocation)
            d = channels.get(ch)
            if d is not None and d._active:
                break
            ch += 1
        if ch == 12:
            raise RuntimeError("fake DMA: ADC running but no channel active")
        channels[ch]._run()
