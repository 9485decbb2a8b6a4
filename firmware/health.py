# Watchdog, reset cause and uptime.
#
# The hardware watchdog (machine.WDT) is fed from its own asyncio task, and only while every
# watched task is alive: not done, and its last heartbeat within the time it allowed itself
# (metering beats every block; comms at each loop iteration, allowing for the long-poll or
# back-off it is about to wait through). A stalled or dead task stops the feeding for good
# and the board resets; a blocked event loop stops it too. Without machine.WDT (the unix
# port, CPython) the same checks run and only the feeding is a no-op.

import asyncio
import sys

from mpshim import ticks_diff, ticks_ms

try:
    from version import VERSION
except ImportError:
    VERSION = "0.1.0"

# Longest timeout each port's WDT accepts (RP2040: a 24-bit count of 2 us steps).
WDT_MAX_MS = {"rp2": 8388}
FEED_MAX_MS = 2000  # feed at least this often (and at least 4 times per timeout)

# machine's reset-cause constants (those a port defines) and the names the `read` op gives.
RESET_NAMES = (("PWRON_RESET", "power_on"), ("HARD_RESET", "hard"), ("WDT_RESET", "watchdog"),
               ("DEEPSLEEP_RESET", "deep_sleep"), ("SOFT_RESET", "soft"),
               ("BROWNOUT_RESET", "brownout"))


def reset_cause(machine_module=None):
    """The last reset's cause as a name; "unknown" where machine cannot tell (unix port)."""
    m = machine_module
    if m is None:
        try:
            import machine as m
        except ImportError:
            return "unknown"
    try:
        cause = m.reset_cause()
    except (AttributeError, OSError):
        return "unknown"
    for const, name in RESET_NAMES:
        if getattr(m, const, None) == cause:
            return name
    return "unknown"


class Uptime:
    """Seconds since the firmware started, immune to ticks_ms wrapping as long as it is
    read (tick()) at least every few days: the watchdog loop does."""

    def __init__(self):
        self.last = ticks_ms()
        self.ms = 0

    def tick(self):
        now = ticks_ms()
        self.ms += ticks_diff(now, self.last)
        self.last = now
        return self.ms // 1000


UPTIME = Uptime()

HEAP_EVERY_MS = 5000    # how often the watchdog loop collects and samples the free heap


class HeapWatch:
    """The GC heap's free space after a collection, sampled every HEAP_EVERY_MS from the
    watchdog loop, and its low-water mark since start (the `read` op's `heap`; the soaks'
    margin check, docs/performance.md). A sample, not the exact minimum: a TLS handshake's
    peak lasts milliseconds. Nothing on CPython (no gc.mem_free)."""

    def __init__(self):
        self.free = self.min_free = None
        self.samples = 0
        self.at = ticks_ms()

    def sample(self, now, force=False):
        if not force and self.samples and ticks_diff(now, self.at) < HEAP_EVERY_MS:
            return
        import gc

        if not hasattr(gc, "mem_free"):
            return
        self.at = now
        gc.collect()
        self.free = free = gc.mem_free()
        self.samples += 1
        if self.min_free is None or free < self.min_free:
            self.min_free = free

    def report(self):
        """{"free", "min_free", "samples"} in bytes, or None before the first sample."""
        if self.free is None:
            return None
        return {"free": self.free, "min_free": self.min_free, "samples": self.samples}


HEAP = HeapWatch()


class Heartbeat:
    """A task's sign of progress: beat(allow_s) says "expect my next beat within allow_s"."""

    def __init__(self, allow_s):
        self.at = ticks_ms()
        self.allow_ms = int(allow_s * 1000)

    def beat(self, allow_s=None):
        self.at = ticks_ms()
        if allow_s is not None:
            self.allow_ms = int(allow_s * 1000)

    def late_ms(self, now):
        return ticks_diff(now, self.at) - self.allow_ms


def _make_wdt(timeout_ms):
    try:
        from machine import WDT
    except ImportError:
        return None
    return WDT(timeout=timeout_ms)


class Watchdog:
    def __init__(self, timeout_s, make_wdt=_make_wdt, platform=None):
        limit = WDT_MAX_MS.get(sys.platform if platform is None else platform, 1 << 30)
        self.timeout_ms = min(int(timeout_s * 1000), limit)
        self.feed_ms = min(self.timeout_ms // 4, FEED_MAX_MS)
        self.make_wdt = make_wdt
        self.wdt = None
        self.watched = []     # (name, task, heartbeat)
        self.feeds = 0
        self.starved = None   # why feeding stopped, once it has
        self.on_starve = None  # callback(reason), e.g. to leave a notice on flash

    def watch(self, name, task, heartbeat):
        self.watched.append((name, task, heartbeat))

    def check(self, now):
        """None while every watched task is alive and on time, else the reason."""
        for name, task, beat in self.watched:
            if task.done():
                return "%s task ended" % (name,)
            late = beat.late_ms(now)
            if late > 0:
                return "%s made no progress for %d s" % (name, (late + beat.allow_ms) // 1000)
        return None

    def feed(self):
        if self.wdt is not None:
            self.wdt.feed()
        self.feeds += 1

    async def run(self):
        self.wdt = self.make_wdt(self.timeout_ms)  # started here: it cannot be stopped
        while True:
            UPTIME.tick()
            HEAP.sample(ticks_ms())
            if self.starved is None:
                reason = self.check(ticks_ms())
                if reason is None:
                    self.feed()
                else:
                    self.starved = reason
                    if self.on_starve is not None:
                        self.on_starve(reason)
            await asyncio.sleep(self.feed_ms / 1000)
