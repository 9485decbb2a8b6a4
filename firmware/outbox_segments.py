"""Outbox segments: the outbox's records on flash (firmware/outbox.py is the queue over them).

On disk, in the outbox's directory, <n>.seg: append-only segments of records
store.encode(JSON {"seq","kind","body"}): b"BC1", u32 LE length, payload, u32 LE crc32. A
record that would take the newest segment past seg_bytes starts a new one (outbox.py). A
segment is deleted once all of it is acked.

Recovery: a record with a bad magic, length, CRC or JSON starts a damaged region; the scan
resyncs on the next b"BC1" whose record checks out, so intact records after it are kept.
Each region adds one to dropped_corrupt and the segment is rewritten without it (a record
lost whole at a segment's end cannot be seen). A record whose seq is not above the one
before it (a copy left by a merge cut short) is skipped.

Each segment is summarised in RAM (Segments.segs): [num, items, reading bytes, bytes, first,
last, file size]; all but num and file size are over the intact unacked records (first/last:
their seqs).
"""

import json
import os
import struct
from binascii import crc32

import store

MAGIC = store.MAGIC
DROPPABLE = ("reading",)

# A segment's summary (Segments.segs)
NUM, ITEMS, READINGS, BYTES, FIRST, LAST, SIZE = range(7)


def find_magic(f, pos):
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


def records(f, max_record):
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
            pos = find_magic(f, pos + 1)
            if pos < 0:
                return


class Segments:
    """The segment files of one outbox directory and their summaries (`segs`, oldest
    first), held by outbox.Outbox; every floor it passes is at or above its acked seq."""

    def __init__(self, dirpath, max_record):
        self.dir = dirpath
        self.max_record = max_record
        self.segs = []
        self.dropped_corrupt = 0

    def path(self, name):
        return self.dir + "/" + name

    def seg_path(self, num):
        return self.path("%d.seg" % num)

    def scan(self, nums, out=None, drop=(), floor=0):
        """Summarise the records of segments nums, in order, above floor and the one
        before (so copies left by a merge cut short are skipped); copy them to out unless
        their kind is in drop. Returns (summary, highest seq seen, damaged regions, dropped)."""
        st = [nums[-1], 0, 0, 0, 0, 0, 0]
        top = bad = dropped = 0
        for num in nums:
            with open(self.seg_path(num), "rb") as f:
                for item, payload in records(f, self.max_record):
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
                    self.count(st, item["kind"], seq, len(payload) + 11)
        return st, top, bad, dropped

    def count(self, st, kind, seq, size):
        if not st[ITEMS]:
            st[FIRST] = seq
        st[ITEMS] += 1
        if kind in DROPPABLE:
            st[READINGS] += size
        st[BYTES] += size
        st[LAST] = seq

    def rewrite(self, nums, drop=(), floor=0):
        """Write-then-rename what scan keeps of segments nums into the last of them, then
        remove the others."""
        path = self.seg_path(nums[-1])
        with open(path + ".tmp", "wb") as out:
            st, top, bad, dropped = self.scan(nums, out, drop, floor)
        if st[ITEMS]:
            os.rename(path + ".tmp", path)
            st[SIZE] = st[BYTES]
        else:
            os.remove(path + ".tmp")
            os.remove(path)
        for num in nums[:-1]:
            os.remove(self.seg_path(num))
        return st, dropped

    def load(self, num, floor):
        """Add segment num's summary to segs (rewritten without its damaged regions, removed
        when nothing above floor is left); returns the highest seq seen in it."""
        st, top, bad, _ = self.scan([num], floor=floor)
        self.dropped_corrupt += bad
        if not st[ITEMS]:
            os.remove(self.seg_path(num))
        elif bad:
            self.segs.append(self.rewrite([num], floor=floor)[0])
        else:
            st[SIZE] = os.stat(self.seg_path(num))[6]
            self.segs.append(st)
        return top
