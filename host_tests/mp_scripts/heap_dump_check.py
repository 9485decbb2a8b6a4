# memory_guard's debug hook (DUMP, tools/sim/meter_main.py --heap-dump), for
# host_tests/test_memory_guard.py:  heap_dump_check.py on|off
# A batch that met a MemoryError shrinks; with DUMP set, MicroPython prints its heap map first.

import sys

import memory_guard

memory_guard.DUMP = sys.argv[1] == "on"
b = memory_guard.Batch(4, 2048)
print("BEFORE")
b.shrink()
print("AFTER", b.items, b.bytes)
