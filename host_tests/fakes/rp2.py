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

# PIO0 (boards/rp2_mcp3208.py): a running state machine converts one command word from its
# TX FIFO into one RX FIFO word per conversion, so the data channel paced by its RX DREQ
# moves the canned fifo_source as the ADC's would, and the command channel paced by its TX
# DREQ moves as many words from its (read-ring) table, the last TX_LOG of them kept.
PIO0_BASE = 0x50200000
TXF0 = PIO0_BASE + 0x010
RXF0 = PIO0_BASE + 0x020
TX_LOG = 64
_TXF = [TXF0 + 4 * k for k in range(4)]   # made once: above 2**30 they are heap objects on
_RXF = [RXF0 + 4 * k for k in range(4)]   # a 32-bit port, and the fake must not allocate
tx_log = array.array("I", [0] * TX_LOG)
tx_count = [0]
tx_logging = [True]   # off while a test counts allocation (reading a word may allocate)
state_machines = {}

channels = {}
fifo_source = [array.array("H", [2048])]
_fifo_index = [0]
halves_per_idle = [1]


def feed_fifo(codes):
    fifo_source[0] = array.array("H", codes)
    _fifo_index[0] = 0


def reset():
    channels.clear()
    state_machines.clear()
    tx_count[0] = 0
    tx_logging[0] = True
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
        self._rpos = 0
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
            self._rpos = 0
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
        treq = (c >> 15) & 0x3F
        ok = treq == DREQ_ADC and self.read == ADC_FIFO
        if 4 <= treq < 8:
            ok = (treq - 4) in state_machines and self.read == _RXF[treq - 4]
        if not (c & 1) or not ok:
            raise RuntimeError("fake DMA: channel %d is not an enabled ADC or PIO RX FIFO "
                               "reader" % (self.channel,))
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


    def _run_tx(self):
        """A command channel: this transfer's words from its read buffer (wrapping in its
        read ring) into the state machine's TX FIFO, the last TX_LOG logged."""
        c = self.ctrl
        treq = (c >> 15) & 0x3F
        if (not (c & 1) or treq >= 4 or self.write != _TXF[treq] or (c >> 10) & 1
                or not (c >> 4) & 1 or (c >> 5) & 1 or (c >> 2) & 3 != 2):
            raise RuntimeError("fake DMA: channel %d is not a 32-bit PIO TX feeder with a read "
                               "ring" % (self.channel,))
        ring = (1 << ((c >> 6) & 0xF)) // 4  # words
        src = self.read
        if ring > len(src):
            raise RuntimeError("fake DMA: read ring larger than the table")
        p = self._rpos
        k = tx_count[0]
        if tx_logging[0]:
            for _ in range(self._reload):
                tx_log[k % TX_LOG] = src[p]
                k += 1
                p += 1
                if p == ring:
                    p = 0
        else:  # a command word above 2**30 is a heap object on a 32-bit port: not read
            k += self._reload
            p = (p + self._reload) % ring
        tx_count[0] = k
        self._rpos = p
        self._active = False
        nxt = (c >> 11) & 0xF
        if nxt != self.channel:
            channels[nxt]._active = True


class PIO:
    OUT_LOW = 0
    OUT_HIGH = 1
    IN_LOW = 0
    IN_HIGH = 1
    SHIFT_LEFT = 0
    SHIFT_RIGHT = 1


def asm_pio(**kw):
    """A PIO program: the settings recorded, the body (the rp2 assembler's) not run."""
    def wrap(fn):
        return {"asm_pio": kw, "name": fn.__name__}
    return wrap


class StateMachine:
    def __init__(self, id, prog=None, freq=None, **kw):
        if prog is None or "asm_pio" not in prog:
            raise ValueError("fake StateMachine: not an asm_pio program")
        self.id = id
        self.prog = prog
        self.freq = freq
        self.kw = kw
        self._active = False

    def active(self, value=None):
        if value is None:
            return self._active
        self._active = bool(value)
        if value:
            state_machines[self.id] = self
            machine.hook[0] = _step
        else:
            state_machines.pop(self.id, None)


def _step_pio():
    for _ in range(halves_per_idle[0]):
        rx = tx = None
        ch = 0
        while ch < 12:
            d = channels.get(ch)
            if d is not None and d._active:
                if (d.ctrl >> 15) & 0x3F < 4:
                    tx = d
                else:
                    rx = d
            ch += 1
        if rx is None or tx is None:
            raise RuntimeError("fake DMA: the state machine runs without its command and "
                               "data channels active")
        tx._run_tx()
        rx._run()


def _step():
    if state_machines:
        _step_pio()
        return
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
