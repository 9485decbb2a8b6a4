# Waveform capture (docs/capture.md): a ring of the raw V and I samples, frozen when a power-
# quality event starts, kept `post` cycles more, then uploaded in chunks through the outbox
# (one chunk a reading, so metering never waits) as `waveform` items; the head-end stores
# them with the event and writes COMTRADE (backchannel waveform).
#
# RAM: two array('H') of (pre + post) cycles of samples, 4 bytes a sample pair, allocated
# once; a capture that needs more than MAX_BYTES is refused when configured. The copy into
# the ring is viper code on the board: no allocation per sample.

import array
from binascii import b2a_base64

from mpshim import const, micropython, ptr16

MAX_BYTES = 32768          # the ring's RAM at most
CHUNK = const(256)         # sample pairs an item carries (1 KB raw, 1.4 KB in base64)
IDLE, POST, FROZEN = 0, 1, 2


@micropython.viper
def _ring_copy(dst: ptr16, src: ptr16, pos: int, size: int, n: int) -> int:
    """Copy src[0:n] into the ring dst of `size` from pos; returns the next pos."""
    j = 0
    while j < n:
        dst[pos] = src[j]
        pos += 1
        if pos >= size:
            pos = 0
        j += 1
    return pos


def ring_bytes(cfg, spc):
    return 4 * (cfg["capture_pre_cycles"] + cfg["capture_post_cycles"]) * int(spc + 0.999)


def check(cfg, spc):
    """ValueError with the reason when the capture cannot fit (checked at configuration)."""
    need = ring_bytes(cfg, spc)
    if cfg["capture_pre_cycles"] + cfg["capture_post_cycles"] < 1:
        raise ValueError("capture needs at least one pre- or post-trigger cycle")
    if need > MAX_BYTES:
        raise ValueError("a capture of %d + %d cycles at %d samples per cycle needs %d bytes "
                         "of RAM; at most %d: capture fewer cycles"
                         % (cfg["capture_pre_cycles"], cfg["capture_post_cycles"],
                            int(spc + 0.999), need, MAX_BYTES))


class Capture:
    def __init__(self, cfg, board, spc, rate):
        """rate: the board's sample rate as (num, den) ints (Hz = num / den)."""
        check(cfg, spc)
        spc = int(spc + 0.999)
        self.size = (cfg["capture_pre_cycles"] + cfg["capture_post_cycles"]) * spc
        self.post = cfg["capture_post_cycles"] * spc
        self.v = array.array("H", bytes(2 * self.size))
        self.i = array.array("H", bytes(2 * self.size))
        self.pos = 0              # where the next sample goes
        self.filled = 0           # samples in the ring (up to size)
        self.after = 0            # samples since the trigger
        self.state = IDLE
        self.head = None          # what every chunk of this capture says about it
        self.next_chunk = 0
        self.rate = [rate[0], rate[1]]
        self.frequency = cfg["frequency"]
        self.board = board

    def feed(self, vb, ib, n):
        """A block of samples (after the metering has had them)."""
        if self.state == FROZEN:
            return
        p = self.pos
        self.pos = _ring_copy(self.v, vb, p, self.size, n)
        _ring_copy(self.i, ib, p, self.size, n)
        if self.filled < self.size:
            self.filled = min(self.size, self.filled + n)
        if self.state == POST:
            self.after += n
            if self.after >= self.post:
                self.state = FROZEN

    def trigger(self, event):
        """An event started (its record: kind, start_s, start_ms): keep `post` cycles more,
        then freeze. One capture at a time: an event during one is not captured."""
        if self.state != IDLE:
            return False
        self.state = POST
        self.after = 0
        b = self.board
        self.head = {"event": "%d.%03d" % (event["start_s"], event.get("start_ms", 0)),
                     "kind": event.get("kind"), "rate": self.rate, "frequency": self.frequency,
                     "v_gain": b.v_gain, "i_gain": b.i_gain, "v_mid": b.v_mid,
                     "i_mid": b.i_mid}
        return True

    def chunk(self):
        """The next `waveform` item body of a frozen capture, or None. The last one ends it
        and the ring runs again."""
        if self.state != FROZEN:
            return None
        n = min(self.filled, self.size)
        chunks = (n + CHUNK - 1) // CHUNK
        k = self.next_chunk
        first = (self.pos - n) % self.size      # the oldest sample kept
        start = k * CHUNK
        count = min(CHUNK, n - start)
        v = array.array("H", bytes(2 * count))
        i = array.array("H", bytes(2 * count))
        for j in range(count):
            p = (first + start + j) % self.size
            v[j] = self.v[p]
            i[j] = self.i[p]
        body = dict(self.head)
        body.update({"chunk": k, "chunks": chunks, "samples": n, "first": start,
                     "pre": max(0, n - self.after), "v": _b64(v), "i": _b64(i)})
        self.next_chunk += 1
        if self.next_chunk >= chunks:
            self.state, self.next_chunk, self.filled, self.head = IDLE, 0, 0, None
        return body

    def check(self, reading):
        """An App watcher: one chunk of a frozen capture a reading, to the outbox."""
        body = self.chunk()
        if body is None:
            return []
        body["type"] = "waveform"
        return [body]


def _b64(a):
    """Little-endian bytes of an array('H') in base64 (every port is little-endian)."""
    return b2a_base64(bytes(a)).decode().strip()
