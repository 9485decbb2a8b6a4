# Starts the meter (docs/field.md). Runs after boot.py at every reset.
#
# - Safe mode: the pin `board.SAFE_PIN` (the board module's setting; none by default) held
#   at `board.SAFE_LEVEL` (default 0: a button to ground, internal pull-up) skips the app and
#   leaves the REPL. On the unix port there is no Pin: BC_SAFE_MODE=1 in the environment
#   does the same there.
# - The app runs with micropython-lib's aiorepl beside it when that module is installed, so
#   the REPL (import bc) stays usable while the meter runs. Without aiorepl, Ctrl-C stops
#   the app cleanly and drops to the REPL; bc still shows its last state.
# - A config or app that cannot start leaves the REPL (fix it with bc.set, then reset).
# - An unexpected error is kept on flash (bc.status() shows it) and the board resets.


import fwboot

BOOT = fwboot.select("")  # puts fw/V first on sys.path, so it must run before other imports
import bc  # noqa: E402

RESET_DELAY_S = 5  # time to press Ctrl-C before an error resets the board


def _board_module():
    try:
        import board
        return board
    except ImportError:
        return None


def safe_mode():
    board = _board_module()
    pin_id = getattr(board, "SAFE_PIN", None)
    if pin_id is None:
        try:
            import os
            return os.getenv("BC_SAFE_MODE") == "1"  # unix port only
        except (ImportError, AttributeError):
            return False
    try:
        from machine import Pin
        pin = Pin(pin_id, Pin.IN, Pin.PULL_UP)
        return pin.value() == getattr(board, "SAFE_LEVEL", 0)
    except (ImportError, AttributeError, ValueError, OSError):
        return False


def _reset():
    try:
        import machine
        machine.reset()
    except (ImportError, AttributeError):
        pass  # the unix port: nothing to reset, stay in the REPL
    return False


def _print_exc(exc):
    from mpshim import print_exception

    print_exception(exc)


async def _run(app):
    try:
        import aiorepl
    except ImportError:
        aiorepl = None
    if aiorepl is not None:
        import asyncio
        asyncio.create_task(aiorepl.task())
    return await app.run()


def run():
    """Returns False when the app stopped and the REPL is next."""
    import asyncio

    from app import App

    if BOOT["error"] or BOOT["rolled_back"]:  # the app reports a rollback to the head-end
        print("bc: firmware %s" % (BOOT["error"] or "%s rolled back: %s"
                                   % (BOOT["failed"], BOOT["rolled_back"])))
    if safe_mode():
        print("bc: safe mode: the app is not started; import bc to configure")
        return False
    if bc.saved_wifi():
        bc.connect_wifi()
    while True:
        cfg = bc.read_config()
        if cfg is None:
            print("bc: the app is not started; fix the config with bc.set(...), then reset")
            return False
        try:
            bc.ensure_dir(bc.STATE_DIR)
            if cfg["pulse_only"]:   # a transport box: pulse inputs, no CT or PT
                from boards.pulse_input import PulseOnlyBoard
                board = PulseOnlyBoard()
            else:
                board = bc.make_board(wiring=cfg["wiring"])
            app = App(board, cfg, bc.STATE_DIR, config_path=bc.CONFIG_PATH)
        except (ValueError, OSError) as exc:
            print("bc: cannot start the app: %s; fix it with bc.set(...), then reset" % (exc,))
            return False
        bc.attach(app, running=True)
        print("bc: app running (device %r); import bc for field commands" % (cfg["device_id"],))
        try:
            outcome = asyncio.run(_run(app))
        except KeyboardInterrupt:
            bc.set_running(False)
            app.save_energy()
            print("bc: app stopped (Ctrl-C); bc.status() shows its last state")
            if app.watchdog is not None and app.watchdog.wdt is not None:
                print("bc: the watchdog cannot be stopped: the board resets within %d s"
                      % (app.watchdog.timeout_ms // 1000,))
            return False
        except Exception as exc:
            bc.set_running(False)
            _print_exc(exc)
            bc.record_error("%s: %s" % (type(exc).__name__, exc))
            print("bc: unexpected error; resetting in %d s (Ctrl-C for the REPL)"
                  % (RESET_DELAY_S,))
            import time
            try:
                time.sleep(RESET_DELAY_S)
            except KeyboardInterrupt:
                return False
            return _reset()
        bc.set_running(False)
        if outcome != "reboot":
            print("bc: app ended (%s)" % (outcome,))
            return False
        _reset()  # a `reboot` op; on the unix port: a fresh App from what is on flash


run()
