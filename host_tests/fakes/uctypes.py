# Fake `uctypes` for CPython only (MicroPython's built-in uctypes takes precedence there):
# addressof() of a writable buffer, which the rp2 board uses to align its DMA ring buffers.

import ctypes


def addressof(obj):
    return ctypes.addressof((ctypes.c_char * memoryview(obj).nbytes).from_buffer(obj))
