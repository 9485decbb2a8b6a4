# Surviving a full heap (docs/performance.md, "Soaks under the cap"). A board's heap
# fragments, and an allocation can fail anywhere: metering must go on and nothing queued be
# lost. A step that failed is retried once after a collection; a transport whose batch did
# not fit halves it (down to one item, which the outbox always returns) and doubles it back
# after a run of good exchanges.

import gc

from mpshim import mem_info

GROW_AFTER = 8      # good exchanges before a shrunk batch doubles again
MIN_BYTES = 512
# debugging a heap (off in the field; tools/sim/meter_main.py --heap-dump sets it): at each
# MemoryError a transport meets, print micropython.mem_info(1), the heap's block map, which
# tells a peak (little free) from fragmentation (much free, no hole large enough)
DUMP = False


def dump():
    """Print the heap's state and block map (MicroPython; nothing on CPython)."""
    mem_info(1)


class Batch:
    """How much one exchange sends: `items` and `bytes` of outbox JSON at most."""

    def __init__(self, items, nbytes):
        self.full_items = self.items = items
        self.full_bytes = self.bytes = nbytes
        self.good = 0
        self.shrinks = 0

    def shrink(self):
        """The last batch raised MemoryError: send half as much, after a collection."""
        self.items = max(1, self.items // 2)
        self.bytes = max(MIN_BYTES, self.bytes // 2)
        self.good = 0
        self.shrinks += 1
        if DUMP:    # before the collection: the heap as the failed exchange left it
            dump()
        gc.collect()

    def exchanged(self):
        if self.items >= self.full_items and self.bytes >= self.full_bytes:
            return
        self.good += 1
        if self.good >= GROW_AFTER:
            self.good = 0
            self.items = min(self.full_items, self.items * 2)
            self.bytes = min(self.full_bytes, self.bytes * 2)


def retry_once(fn, *args):
    """fn(*args); after a MemoryError, a collection and one more try (which may raise)."""
    try:
        return fn(*args)
    except MemoryError:
        gc.collect()
    return fn(*args)
