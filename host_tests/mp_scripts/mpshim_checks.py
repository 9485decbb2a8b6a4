# Exercises firmware/mpshim.py's names: on MicroPython they are MicroPython's own (the
# oracle), under CPython the stand-ins. host_tests/test_mpshim.py compares the two.

import asyncio
import json
import sys

import mpshim
from mpshim import const, micropython, ptr16

WRAP = 1 << 30
BOUNDARY = (0, 1, 5, WRAP // 2 - 1, WRAP // 2, WRAP - 2, WRAP - 1)
ANSWER = const(42)


@micropython.viper
def viper_sum(buf: ptr16, n: int) -> int:
    s = 0
    for k in range(n):
        s += buf[k]
    return s


def overflows(delta):
    try:
        mpshim.ticks_add(0, delta)
    except OverflowError:
        return 1
    return 0


async def slept():
    t0 = mpshim.ticks_ms()
    await mpshim.asleep_ms(30)
    return mpshim.ticks_diff(mpshim.ticks_ms(), t0)


def main():
    import array

    out = {
        "diff": [[mpshim.ticks_diff(a, b) for b in BOUNDARY] for a in BOUNDARY],
        "add": [[mpshim.ticks_add(a, d) for d in (1, -1, WRAP // 2 - 1, 1 - WRAP // 2)]
                for a in BOUNDARY],
        "add_overflow": overflows(WRAP // 2) + overflows(-(WRAP // 2)),
        "add_then_diff": [mpshim.ticks_diff(mpshim.ticks_add(a, 1000), a) for a in BOUNDARY],
        "ms_in_range": 0 <= mpshim.ticks_ms() < WRAP,
        "us_in_range": 0 <= mpshim.ticks_us() < WRAP,
        "const": ANSWER,
        "viper": viper_sum(array.array("H", [1, 2, 65535]), 3),
        "slept_ms": asyncio.run(slept()),
    }
    t0 = mpshim.ticks_ms()
    mpshim.sleep_ms(20)
    out["blocked_ms"] = mpshim.ticks_diff(mpshim.ticks_ms(), t0)
    try:
        raise ValueError("shown")
    except ValueError as exc:
        mpshim.print_exception(exc, sys.stdout)
    mpshim.alias_u_modules()
    import ubinascii
    import usocket  # noqa: F401
    import ustruct

    out["u_modules"] = [ustruct.pack("<H", 258).hex(), ubinascii.hexlify(b"\x01").decode()]
    out["cancel_all"] = asyncio.run(cancel_stubborn())
    print(json.dumps(out))


async def cancel_stubborn():
    """A task that lets the first cancel pass, as one whose cancel MicroPython lost; and a
    polite one: cancel_all ends both."""
    state = {"swallowed": 0}

    async def stubborn():
        while True:
            try:
                await asyncio.sleep(1)
            except asyncio.CancelledError:
                state["swallowed"] += 1
                if state["swallowed"] >= 2:
                    raise

    async def polite():
        await asyncio.sleep(1)

    tasks = [asyncio.create_task(stubborn()), asyncio.create_task(polite())]
    await asyncio.sleep(0)
    tasks[0].cancel()
    await mpshim.asleep_ms(20)
    after_one = tasks[0].done()
    ended = await mpshim.cancel_all(tasks)
    return {"after_one_cancel": after_one, "ended": ended, "swallowed": state["swallowed"],
            "done": [t.done() for t in tasks]}


main()
