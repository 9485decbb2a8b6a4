# A networked meter on the MicroPython unix port: the firmware app with the simulated board.
#
#   micropython tools/sim/meter_main.py CONFIG.json STATE_DIR [SCENARIO.json] [--fast] [--print]
#
# CONFIG.json holds the meter config (firmware/config.py keys: device_id, device_key,
# server_url, ca_file, ...). STATE_DIR holds the outbox, inbox and energy registers.
# --fast runs the simulated signal as fast as possible instead of in real time.
# --print writes every reading and event as a JSON line on stdout (for make sim).
# --heap-dump prints micropython.mem_info(1) at each MemoryError a transport meets
# (firmware/memory_guard.py DUMP; BC_HEAP_DUMP=1 in bench.heap_budget and the soaks).
# --clock-offset=S starts the board's clock S seconds off (a board that lost its RTC starts
# in 2000: S = 946684800 - now), as on a board after a power cut.
# Run it through tools/lab/runner.py, which puts firmware/ and the boards package on the path.

import asyncio
import json
import os
import sys

import fwboot


def _mkdir(path):
    try:
        os.mkdir(path)
    except OSError:
        pass


def _parent(path):
    k = path.rstrip("/").rfind("/")
    return "" if k < 0 else (path[:k] or "/")


def _boot(state_dir):
    """What a reset does: forget the firmware modules, let fwboot pick fw/V, import again."""
    base = _parent(state_dir)
    roots = [fwboot.fw_dir(base) + "/"]
    for name in ("fwboot", "boards.sim_board"):
        f = getattr(sys.modules.get(name), "__file__", None)
        if f:
            roots.append(f[:f.rfind("/") + 1])
    for name in list(sys.modules):
        f = getattr(sys.modules[name], "__file__", None)
        if name not in ("__main__", "fwboot") and f and any(f.startswith(r) for r in roots):
            del sys.modules[name]
    fwboot.select(base)
    import app
    import config

    from boards import sim_poly
    return app.App, config, sim_poly.board_for   # SimBoard, or a polyphase one by wiring


def _term_as_interrupt():
    """SIGTERM stops the meter as Ctrl-C does (registers saved). MicroPython's unix port has
    no signal module: there SIGTERM ends it at once, like a power cut, which loses only the
    energy not yet saved (never a register already reported: docs/reliability.md)."""
    try:
        import signal
    except ImportError:
        return

    def interrupt(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupt)


def _run(app):
    """app.run(); Ctrl-C (SIGINT) or SIGTERM saves the registers and ends it: "stopped".
    MicroPython raises KeyboardInterrupt inside the asyncio loop, outside the app's tasks,
    so app.run()'s own final save never runs: saved here."""
    try:
        return asyncio.run(_until_stopped(app))
    except (KeyboardInterrupt, asyncio.CancelledError):
        app.save_energy()
        sys.stderr.write("sim_meter: stopped (registers saved)\n")
        return "stopped"
    finally:
        _term_as_interrupt()        # the loop's close put SIGTERM back to its default


async def _until_stopped(app):
    """app.run(), which CPython's SIGTERM cancels from the loop (add_signal_handler) rather
    than by an exception raised wherever the signal lands: one raised inside asyncio's own
    code can leave the loop unable to finish (CI: a meter that never ended). MicroPython's
    loop has no signal handlers: SIGTERM is _term_as_interrupt's, or the default."""
    try:
        import signal
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM,
                                                      asyncio.current_task().cancel)
    except (ImportError, AttributeError, NotImplementedError):
        pass
    return await app.run()


def _print(record):
    sys.stdout.write(json.dumps(record))
    sys.stdout.write("\n")


def main(argv):
    args = [a for a in argv if not a.startswith("--")]
    if len(args) < 2:
        sys.stderr.write("usage: meter_main.py CONFIG.json STATE_DIR [SCENARIO.json] [--fast]\n")
        return 2
    _mkdir(args[1])
    _term_as_interrupt()
    App, config, SimBoard = _boot(args[1])
    if "--heap-dump" in argv:
        import memory_guard
        memory_guard.DUMP = True
    try:
        cfg = config.load(args[0])
    except (ValueError, OSError) as exc:
        sys.stderr.write("sim_meter: bad config %s: %s\n" % (args[0], exc))
        return 2
    scenario = None
    if len(args) > 2:
        with open(args[2]) as f:
            scenario = json.load(f)
    if scenario is None:
        from boards.sim_board import DEFAULT_SCENARIO
        scenario = DEFAULT_SCENARIO
    while True:
        # a `reboot` op ends app.run(); a new App then starts from what is on "flash"
        try:
            app = App(SimBoard(scenario, cfg), cfg, args[1], config_path=args[0],
                      realtime="--fast" not in argv)
        except (ValueError, OSError) as exc:
            sys.stderr.write("sim_meter: cannot start: %s\n" % (exc,))
            return 2
        if "--print" in argv:
            app.on_record = _print
        skew = _clock_offset(argv)
        if skew:
            _skew(app, skew)
        # "unix": when this App started (wall time); a reading's t is that plus its sample clock
        sys.stdout.write(json.dumps({"type": "started", "device": cfg["device_id"],
                                    "unix": app.started_unix}) + "\n")
        if _run(app) != "reboot":
            break
        App, config, SimBoard = _boot(args[1])  # new firmware after an update
        cfg = config.load(args[0])
    return 0


def _skew(app, seconds):
    # as if the board's RTC were that far off from the start (the App's wall time follows)
    if hasattr(app.clock, "offset_ms"):
        app.clock.offset_ms += seconds * 1000
    else:
        app.clock.offset += seconds
        app.started_unix += seconds


def _clock_offset(argv):
    for a in argv:
        if a.startswith("--clock-offset="):
            return int(a[len("--clock-offset="):])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
