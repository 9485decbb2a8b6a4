"""`make sim` guards itself (issue 13, item 4): Ctrl-C, SIGTERM and a closed terminal's SIGHUP
end the head-end and meter it started and free the port; a meter that dies is reported and
`make sim` exits 1; a second copy on the same state is refused; the head-end port is the
one asked for, run after run, and a taken port is a clear error, never another port."""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time

import pytest
from sim_process import Sim, alive, command_line, descendants, port_free, sandbox

from lab import processes
from sim import guard

pytestmark = pytest.mark.system


@pytest.fixture(scope="module")
def state(tmp_path_factory):
    return tmp_path_factory.mktemp("simguard") / ".sim"


@pytest.fixture(scope="module")
def port():
    return processes.free_port()


def _started(sim):
    sim.wait_reading()
    kids = descendants(sim.proc.pid)
    names = " ".join(command_line(p) for p in kids)
    assert "headend serve" in names and "meter_main.py" in names, names
    return kids


@pytest.mark.parametrize("sig", [signal.SIGHUP, signal.SIGTERM, signal.SIGINT],
                         ids=["hup", "term", "int"])
def test_a_stop_signal_ends_everything_it_started(state, port, sig):
    sim = Sim(state, port)
    try:
        kids = _started(sim)
        assert not port_free(port)
        env = (state / "env").read_text()
        assert "BACKCHANNEL_URL=https://127.0.0.1:%d\n" % port in env   # the same port each run
        sim.proc.send_signal(sig)
        assert sim.wait() == 0, sim.stderr()
        assert alive(kids) == [], [command_line(p) for p in alive(kids)]
        assert port_free(port)
        guard.Lock(state).acquire().release()        # the lock went with it
        assert "Traceback" not in sim.stderr()
    finally:
        sim.stop()


@pytest.mark.parametrize("name, match", [("meter", "meter_main.py"),
                                         ("head-end", "headend serve")])
def test_a_child_that_dies_is_reported_and_ends_make_sim(state, port, name, match):
    sim = Sim(state, port)
    try:
        kids = _started(sim)
        victim = [p for p in kids if match in command_line(p)]
        assert len(victim) == 1
        os.kill(victim[0], signal.SIGKILL)
        rc = sim.wait()
        assert rc == 1, sim.stderr()
        assert "the %s stopped (killed by SIGKILL)" % name in sim.stderr()
        assert "Traceback" not in sim.stderr()
        assert alive(kids) == []
        assert port_free(port)
    finally:
        sim.stop()


def test_a_second_copy_is_refused_and_a_taken_port_is_not_swapped(state, port, tmp_path):
    first = Sim(state, port)
    try:
        kids = _started(first)
        second = Sim(state, processes.free_port())
        assert second.wait() == 1
        assert "already running" in second.stderr() and "pid %d" % first.proc.pid \
            in second.stderr(), second.stderr()
        assert descendants(second.proc.pid) == []
        # another state, the same port: a clear message, not a head-end on another port
        third = Sim(tmp_path / "other", port)
        assert third.wait() == 1
        assert "port %d on 127.0.0.1 is taken" % port in third.stderr(), third.stderr()
        assert not (tmp_path / "other" / "env").exists()
        assert "Traceback" not in second.stderr() + third.stderr()
        # the first copy carried on through all of it
        assert first.proc.poll() is None and alive(kids) == kids
        first.wait_reading()
    finally:
        first.stop()


def test_a_port_taken_by_another_program_is_named(tmp_path):
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        taken = holder.getsockname()[1]
        sim = Sim(tmp_path / ".sim", taken)
        assert sim.wait() == 1
    assert "port %d on 127.0.0.1 is taken" % taken in sim.stderr()
    assert "SIM_PORT" in sim.stderr() and "Traceback" not in sim.stderr()


def test_make_sim_asks_for_the_same_port_every_run():
    """The Makefile passes a fixed port (SIM_PORT, 8580), so the printed URL and .sim/env
    stay valid from one run to the next."""
    out = subprocess.run(["make", "-n", "sim"], cwd=processes.ROOT, capture_output=True,
                         text=True, timeout=30).stdout
    line = [ln for ln in out.splitlines() if "-m sim" in ln][0]
    assert "--port 8580" in line and "--state .sim" in line


def test_the_lock_outlives_no_process(tmp_path):
    """A lock file left by a killed run does not block the next one (flock, not a pid
    file): only a live holder refuses."""
    holder = subprocess.Popen([sys.executable, "-c",
                               "from sim import guard; import sys, time; "
                               "guard.Lock(sys.argv[1]).acquire(); print('held', flush=True); "
                               "time.sleep(60)", str(tmp_path)],
                              stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    with pytest.raises(Exception) as refused:
        guard.Lock(tmp_path).acquire()
    assert "pid %d" % holder.pid in str(refused.value)
    holder.kill()
    holder.wait()
    deadline = time.monotonic() + 5
    while True:
        try:
            guard.Lock(tmp_path).acquire().release()
            break
        except Exception:
            assert time.monotonic() < deadline
            time.sleep(0.05)
    assert (tmp_path / "sim.lock").exists()     # the file stays; it holds nothing


def test_closing_its_terminal_ends_everything_it_started(tmp_path, port):
    """The real thing: `make sim` on a terminal (a pty, live tables) whose terminal closes."""
    import pexpect
    child = pexpect.spawn("make", ["sim", "SIM_PORT=%d" % port],
                          cwd=str(sandbox(tmp_path)), timeout=90, dimensions=(50, 150),
                          env=dict(os.environ, TERM="xterm"))
    kids = []
    try:
        # on a terminal: the live tables; the meter is running once a reading is shown
        child.expect("Vrms")
        kids = [p for p in descendants(child.pid) if "headend serve" in command_line(p)
                or "meter_main.py" in command_line(p)]
        assert len(kids) == 2
        child.ptyproc.fileobj.close()      # the terminal goes away: SIGHUP to its session
        deadline = time.monotonic() + 30
        while alive(kids) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert alive(kids) == [], [command_line(p) for p in alive(kids)]
        assert port_free(port)
        assert not (processes.ROOT / ".sim").exists()   # the sandbox's own state
    finally:
        if child.isalive():
            child.terminate(force=True)


def test_over_mqtt_sigterm_ends_the_broker_too(tmp_path):
    if shutil.which("mosquitto", path="/usr/sbin:/usr/bin") is None:
        pytest.skip("mosquitto is not installed")
    port = processes.free_port()
    sim = Sim(tmp_path / ".sim", port, transport="mqtt")
    try:
        kids = _started(sim)
        assert any("mosquitto" in command_line(p) for p in kids)
        sim.proc.send_signal(signal.SIGTERM)
        assert sim.wait() == 0, sim.stderr()
        assert alive(kids) == [], [command_line(p) for p in alive(kids)]
        assert port_free(port)
    finally:
        sim.stop()


def test_over_email_sigterm_ends_the_mail_server_too(tmp_path):
    from headend import mail_server

    if mail_server.missing():
        pytest.skip(mail_server.missing())
    port = processes.free_port()
    sim = Sim(tmp_path / ".sim", port, transport="email")
    try:
        sim.wait_reading()
        conf = json.loads((tmp_path / ".sim" / "headend-mail.json").read_text())
        assert not port_free(conf["mail_imap_port"])
        sim.proc.send_signal(signal.SIGTERM)
        assert sim.wait() == 0, sim.stderr()
        assert port_free(conf["mail_imap_port"]) and port_free(conf["mail_smtp_port"])
        assert port_free(port)
    finally:
        sim.stop()


def test_kill_9_of_make_sim_still_ends_what_it_started(tmp_path):
    """No clean-up code runs on SIGKILL: the children's parent-death signal stops them."""
    port = processes.free_port()
    sim = Sim(tmp_path / ".sim", port)
    try:
        kids = _started(sim)
        sim.proc.kill()
        sim.wait()
        deadline = time.monotonic() + 30
        while alive(kids) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert alive(kids) == [], [command_line(p) for p in alive(kids)]
        assert port_free(port)
        guard.Lock(tmp_path / ".sim").acquire().release()
    finally:
        for p in alive(kids):
            os.kill(p, signal.SIGKILL)
