"""Outbox: the meter's durable queue of items for the head-end, oldest first.

On disk, in one directory:
  <n>.seg  append-only segments of records, each at most seg_bytes, scanned and recovered
           as firmware/outbox_segments.py says (a damaged record is dropped, the intact
           ones after it kept, each damaged region counted in dropped_corrupt).
  seq      store record (write-then-rename), a reserved ceiling: every seq handed out is
           below it, it is raised by RESERVE before it is reached, and each start continues
           from it. So a seq is never reused even if the newest records were lost, at the cost
           of a gap of up to RESERVE seqs per restart.
  acked    store record (write-then-rename): the highest seq acked; never sent again.
  epoch    store record: 16 random hex digits naming this outbox's life (docs/protocol.md).
           A wiped or new outbox starts a new epoch at seq 1, so the head-end, which keys
           items by (device, epoch, seq), keeps the new items apart from the old ones.

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
from binascii import hexlify

import store
from outbox_segments import (
    BYTES,
    DROPPABLE,
    FIRST,
    ITEMS,
    LAST,
    NUM,
    READINGS,
    SIZE,
    Segments,
    records,
)

RESERVE = 32


class OutboxFull(Exception):
    pass


def _random_hex():
    try:
        return hexlify(os.urandom(8)).decode()
    except (AttributeError, NotImplementedError, OSError):  # a port without urandom
        import random

        return "%08x%08x" % (random.getrandbits(32), random.getrandbits(32))


class Outbox:
    def __init__(self, dirpath, max_bytes=64 * 1024, max_items=None, seg_bytes=8192,
                 max_record=4096, hold=1, hold_bytes=4096):
        self.files = Segments(dirpath, max_record)
        self.segs = self.files.segs     # the same list: Segments fills it, the queue trims it
        self.max_record = max_record
        self.hold = hold
        # RAM is the board's scarcest resource: however many readings `hold` allows (a short
        # report_s makes it large), no more than hold_bytes of them wait in RAM
        self.hold_bytes = hold_bytes
        self._held = []             # [(seq, kind, None, payload)]: readings not on flash yet
        self.appends = 0            # segment appends (each one write of one or more records)
        self.max_bytes = max_bytes
        self.max_items = max_items
        self.seg_bytes = seg_bytes
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
                os.remove(self.files.path(name))
            elif name.endswith(".seg"):
                nums.append(int(name[:-4]))
        nums.sort()
        self._num = nums[-1] if nums else 0
        top = self.acked
        for num in nums:
            top = max(top, self.files.load(num, top))
        nxt = top + 1
        if hi is not None:
            nxt = max(nxt, hi)
        elif self.damaged:
            nxt += RESERVE          # the ceiling is unknown: leave room for lost records
        self.next_seq = nxt
        self.epoch = self._epoch()
        self._reserve()

    @property
    def dropped_corrupt(self):
        """Damaged regions found on flash (each one dropped, see outbox_segments)."""
        return self.files.dropped_corrupt

    def _epoch(self):
        path = self.files.path("epoch")
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

    def _meta(self, name):
        try:
            data = store.read_record(self.files.path(name))
            return None if data is None else int(data)
        except ValueError:          # store.CorruptRecord is a ValueError
            self.damaged += 1
            return None

    def _reserve(self):
        self._hi = self.next_seq + RESERVE
        store.write_record(self.files.path("seq"), str(self._hi).encode())

    def depth(self):
        return sum(st[ITEMS] for st in self.segs) + len(self._held)

    def bytes_used(self):
        return sum(st[BYTES] for st in self.segs)

    def _make_room(self, size):
        segs = self.segs
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
            st, dropped = self.files.rewrite([x[NUM] for x in segs[j:i + 1]], DROPPABLE,
                                             max(floor, self.acked))
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
        """Append records (seq order, above everything on flash): one write per segment.
        A full heap (MemoryError) or a failed write part way leaves the list of segments
        as it was, so nothing is listed that has no file (a listed segment without its file
        made every later peek raise ENOENT: no exchange went out again) and the caller may
        write the same records again (a record on flash twice is read once: peek_raw takes
        only seqs above the last)."""
        self._make_room(sum(len(r[3]) + 11 for r in recs))
        n = len(self.segs)
        last = list(self.segs[-1]) if n else None
        num = self._num
        try:
            encoded = [store.encode(r[3]) for r in recs]    # the allocations, before any change
            self._write_encoded(recs, encoded)
        except BaseException:
            for st in self.segs[n:]:        # new segments this write began: not listed
                try:
                    os.remove(self.files.seg_path(st[NUM]))
                except OSError:
                    pass
            del self.segs[n:]
            if last is not None:
                self.segs[-1][:] = last
            self._num = num
            raise

    def _write_encoded(self, recs, encoded):
        buf = []
        st = self.segs[-1] if self.segs else None
        for i in range(len(recs)):
            seq, kind, _, payload = recs[i]
            size = len(payload) + 11
            if st is None or (st[SIZE] and st[SIZE] + size > self.seg_bytes):
                self._append_file(st, buf)
                buf = []
                self._num += 1
                st = [self._num, 0, 0, 0, 0, 0, 0]
                self.segs.append(st)
            buf.append(encoded[i])
            self.files.count(st, kind, seq, size)
            st[SIZE] += size
        self._append_file(st, buf)

    def _append_file(self, st, buf):
        if buf:
            with open(self.files.seg_path(st[NUM]), "ab") as f:
                for b in buf:       # piece by piece: no block the size of the segment
                    f.write(b)
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
        return [json.loads(p) for p in self.peek_raw(limit_items, limit_bytes)]

    def peek_raw(self, limit_items=16, limit_bytes=4096):
        """peek() as the records' JSON, the bytes stored (an exchange splices them into its
        request: enc_json.parts)."""
        out = []
        used = 0
        prev = self.acked
        for st in self.segs:
            with open(self.files.seg_path(st[NUM]), "rb") as f:
                for item, payload in records(f, self.max_record):
                    if item is None or item["seq"] <= prev:
                        continue
                    prev = item["seq"]
                    if len(out) >= limit_items or (out and used + len(payload) > limit_bytes):
                        return out
                    out.append(payload)
                    used += len(payload)
        for seq, _, _, payload in self._held:
            if seq <= prev:
                continue
            if len(out) >= limit_items or (out and used + len(payload) > limit_bytes):
                break
            out.append(payload)
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
        if not (self.segs and self.segs[0][FIRST] <= seq):
            return                  # nothing on flash was acked: `acked` stays as it is
        store.write_record(self.files.path("acked"), str(seq).encode())
        while self.segs and self.segs[0][LAST] <= seq:
            os.remove(self.files.seg_path(self.segs.pop(0)[NUM]))
        if self.segs and self.segs[0][FIRST] <= seq:
            size = self.segs[0][SIZE]
            self.segs[0] = self.files.scan([self.segs[0][NUM]], floor=seq)[0]
            self.segs[0][SIZE] = size
