"""Outbox: the meter's durable queue of items for the head-end, oldest first.

On disk, in one directory:
  <n>.seg  append-only segments of records store.encode(JSON {"seq","kind","body"}): b"BC1",
           u32 LE length, payload, u32 LE crc32. A record that would take the newest segment
           past seg_bytes starts a new one. A segment is deleted once all of it is acked.
  seq      store record (write-then-rename), a reserved ceiling: every seq handed out is
           below it, it is raised by RESERVE before it is reached, and each start continues
           from it. So a seq is never reused even if the newest records were lost, at the cost
           of a gap of up to RESERVE seqs per restart.
  acked    store record (write-then-rename): the highest seq acked; never sent again.
  epoch    store record: 16 random hex digits naming this outbox's life (docs/protocol.md).
           A wiped or new outbox starts a new epoch at seq 1, so the head-end, which keys
           items by (device, epoch, seq), keeps the new items apart from the old ones.

Recovery: a record with a bad magic, length, CRC or JSON starts a damaged region; the scan
resyncs on the next b"BC1" whose record checks out, so intact records after it are kept.
Each region adds one to dropped_corrupt and the segment is rewritten without it (a record
lost whole at a segment's end cannot be seen). A record whose seq is not above the one
before it (a copy left by a merge cut short) is skipped.

Overflow policy: when an append would take the unacked records past max_bytes or max_items,
readings are dropped, oldest first: the oldest segment holding readings is rewritten without
them (up to a segment's worth at once), merged into the segment before when both then fit
in one so thinned segments do not pile up as small files, and counted in dropped_overflow.
Other kinds (result, event, event_start, presence, send, notice) are never dropped: when only
they remain and the item still does not fit, append raises OutboxFull and stores nothing.
The app reports (and may reset) dropped_overflow and dropped_corrupt in a notice. Flash use
stays below about max_bytes + 2 * seg_bytes (a partly acked segment, a rewrite's copy).

Held readings (flash wear, docs/reliability.md "Flash life"): with hold > 1, a reading gets its
seq at once and is sent like any item, but waits in RAM; `hold` of them, any other kind of
item, or flush() (the app calls it with every register save and at a clean stop) write all
held ones in one append. A held reading acked before then is never written, and an ack that
covers only held readings writes no `acked` either, so a meter in touch with its head-end
writes almost nothing for its readings. The price: a power cut loses the held readings the
head-end has not stored (at most `hold`, all newer than anything on flash; their seqs are a
gap, which the head-end's ack skips).
"""

import json
import os
import struct
from binascii import crc32, hexlify

import store

MAGIC = store.MAGIC
DROPPABLE = ("reading",)
RESERVE = 32

# A segment's summary: [num, items, reading bytes, bytes, first, last, file size]; all but
# num and file size are over the intact unacked records (first/last: their seqs).
NUM, ITEMS, READINGS, BYTES, FIRST, LAST, SIZE = range(7)


class OutboxFull(Exception):
    pass


def _random_hex():
    try:
        return hexlify(os.urandom(8)).decode()
    except (AttributeError, NotImplementedError, OSError):  # a port without urandom
        import random

        return "%08x%08x" % (random.getrandbits(32), random.getrandbits(32))


def _find(f, pos):
    """Offset of the next MAGIC at or after pos, -1 if none."""
    while True:
        f.seek(pos)
        chunk = f.read(256)
        if len(chunk) < 3:
            return -1
        i = chunk.find(MAGIC)
        if i >= 0:
            return pos + i
        pos += len(chunk) - 2


def _records(f, max_record):
    """Yield (item, payload) for each intact record, (None, None) once per damaged region."""
    pos = 0
    bad = False
    while True:
        f.seek(pos)
        hdr = f.read(7)
        if not hdr:
            return
        item = None
        if len(hdr) == 7 and hdr[:3] == MAGIC:
            n = struct.unpack("<I", hdr[3:])[0]
            if n <= max_record:
                data = f.read(n + 4)
                if len(data) == n + 4 and struct.pack("<I", crc32(data[:n])) == data[n:]:
                    payload = data[:n]
                    try:
                        item = json.loads(payload)
                        if not isinstance(item["seq"], int) or "kind" not in item:
                            item = None
                    except (ValueError, TypeError, KeyError):   # not a dict with a seq
                        item = None
        if item is not None:
            yield item, payload
            pos += n + 11
            bad = False
        else:
            if not bad:
                bad = True
                yield None, None
            pos = _find(f, pos + 1)
            if pos < 0:
                return


class Outbox:
    def __init__(self, dirpath, max_bytes=64 * 1024, max_items=None, seg_bytes=8192,
                 max_record=4096, hold=1, hold_bytes=4096):
        self.dir = dirpath
        self.hold = hold
        # RAM is the board's scarcest resource: however many readings `hold` allows (a short
        # report_s makes it large), no more than hold_bytes of them wait in RAM
        self.hold_bytes = hold_bytes
        self._held = []             # [(seq, kind, None, payload)]: readings not on flash yet
        self.appends = 0            # segment appends (each one write of one or more records)
        self.max_bytes = max_bytes
        self.max_items = max_items
        self.seg_bytes = seg_bytes
        self.max_record = max_record
        self.dropped_corrupt = 0
        self.refused = 0
        self.dropped_overflow = 0
        self.damaged = 0            # seq/acked files found damaged (and ignored)
        try:
            os.mkdir(dirpath)
        except OSError:
            pass
        self.acked = self._meta("acked") or 0
        hi = self._meta("seq")
        nums = []
        for name in os.listdir(dirpath):
            if name.endswith(".tmp"):
                os.remove(self._path(name))
            elif name.endswith(".seg"):
                nums.append(int(name[:-4]))
        nums.sort()
        self._num = nums[-1] if nums else 0
        self._segs = []
        top = self.acked
        for num in nums:
            top = max(top, self._load(num, top))
        nxt = top + 1
        if hi is not None:
            nxt = max(nxt, hi)
        elif self.damaged:
            nxt += RESERVE          # the ceiling is unknown: leave room for lost records
        self.next_seq = nxt
        self.epoch = self._epoch()
        self._reserve()

    def _epoch(self):
        path = self._path("epoch")
        try:
            data = store.read_record(path)
        except ValueError:          # damaged: a new life (the head-end records it)
            self.damaged += 1
            data = None
        if data is not None and len(data) == 16:
            try:
                int(data, 16)
                return data.decode()
            except ValueError:
                pass
        epoch = _random_hex()
        store.write_record(path, epoch.encode())
        return epoch

    def _path(self, name):
        return self.dir + "/" + name

    def _seg(self, num):
        return self._path("%d.seg" % num)

    def _meta(self, name):
        try:
            data = store.read_record(self._path(name))
            return None if data is None else int(data)
        except ValueError:          # store.CorruptRecord is a ValueError
            self.damaged += 1
            return None

    def _reserve(self):
        self._hi = self.next_seq + RESERVE
        store.write_record(self._path("seq"), str(self._hi).encode())

    def _scan(self, nums, out=None, drop=(), floor=0):
        """Summarise the records of segments nums, in order, above acked, floor and the one
        before (so copies left by a merge cut short are skipped); copy them to out unless
        their kind is in drop. Returns (summary, highest seq seen, damaged regions, dropped)."""
        floor = max(floor, self.acked)
        st = [nums[-1], 0, 0, 0, 0, 0, 0]
        top = bad = dropped = 0
        for num in nums:
            with open(self._seg(num), "rb") as f:
                for item, payload in _records(f, self.max_record):
                    if item is None:
                        bad += 1
                        continue
                    seq = item["seq"]
                    top = max(top, seq)
                    if seq <= floor:
                        continue
                    floor = seq
                    if item["kind"] in drop:
                        dropped += 1
                        continue
                    if out is not None:
                        out.write(store.encode(payload))
                    self._count(st, item["kind"], seq, len(payload) + 11)
        return st, top, bad, dropped

    def _count(self, st, kind, seq, size):
        if not st[ITEMS]:
            st[FIRST] = seq
        st[ITEMS] += 1
        if kind in DROPPABLE:
            st[READINGS] += size
        st[BYTES] += size
        st[LAST] = seq

    def _rewrite(self, nums, drop=(), floor=0):
        """Write-then-rename what _scan keeps of segments nums into the last of them, then
        remove the others."""
        path = self._seg(nums[-1])
        with open(path + ".tmp", "wb") as out:
            st, top, bad, dropped = self._scan(nums, out, drop, floor)
        if st[ITEMS]:
            os.rename(path + ".tmp", path)
            st[SIZE] = st[BYTES]
        else:
            os.remove(path + ".tmp")
            os.remove(path)
        for num in nums[:-1]:
            os.remove(self._seg(num))
        return st, dropped

    def _load(self, num, floor):
        st, top, bad, _ = self._scan([num], floor=floor)
        self.dropped_corrupt += bad
        if not st[ITEMS]:
            os.remove(self._seg(num))
        elif bad:
            self._segs.append(self._rewrite([num], floor=floor)[0])
        else:
            st[SIZE] = os.stat(self._seg(num))[6]
            self._segs.append(st)
        return top

    def depth(self):
        return sum(st[ITEMS] for st in self._segs) + len(self._held)

    def bytes_used(self):
        return sum(st[BYTES] for st in self._segs)

    def _make_room(self, size):
        segs = self._segs
        while (self.bytes_used() + size > self.max_bytes
               or (self.max_items is not None and self.depth() >= self.max_items)):
            for i in range(len(segs)):
                if segs[i][READINGS]:
                    break
            else:
                raise OutboxFull("outbox full: %d items, %d bytes, none droppable"
                                 % (self.depth(), self.bytes_used()))
            j = i           # thin segment i; merge it into the one before if both then fit
            if i and segs[i - 1][BYTES] + segs[i][BYTES] - segs[i][READINGS] <= self.seg_bytes:
                j = i - 1
            floor = segs[j - 1][LAST] if j else 0
            st, dropped = self._rewrite([x[NUM] for x in segs[j:i + 1]], DROPPABLE, floor)
            self.dropped_overflow += dropped
            for _ in range(i + 1 - j):
                segs.pop(j)
            if st[ITEMS]:
                segs.insert(j, st)

    def append(self, kind, body):
        """Store an item (a reading may be held, see the module's doc); returns its seq.
        Raises OutboxFull, or ValueError if the record is larger than max_record."""
        seq = self.next_seq
        payload = json.dumps({"seq": seq, "kind": kind, "body": body}, separators=(",", ":"))
        payload = payload.encode()
        size = len(payload) + 11
        if size > self.max_record:
            raise ValueError("outbox record too large: %d bytes" % size)
        if kind in DROPPABLE and self.hold > 1:
            # held as its JSON alone: a parsed reading costs the heap about three times that
            self._held.append((seq, kind, None, payload))
            self._next(seq)
            if (len(self._held) >= self.hold
                    or sum(len(r[3]) for r in self._held) >= self.hold_bytes):
                try:
                    self.flush()
                except MemoryError:     # still held: the next append or a stop writes them
                    pass
            return seq
        self._write(self._held + [(seq, kind, None, payload)])
        self._held = []
        self._next(seq)
        return seq

    def _next(self, seq):
        if seq >= self._hi:         # the ceiling on flash stays above every seq handed out
            self._reserve()
        self.next_seq = seq + 1

    def flush(self):
        """Write the held readings in one append (nothing to do when none are held)."""
        held, self._held = self._held, []
        if held:
            try:
                self._write(held)
            except OutboxFull:      # full of undroppable items: these readings go
                self.dropped_overflow += len(held)
            except MemoryError:     # a full heap loses nothing: they stay held
                self._held = held + self._held
                raise

    def _write(self, recs):
        """Append records (seq order, above everything on flash): one write per segment."""
        self._make_room(sum(len(r[3]) + 11 for r in recs))
        buf = []
        st = self._segs[-1] if self._segs else None
        for seq, kind, _, payload in recs:
            size = len(payload) + 11
            if st is None or (st[SIZE] and st[SIZE] + size > self.seg_bytes):
                self._append_file(st, buf)
                buf = []
                self._num += 1
                st = [self._num, 0, 0, 0, 0, 0, 0]
                self._segs.append(st)
            buf.append(store.encode(payload))
            self._count(st, kind, seq, size)
            st[SIZE] += size
        self._append_file(st, buf)

    def _append_file(self, st, buf):
        if buf:
            with open(self._seg(st[NUM]), "ab") as f:
                f.write(b"".join(buf))
                f.flush()
            self.appends += 1

    def offer(self, kind, body):
        """append() for callers that must not fail (metering, ops): the seq, or None when the
        outbox is full of undroppable items; refusals are counted in `refused`."""
        try:
            return self.append(kind, body)
        except OutboxFull:
            self.refused += 1
            return None

    def peek(self, limit_items=16, limit_bytes=4096):
        """Unacked items, oldest first, as dicts {"seq","kind","body"}: at most limit_items and
        limit_bytes of JSON, but always the oldest one if there is any."""
        out = []
        used = 0
        prev = self.acked
        for st in self._segs:
            with open(self._seg(st[NUM]), "rb") as f:
                for item, payload in _records(f, self.max_record):
                    if item is None or item["seq"] <= prev:
                        continue
                    prev = item["seq"]
                    if len(out) >= limit_items or (out and used + len(payload) > limit_bytes):
                        return out
                    out.append(item)
                    used += len(payload)
        for seq, _, _, payload in self._held:
            if seq <= prev:
                continue
            if len(out) >= limit_items or (out and used + len(payload) > limit_bytes):
                break
            out.append(json.loads(payload))
            used += len(payload)
        return out

    def ack(self, seq):
        """Delete every item with a seq <= seq (the head-end stored them)."""
        seq = min(seq, self.next_seq - 1)
        if seq <= self.acked:
            return
        self.acked = seq
        while self._held and self._held[0][0] <= seq:
            self._held.pop(0)       # stored by the head-end: never written
        if not (self._segs and self._segs[0][FIRST] <= seq):
            return                  # nothing on flash was acked: `acked` stays as it is
        store.write_record(self._path("acked"), str(seq).encode())
        while self._segs and self._segs[0][LAST] <= seq:
            os.remove(self._seg(self._segs.pop(0)[NUM]))
        if self._segs and self._segs[0][FIRST] <= seq:
            size = self._segs[0][SIZE]
            self._segs[0] = self._scan([self._segs[0][NUM]])[0]
            self._segs[0][SIZE] = size
