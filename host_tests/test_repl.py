"""The field REPL API (firmware/bc.py, docs/field.md) driven through a real MicroPython
unix-port REPL with pexpect: what a person types, what the screen shows, what is on "flash"
(the working directory), and what survives a restart."""

import json
import os
import time

import pexpect
import pytest
import store  # noqa: E402  (firmware/store.py runs under CPython too)

from lab import runner

pytestmark = pytest.mark.system

KEY = "00112233445566778899aabbccddeeff"
WIFI_PASSWORD = "pa55-w0rd-field"
PROMPT = ">>> "


class Repl:
    """A micropython REPL in a working directory (the board's flash)."""

    def __init__(self, cwd, *args, env_extra=None, interpreter="micropython", extra=()):
        cmd, env = runner.command(interpreter, "x", extra=extra)
        env.update(env_extra or {})
        argv = cmd[1:-1] + list(args)   # the board interpreter's -X heapsize=...
        self.child = pexpect.spawn(cmd[0], argv, cwd=str(cwd), env=env, encoding="utf-8",
                                   timeout=20, dimensions=(50, 200))
        self.screen = ""

    def wait(self, pattern=PROMPT):
        self.child.expect_exact(pattern)
        self.screen += self.child.before + pattern

    def run(self, line):
        """Type a line; the text it printed (the echoed line removed)."""
        self.child.sendline(line)
        self.child.expect_exact(PROMPT)
        out = self.child.before.replace("\r\n", "\n")
        self.screen += out + PROMPT
        echoed, _, printed = out.partition("\n")
        assert echoed.strip() == line
        return printed

    def close(self):
        self.child.sendcontrol("d")
        self.child.expect(pexpect.EOF)
        self.screen += self.child.before or ""


@pytest.fixture
def repl(tmp_path):
    started = []

    def start(*args, **kw):
        r = Repl(tmp_path, *args, **kw)
        started.append(r)
        return r

    yield start
    for r in started:
        if r.child.isalive():
            r.child.terminate(force=True)


def on_flash(tmp_path):
    return json.loads(store.decode((tmp_path / "config.json").read_bytes()))


def no_traceback(r):
    assert "Traceback" not in r.screen, r.screen


def test_set_persists_validates_and_survives_a_restart(repl, tmp_path):
    r = repl()
    r.wait()
    assert r.run("import bc") == ""
    out = r.run("bc.set('report_s', 5)")
    assert "report_s = 5 saved" in out
    assert on_flash(tmp_path)["report_s"] == 5

    out = r.run("bc.set('report_s', -1)")
    assert out.splitlines()[0] == "bc: not saved: report_s must be between 1 and 3600, got -1"
    assert on_flash(tmp_path)["report_s"] == 5          # the bad value did not land

    out = r.run("bc.set('server.url', 'https://headend.example:8443')")  # the name
    assert "server_url = 'https://headend.example:8443' saved; takes effect after a restart" \
        in out
    assert "takes effect after a restart" in r.run("bc.set('device_key', '%s')" % KEY)
    out = r.run("bc.wifi('site-net', '%s')" % WIFI_PASSWORD)
    assert "Wi-Fi 'site-net' saved" in out
    assert "no Wi-Fi on this port" in out
    assert WIFI_PASSWORD not in out

    out = r.run("bc.config()")
    assert "device_key         '(set)'" in out
    assert "wifi_password      '(set)'" in out
    assert "report_s           5" in out
    assert KEY not in out and WIFI_PASSWORD not in out
    r.close()
    no_traceback(r)

    cfg = on_flash(tmp_path)
    assert (cfg["report_s"], cfg["device_key"]) == (5, KEY)
    assert cfg["server_url"] == "https://headend.example:8443"
    assert json.loads(store.decode((tmp_path / "wifi.json").read_bytes())) == \
        {"ssid": "site-net", "password": WIFI_PASSWORD}
    assert not list(tmp_path.glob("*.tmp"))             # written, then renamed

    # restart: a fresh interpreter reads what is on flash; secrets never come back out
    r = repl()
    r.wait()
    r.run("import bc")
    out = r.run("bc.config()")
    assert "report_s           5" in out
    assert "server_url         'https://headend.example:8443'" in out
    assert "device_key         '(set)'" in out
    # an https head-end without its CA: status says what to fix, in one line
    assert r.run("bc.status()") == ("bc: cannot start the app: ca_file '' cannot be read: "
                                    "an https server_url needs the head-end's CA to pin\n")
    r.close()
    no_traceback(r)
    assert KEY not in r.screen and WIFI_PASSWORD not in r.screen


def test_bad_input_gives_one_line_not_a_traceback(repl, tmp_path):
    r = repl()
    r.wait()
    r.run("import bc")
    for line, said in [
        ("bc.set('nope', 1)", "bc: not saved: unknown setting 'nope'"),
        ("bc.set(3, 4)", "bc: the setting's name must be text"),
        ("bc.set('frequency', 55)", "bc: not saved: frequency must be 50 or 60, got 55"),
        ("bc.set('device_key', 'xyz')", "bc: not saved: device_key must be an even number"),
        ("bc.set('wifi.password', 'x')", "bc: use bc.wifi(ssid, password)"),
        ("bc.wifi('', 'x')", "bc: not saved: ssid must be text"),
        ("bc.wifi('net', 'short')", "bc: not saved: password must be empty"),
        ("bc.calibrate('x', 1)", "bc: v_ref and i_ref must be positive numbers"),
        ("bc.calibrate(230, 0)", "bc: v_ref and i_ref must be positive numbers"),
        ("bc.set('report_s')", "bc: usage: bc.set('report_s', value), e.g."),
        ("bc.calibrate(230)", "bc: v_ref and i_ref must be positive numbers"),
        ("bc.stop()", "bc: no app is running here"),
        ("bc.test_exchange()", "bc: no head-end configured"),
    ]:
        out = r.run(line)
        assert out.startswith(said), (line, out)
        assert len([x for x in out.splitlines() if x.startswith("bc:")]) == 1, (line, out)
    assert not (tmp_path / "config.json").exists() or on_flash(tmp_path)["frequency"] == 50
    # typed values are taken as a prompt would mean them
    assert "report_s = 12 saved" in r.run("bc.set('report_s', '12')")
    # a head-end that is not there: the outcome in one line, and status keeps it
    r.run("bc.set('server_url', 'http://127.0.0.1:9')")
    assert r.run("bc.test_exchange()").startswith("bc: exchange failed: OSError")
    assert "last error OSError" in r.run("bc.status()")
    r.close()
    no_traceback(r)


def test_calibrate_from_a_known_load(repl, tmp_path):
    # the simulated board's default load: 230 V, 1500 W at pf 0.95 (6.865 A)
    r = repl()
    r.wait()
    r.run("import bc")
    out = r.run("bc.calibrate(230.0 * 1.02, 1500 / 0.95 / 230 * 0.98)")
    assert "saved; takes effect after a restart" in out, out
    cfg = on_flash(tmp_path)
    assert cfg["v_cal"] == pytest.approx(1.02, abs=0.002)
    assert cfg["i_cal"] == pytest.approx(0.98, abs=0.002)
    assert "measured" in out
    r.close()
    no_traceback(r)


def test_calibrate_needs_no_head_end(repl, tmp_path):
    # issue 13: with an https head-end whose CA is not set yet, calibrate failed with
    # "cannot start the app: ca_file ''": it needs only the metering
    r = repl()
    r.wait()
    r.run("import bc")
    assert "saved" in r.run("bc.set('server_url', 'https://headend.example:8443')")
    assert "cannot start the app: ca_file" in r.run("bc.status()")    # the fix to make
    out = r.run("bc.calibrate(230.0 * 1.02, 1500 / 0.95 / 230 * 0.98)")
    assert "saved; takes effect after a restart" in out, out
    cfg = on_flash(tmp_path)
    assert cfg["v_cal"] == pytest.approx(1.02, abs=0.002)
    assert cfg["server_url"] == "https://headend.example:8443"      # the head-end kept
    assert "cannot start the app: ca_file" in r.run("bc.status()")
    r.close()
    no_traceback(r)


def test_app_runs_then_ctrl_c_leaves_a_usable_repl(repl, tmp_path):
    """The unix port has no aiorepl (not on PyPI): main.py runs the app; Ctrl-C stops it
    cleanly and the REPL works on the app's last state."""
    r = repl("-i", str(runner.FIRMWARE / "main.py"))
    r.wait("app running")
    r.child.expect_exact("import bc for field commands")
    time.sleep(2.5)                                     # a reading or two
    r.child.sendcontrol("c")
    r.wait("app stopped (Ctrl-C)")
    r.wait()
    out = r.run("bc.status()")
    assert "app        stopped" in out
    assert " V " in out and "reading    none yet" not in out, out
    assert "report_s = 7 saved" in r.run("bc.set('report_s', 7)")
    assert on_flash(tmp_path)["report_s"] == 7
    assert (tmp_path / "state" / "energy.1").exists() or list((tmp_path / "state").glob("energy*"))
    r.close()
    no_traceback(r)


AIOREPL_PROMPT = "--> "


def _import_wh(status):
    """The live import register: as saved, plus the unsaved energy when there is some."""
    total = 0.0
    for x in status.splitlines():
        if x.strip().startswith(("energy Wh", "unsaved Wh")):
            total += float(x.split("import_wh")[1].split()[0])
    return total


@pytest.mark.parametrize("interpreter", ["board"])
def test_aiorepl_works_while_the_app_meters_on_the_board(repl, tmp_path, interpreter):
    """main.py with micropython-lib's aiorepl (from the vendored source, lab/board_build.py)
    on the board interpreter: the REPL answers while the app keeps metering, on the paced sim
    board (a `board` override: samples at the real rate), and no sample block is lost."""
    if not (runner.BOARD_LIB / "aiorepl.py").is_file():
        if os.environ.get("CI"):
            pytest.fail("CI is set and aiorepl was not installed by make venv")
        pytest.skip("aiorepl not installed: make venv copies it from the MicroPython source")
    override = tmp_path.parent / (tmp_path.name + "-board")
    override.mkdir()
    (override / "board.py").write_text("from paced_host import make  # noqa: F401\n")
    r = repl("-i", str(runner.FIRMWARE / "main.py"), interpreter=interpreter,
             extra=[runner.BOARD_LIB, override, runner.ROOT / "host_tests" / "mp_scripts"])
    r.wait("app running")
    r.wait("Starting asyncio REPL")

    def type_(line):
        r.child.sendline(line)
        r.wait(line + "\r\n")                   # the terminal's echo (after any old prompt)
        r.wait(AIOREPL_PROMPT)
        out = r.child.before.replace("\r\n", "\n")
        return out.rsplit(line + "\n", 1)[-1]   # aiorepl echoes the line once more

    type_("import bc")
    for _ in range(40):                          # the first reading closes after a second
        first = type_("bc.status()")
        if "reading    none yet" not in first:
            break
        time.sleep(0.25)
    assert "app        running" in first and " V " in first, first
    assert "bc: report_s = 7 saved and applied" in type_("bc.set('report_s', 7)")
    assert on_flash(tmp_path)["report_s"] == 7
    out = type_("bc.calibrate(230.0 * 1.02, 1500 / 0.95 / 230 * 0.98)")
    assert "saved; takes effect after a restart" in out, out
    assert on_flash(tmp_path)["v_cal"] == pytest.approx(1.02, abs=0.002)
    later = type_("bc.status()")
    assert "app        running" in later
    assert _import_wh(later) > _import_wh(first)     # metering went on meanwhile
    assert "board      0 overruns" in later, later   # and missed no block
    r.child.terminate(force=True)
    no_traceback(r)


def test_safe_mode_and_a_bad_config_leave_the_repl(repl, tmp_path):
    r = repl("-i", str(runner.FIRMWARE / "main.py"), env_extra={"BC_SAFE_MODE": "1"})
    r.wait("safe mode: the app is not started")
    r.wait()
    assert "report_s" in r.run("bc.config()")
    r.close()
    no_traceback(r)

    (tmp_path / "config.json").write_text("{not json")
    r = repl("-i", str(runner.FIRMWARE / "main.py"))
    r.wait("the app is not started; fix the config")
    r.wait()
    out = r.run("bc.set('report_s', 4)")                # recovers from the damaged file
    assert "starting from the defaults" in out and "report_s = 4 saved" in out
    assert on_flash(tmp_path)["report_s"] == 4
    r.close()
    no_traceback(r)
