# firmware/health.py and its use by app.py on the fake hardware (host_tests/fakes), under
# MicroPython and CPython.
#   health_checks.py ROOT STATE_DIR   prints one JSON document for test_health.py.

import asyncio
import json
import sys
import time

import bc_util
import config
import health
import machine  # the fake
import ops
from app import App
from mpshim import ticks_ms

from boards.sim_board import DEFAULT_SCENARIO, SimBoard

ROOT = sys.argv[1]
STATE = sys.argv[2]

OUT = {}


# ---- reset causes ----
def causes():
    out = {}
    for const in ("PWRON_RESET", "HARD_RESET", "WDT_RESET", "DEEPSLEEP_RESET", "SOFT_RESET"):
        machine.cause[0] = getattr(machine, const)
        out[const] = health.reset_cause()
    machine.cause[0] = 99
    out["99"] = health.reset_cause()
    machine.cause[0] = machine.PWRON_RESET

    class NoCause:  # the unix port's machine: no reset_cause()
        pass

    out["no_reset_cause"] = health.reset_cause(NoCause)
    return out


OUT["causes"] = causes()


# ---- Watchdog.check() at chosen times ----
class Done:
    def __init__(self, done):
        self._done = done

    def done(self):
        return self._done


def check_at():
    meter = health.Heartbeat(10)
    comms = health.Heartbeat(85)
    meter.at = comms.at = 1000
    wd = health.Watchdog(60, make_wdt=lambda ms: None)
    wd.watch("metering", Done(False), meter)
    comms_task = Done(False)
    wd.watch("comms", comms_task, comms)
    out = {}
    for label, now in (("both_on_time", 1000 + 9000), ("meter_at_limit", 1000 + 10000),
                       ("meter_late", 1000 + 10001)):
        out[label] = wd.check(now)
    meter.at = 80000
    out["comms_late"] = wd.check(1000 + 85001)
    comms.beat(200)  # a long wait ahead extends the allowance
    meter.at = comms.at + 150000
    out["comms_long_wait"] = wd.check(comms.at + 150000)
    comms_task._done = True
    out["comms_ended"] = wd.check(comms.at)
    return out


OUT["check"] = check_at()
OUT["timeouts"] = [[p, health.Watchdog(t, make_wdt=None, platform=p).timeout_ms,
                    health.Watchdog(t, make_wdt=None, platform=p).feed_ms]
                   for p, t in (("esp32", 60), ("rp2", 60), ("rp2", 5), ("linux", 1))]


# ---- the watchdog task with the fake machine.WDT ----
async def until(cond, limit_s=30):
    t0 = ticks_ms()
    while not cond():
        if ticks_ms() - t0 > limit_s * 1000:
            return False
        await asyncio.sleep(0.01)
    return True


async def stall_scenario(which):
    machine.WDT.instances = []
    meter = health.Heartbeat(1)
    comms = health.Heartbeat(1)
    state = {"meter": True, "comms": True}

    async def worker(name, beat):
        while True:
            if name == "comms" and not state["comms"]:
                return  # the comms task dies
            if state[name]:
                beat.beat()
            await asyncio.sleep(0.01)

    tm = asyncio.create_task(worker("meter", meter))
    tc = asyncio.create_task(worker("comms", comms))
    wd = health.Watchdog(0.2)  # 200 ms: fed every 50 ms
    wd.watch("metering", tm, meter)
    wd.watch("comms", tc, comms)
    reasons = []
    wd.on_starve = reasons.append
    tw = asyncio.create_task(wd.run())
    fed = await until(lambda: machine.WDT.instances and machine.WDT.instances[0].feeds >= 5)
    out = {"fed_while_alive": fed, "starved_while_alive": wd.starved}
    state["meter" if which == "metering" else "comms"] = False
    out["stopped"] = await until(lambda: wd.starved is not None)
    feeds = machine.WDT.instances[0].feeds
    await asyncio.sleep(0.3)  # longer than one feed interval: no feed may follow
    out["feeds_after"] = machine.WDT.instances[0].feeds - feeds
    out["count_matches"] = machine.WDT.instances[0].feeds == wd.feeds
    out["reasons"] = reasons
    out["wdt_timeout"] = machine.WDT.instances[0].timeout
    for t in (tm, tc, tw):
        t.cancel()
    await asyncio.sleep(0)
    return out


OUT["stall_metering"] = asyncio.run(stall_scenario("metering"))
OUT["stall_comms"] = asyncio.run(stall_scenario("comms"))


# ---- the app: read op, watchdog wiring, hardware-board metering ----
class HardwareBoard:
    """A board with available(): blocks of `blocks` then none (the sampling hardware stops)."""

    def __init__(self, blocks, rate):
        self.sample_rate = rate
        self.channel_delay_s = 0.0
        self.v_gain = 0.25
        self.i_gain = 0.05
        self.v_mid = self.i_mid = 2048
        self.left = blocks * 128
        self.reads = 0

    def available(self):
        return min(self.left, 128)

    def read(self, vbuf, ibuf):
        n = len(vbuf)
        assert self.left >= n, "read() would block: available() was not awaited"
        for k in range(n):
            vbuf[k] = 2048
            ibuf[k] = 2048
        self.left -= n
        self.reads += 1
        return n


def make_app(board, **changes):
    cfg = config.validate(changes)
    return App(board, cfg, STATE, realtime=True)


def read_op():
    machine.cause[0] = machine.WDT_RESET
    app = make_app(SimBoard(DEFAULT_SCENARIO))
    r1 = ops.op_read(app, {})
    time.sleep(1.2)
    machine.cause[0] = machine.PWRON_RESET
    r2 = ops.op_read(app, {})
    out = {k: r1[k] for k in ("reset_cause", "uptime_s", "version")}
    out["later"] = {k: r2[k] for k in ("reset_cause", "uptime_s")}
    return out


OUT["read"] = read_op()


async def app_hardware_stall():
    machine.WDT.instances = []
    # 500 blocks at 3200 Hz, ready at once: paced in real time they would take 20 s; a
    # hardware board is never paced, so they drain well within the 15 s limit
    board = HardwareBoard(500, 3200)
    app = make_app(board, wdt_s=1)
    app.meter_beat.allow_ms = 3000    # a loaded CI machine may not run the loop for 0.5 s
    task = asyncio.create_task(app.run())
    drained = await until(lambda: board.left == 0, 15)
    starved = await until(lambda: app.watchdog is not None and app.watchdog.starved)
    wdt = machine.WDT.instances[0]
    out = {"drained": drained, "reads": board.reads, "starved": starved,
           "reason": app.watchdog.starved, "wdt_timeout": wdt.timeout,
           "fed_before": wdt.feeds > 0, "app_running": not task.done()}
    task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        pass
    items = app.outbox.peek(100, 1 << 20)
    out["notices"] = [i["body"]["what"] for i in items if i["kind"] == "notice"]
    return out


OUT["app_stall"] = asyncio.run(app_hardware_stall())


async def app_comms_beat():
    # a head-end that refuses connections: comms backs off and says how long it will wait
    app = make_app(SimBoard(DEFAULT_SCENARIO), server_url="http://127.0.0.1:9",
                   device_id="m1", wdt_s=0)
    before = app.comms_beat.allow_ms
    task = asyncio.create_task(app.run())
    ok = await until(lambda: app.comms.failures >= 1)
    await asyncio.sleep(0.05)
    out = {"failed": ok, "allow_before": before, "allow_after": app.comms_beat.allow_ms,
           "watchdog": app.watchdog}
    task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        pass
    return out


OUT["comms_beat"] = asyncio.run(app_comms_beat())


# ---- which board make_board() picks ----
def boards():
    from boards import esp32_board as besp

    besp.ticks_us = machine.fake_ticks_us  # exact start-up measurements on the fake clock
    out = {}
    for platform in ("esp32", "rp2", "linux"):
        machine.reset()
        out[platform] = type(bc_util.make_board(platform)).__name__

    class Override:
        @staticmethod
        def make():
            return "the board module's board"

    sys.modules["board"] = Override
    out["override"] = bc_util.make_board("esp32")
    del sys.modules["board"]
    return out


OUT["boards"] = boards()
print(json.dumps(OUT))
