# Field configuration from the REPL (docs/field.md).
#
#   >>> import bc
#   >>> bc.status()                      readings, presence, outbox, last exchange and error
#   >>> bc.config()                      the config, secrets masked
#   >>> bc.set('report_s', 5)            validate, persist, say what needs a restart
#   >>> bc.wifi('ssid', 'password')      persist Wi-Fi credentials (never printed back)
#   >>> bc.calibrate(230.0, 5.0)         v_cal / i_cal from a known load
#   >>> bc.test_exchange()               one exchange with the head-end, and its outcome
#   >>> bc.stop()                        save the energy registers and stop the running app
#
# Bad input prints one line starting "bc: " and returns None (or False); never a traceback.
# main.py attaches the running App (attach()); without one, bc works on the files on flash
# and builds an App (not running) when it needs one.

import json

import config as configuration
import store
from bc_util import (
    CONFIG_PATH,
    ERROR_PATH,
    STATE_DIR,
    WIFI_PATH,
    board_meter_defaults,
    coerce,
    ensure_dir,
    fail,
    last_error,
    make_board,
    measure,
    positive_number,
    saved_wifi,
    say,
    wifi_summary,
)

LIVE = ("report_s", "poll_wait_s")  # applied by the running app at once; the rest on restart

# The dotted names and the flat config keys they stand for (any other dotted name:
# dots become underscores, e.g. 'mqtt.host' -> 'mqtt_host').
ALIASES = {
    "server.url": "server_url",
    "server.ca": "ca_file",
    "device.id": "device_id",
    "device.key": "device_key",
    "report.interval": "report_s",
    "report.every_s": "report_s",
    "poll.wait_s": "poll_wait_s",
    "cal.v": "v_cal",
    "cal.i": "i_cal",
}

_app = None        # the App: attached by main.py, or built here on demand
_attached = False  # True when main.py attached it
_running = False   # True while main.py runs it (asyncio loop busy: no asyncio.run here)


# --- hooks for main.py ---
def attach(app, running=False):
    global _app, _attached, _running
    _app = app
    _attached = app is not None
    _running = running


def set_running(flag):
    global _running
    _running = flag


def record_error(text):
    """Keep the last unexpected error on flash, so bc.status() shows it after the reset."""
    try:
        ensure_dir(STATE_DIR)
        store.write_record(ERROR_PATH, text.encode())
    except OSError:
        pass


def read_config():
    try:
        return configuration.load(CONFIG_PATH, board_meter_defaults())
    except (ValueError, OSError) as exc:
        say("cannot read %s: %s" % (CONFIG_PATH, exc))
        return None


def _get_app(metering_only=False):
    """The running (or an idle) App. metering_only: one without a transport, for what needs
    only the metering (calibrate), so a head-end setting still to fix (an https url without
    its CA) does not stand in the way; it is not kept."""
    global _app
    if _app is not None:
        return _app
    cfg = read_config()
    if cfg is None:
        return None
    if metering_only:
        cfg = dict(cfg, server_url="", mqtt_host="")
    try:
        from app import App

        ensure_dir(STATE_DIR)
        app = App(make_board(wiring=cfg["wiring"]), cfg, STATE_DIR, config_path=CONFIG_PATH,
                  realtime=False)
    except (ValueError, OSError, ImportError) as exc:
        return fail("cannot start the app: %s" % (exc,))
    if not metering_only:
        _app = app
    return app


def _forget_idle_app():
    # an App built here holds the old config: build it again next time
    global _app
    if not _attached:
        _app = None


# --- config ---
def _name(name):
    if not isinstance(name, str):
        return None
    if name in ALIASES:
        return ALIASES[name]
    return name.replace(".", "_")


def config():
    """Print the config, secrets masked; returns the masked dict."""
    if _attached:
        cfg = _app.public_config()
    else:
        raw = read_config()
        if raw is None:
            return None
        cfg = configuration.public(raw)
    w = saved_wifi() or {}
    cfg["wifi_ssid"] = w.get("ssid", "")
    cfg["wifi_password"] = "(set)" if w.get("password") else ""
    for name in sorted(cfg):
        print("  %-18s %r" % (name, cfg[name]))
    return None


_MISSING = object()


def set(name=None, value=_MISSING):
    """Validate, persist (write-then-rename), and say whether a restart is needed."""
    key = _name(name)
    if key is None:
        return fail("the setting's name must be text, e.g. bc.set('report_s', 5)")
    if value is _MISSING:
        return fail("usage: bc.set(%r, value), e.g. bc.set('report_s', 5)" % (name,))
    if key in ("wifi_ssid", "wifi_password"):
        return fail("use bc.wifi(ssid, password) for Wi-Fi")
    value = coerce(key, value)
    try:
        if _attached:
            result = _app.change_config({key: value})
            restart = result["restart_needed"]
        else:
            cfg = read_config()
            if cfg is None:  # a damaged file must not lock the field person out
                say("starting from the defaults")
                cfg = dict(configuration.DEFAULTS)
            new = configuration.validate({key: value}, cfg)
            configuration.save(CONFIG_PATH, new)
            _forget_idle_app()
            restart = [key] if key not in LIVE else []
    except ValueError as exc:  # ConfigError: the reason, one line
        say("not saved: %s" % (exc,))
        return False
    except OSError as exc:
        say("not saved: cannot write %s: %s" % (CONFIG_PATH, exc))
        return False
    if key in configuration.SECRETS:
        shown = "(set)" if value else "''"
    else:
        shown = repr(configuration.check(key, value))
    if restart:
        say("%s = %s saved; takes effect after a restart (machine.reset())" % (key, shown))
    elif _running:
        say("%s = %s saved and applied" % (key, shown))
    else:
        say("%s = %s saved" % (key, shown))
    return True


def wifi(ssid, password=""):
    """Persist Wi-Fi credentials (the password is never printed) and connect if we can."""
    if not isinstance(ssid, str) or not 1 <= len(ssid) <= 32:
        return fail("not saved: ssid must be text of 1 to 32 characters")
    if not isinstance(password, str) or not (password == "" or 8 <= len(password) <= 63):
        return fail("not saved: password must be empty (open network) or 8 to 63 characters")
    try:
        store.write_record(WIFI_PATH, json.dumps({"ssid": ssid, "password": password}).encode())
    except OSError as exc:
        return fail("not saved: cannot write %s: %s" % (WIFI_PATH, exc))
    say("Wi-Fi %r saved (password %s)" % (ssid, "set" if password else "empty"))
    connect_wifi()
    return True


def connect_wifi():
    """Start connecting with the saved credentials; returns the WLAN, or None."""
    try:
        import network
    except ImportError:
        say("no Wi-Fi on this port (no network module): credentials kept, nothing to connect")
        return None
    w = saved_wifi()
    if not w:
        return fail("no Wi-Fi credentials saved: bc.wifi(ssid, password)")
    try:
        wlan = network.WLAN(network.STA_IF)
        wlan.active(True)
        wlan.connect(w["ssid"], w["password"])
    except (OSError, AttributeError, KeyError) as exc:
        return fail("Wi-Fi connect failed: %s" % (exc,))
    say("connecting to %r; bc.status() shows the link" % (w["ssid"],))
    return wlan


# --- status ---
def status():
    """Print readings, presence, outbox depth, the last exchange and the last error."""
    app = _get_app()
    if app is None:
        return None
    s = app.status_reading()
    r = s.get("reading")
    state = "running" if _running else ("stopped" if _attached else "not running")
    print("  app        %s, device %r, transport %s" % (state, app.cfg["device_id"],
                                                         app.cfg["transport"]))
    if r:
        print("  reading    %.1f V  %.3f A  %.1f W  pf %.3f  %.2f Hz" % (
            r["vrms"], r["irms"], r["p"], r["pf"], r["f"]))
    else:
        print("  reading    none yet")
    regs = s.get("registers") or {}
    if regs:
        print("  energy Wh  " + "  ".join("%s %s" % (k, regs[k]) for k in sorted(regs)))
        unsaved = s.get("unsaved") or {}
        if any(unsaved.values()):
            print("  unsaved Wh " + "  ".join("%s %s" % (k, unsaved[k]) for k in sorted(unsaved)))
    print("  presence   %s   relay %s" % (s["presence"], s["relay"]))
    if "overruns" in s:
        print("  board      %d overruns (sample blocks lost)" % (s["overruns"],))
    print("  outbox     %d waiting" % (app.outbox.depth(),))
    comms = app.comms
    if comms is None:
        print("  exchange   no head-end configured")
    elif comms.last_ok is None:
        print("  exchange   none yet")
    else:
        ago = app.clock.now() - comms.last_ok
        print("  exchange   last ok %.0f s ago (%d in all)" % (ago, comms.exchanges))
    err = last_error(app)
    print("  last error %s" % (err or "none",))
    print("  wifi       %s" % (wifi_summary(),))
    return None


# --- calibration ---
def calibrate(v_ref=None, i_ref=None):
    """From a known load (v_ref volts rms, i_ref amps rms, as a reference meter shows)
    and the latest reading: new v_cal, i_cal gains, validated and persisted."""
    if not (positive_number(v_ref) and positive_number(i_ref)):
        return fail("v_ref and i_ref must be positive numbers (V rms, A rms), "
                     "e.g. bc.calibrate(230.0, 5.0)")
    app = _get_app(metering_only=True)
    if app is None:
        return None
    r = app.last_reading if _running else measure(app)
    if r is None:
        return fail("no reading yet: wait a second and try again")
    if r["vrms"] <= 0 or r["irms"] <= 0:
        return fail("the reading shows %.1f V, %.3f A: calibrate with voltage and a load on"
                     % (r["vrms"], r["irms"]))
    # the reading was made with the gains the meter started with
    v_cal = app.meter.config["v_cal"] * v_ref / r["vrms"]
    i_cal = app.meter.config["i_cal"] * i_ref / r["irms"]
    changes = {"v_cal": round(v_cal, 5), "i_cal": round(i_cal, 5)}
    try:
        if _attached:
            app.change_config(changes)
        else:
            new = configuration.validate(changes, read_config() or {})
            configuration.save(CONFIG_PATH, new)
            _forget_idle_app()
    except ValueError as exc:
        say("not saved: %s (measured %.2f V, %.4f A: check the wiring and the reference)"
             % (exc, r["vrms"], r["irms"]))
        return False
    except OSError as exc:
        return fail("not saved: cannot write %s: %s" % (CONFIG_PATH, exc))
    say("measured %.2f V, %.4f A; v_cal = %s, i_cal = %s saved; takes effect after a "
         "restart (machine.reset())" % (r["vrms"], r["irms"], changes["v_cal"],
                                         changes["i_cal"]))
    return True


# --- stop ---
def stop():
    """Save the energy registers and stop the running app (it ends after its current block;
    main.py then leaves the REPL). True when there was an app to stop."""
    if _app is None or not _attached:
        return fail("no app is running here (main.py starts it)")
    try:
        _app.stop()
    except OSError as exc:
        return fail("registers not saved: %s" % (exc,))
    if _running:
        say("registers saved; the app stops now")
    else:
        say("registers saved; the app was already stopped")
    return True


# --- one exchange ---
def test_exchange(timeout_s=45):
    """One exchange with the head-end; prints the outcome. True when it went through."""
    app = _get_app()
    if app is None:
        return None
    comms = app.comms
    if comms is None:
        return fail("no head-end configured: bc.set('server_url', 'https://...') "
                     "(or transport 'mqtt' and mqtt_host), then restart")
    if _running:
        comms.kick()
        say("the app is running: exchange requested now; bc.status() shows the outcome")
        return None
    if not hasattr(comms, "exchange"):
        return fail("the MQTT and email links run only inside the app: start it (import main) "
                     "and see bc.status()")
    import asyncio

    depth = app.outbox.depth()
    try:
        asyncio.run(asyncio.wait_for(comms.exchange(), timeout_s))
    except Exception as exc:  # network down, refused, bad signature: one line, no traceback
        comms.last_error = "%s: %s" % (type(exc).__name__, exc)
        try:
            comms.http.close()
        except Exception:
            pass
        say("exchange failed: %s" % (comms.last_error,))
        return False
    try:
        comms.http.close()  # no socket left open for the next asyncio.run
    except Exception:
        pass
    comms.last_error = None
    say("exchange ok: %d waiting before, %d now" % (depth, app.outbox.depth()))
    return True
