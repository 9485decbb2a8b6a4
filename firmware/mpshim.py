# What differs between MicroPython and CPython, in one place. Firmware modules import these
# names from here instead of each writing its own try/except: the same source then runs on a
# board, on MicroPython's unix port and under CPython (host tests, replay, the simulator).
#
#   micropython, const, ptr8/ptr16/ptr32  the real module on MicroPython (so the viper decorator
#                      compiles to machine code); on CPython decorators that do nothing, and
#                      plain names for the viper annotations
#   ticks_ms, ticks_us, ticks_diff, ticks_add   MicroPython's wrapping 30-bit tick counters
#   sleep_ms           a blocking sleep in ms (before asyncio runs: boot, Wi-Fi connect)
#   asleep_ms          asyncio's sleep in integer ms (on a board: no float per call)
#   print_exception    a traceback to a stream
#   mem_info           micropython.mem_info (the heap's block map with 1); nothing on CPython
#   alias_u_modules    the u-prefixed module names older micropython-lib code imports
#   cancel_all         cancel tasks and see them end (MicroPython can lose a cancel)
#
# What a port may lack as hardware (network, machine, tls, a board module) is not here: the
# modules that need it ask for it where they use it, and say what is missing.

import sys
import time

MICROPYTHON = sys.implementation.name == "micropython"

# Viper annotations are read by MicroPython's compiler, never looked up at run time; CPython
# evaluates them when the function is defined.
ptr8 = ptr16 = ptr32 = object

if MICROPYTHON:
    import asyncio

    import micropython
    from micropython import const

    ticks_ms = time.ticks_ms
    ticks_us = time.ticks_us
    ticks_diff = time.ticks_diff
    ticks_add = time.ticks_add
    sleep_ms = time.sleep_ms
    asleep_ms = asyncio.sleep_ms

    def print_exception(exc, file=sys.stderr):
        sys.print_exception(exc, file)

    mem_info = micropython.mem_info

    def alias_u_modules():
        pass  # built in

else:
    import asyncio
    import traceback

    class micropython:  # noqa: N801 - stands in for the module of that name
        @staticmethod
        def viper(f):
            return f

        @staticmethod
        def native(f):
            return f

        @staticmethod
        def const(x):
            return x

    const = micropython.const

    def mem_info(verbose=0):
        pass  # CPython has no GC heap to map

    _TICKS_MASK = 0x3FFFFFFF  # MicroPython's ticks wrap at 2**30, as here
    _TICKS_HALF = 0x20000000

    def ticks_ms():
        return (time.monotonic_ns() // 1000000) & _TICKS_MASK

    def ticks_us():
        return (time.monotonic_ns() // 1000) & _TICKS_MASK

    def ticks_diff(a, b):
        return ((a - b + _TICKS_HALF) & _TICKS_MASK) - _TICKS_HALF

    def ticks_add(a, delta):
        if not -_TICKS_HALF < delta < _TICKS_HALF:
            raise OverflowError("ticks interval overflow")  # as a 32-bit port says
        return (a + delta) & _TICKS_MASK

    def sleep_ms(ms):
        time.sleep(ms / 1000)

    def asleep_ms(ms):
        return asyncio.sleep(ms / 1000)

    def print_exception(exc, file=None):
        traceback.print_exception(type(exc), exc, exc.__traceback__, file=file or sys.stderr)

    def alias_u_modules():
        """umqtt.simple imports usocket, ustruct and ubinascii (MicroPython's older names)."""
        import binascii
        import socket
        import struct

        for name, module in (("usocket", socket), ("ustruct", struct),
                             ("ubinascii", binascii)):
            sys.modules.setdefault(name, module)


async def cancel_all(tasks, tries=50):
    """Cancel `tasks` and wait (up to tries x 10 ms) until each has ended. MicroPython's
    Task.cancel() forwards a cancel to the task a task awaits (asyncio/core.py): when that
    one has just finished and the awaiting task is not yet resumed, the cancel lands on the
    finished task and is lost, and the awaiting task goes on. So: cancel again until done."""
    for _ in range(tries):
        pending = [t for t in tasks if not t.done()]
        if not pending:
            return True
        for t in pending:
            t.cancel()
        await asleep_ms(10)
    return all(t.done() for t in tasks)
