"""`make sim` as a real process for the system tests (test_sim_guard.py, test_sim_scenario.py,
test_readme_update.py): `python -m sim` with its own state directory and port, stdout a pipe
(not a terminal, so it prints the meter's JSON lines), read on a thread."""

import json
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time

from lab import processes

SCENARIOS = processes.ROOT / "tools" / "sim" / "scenarios"


class Sim:
    def __init__(self, state, port, scenario=SCENARIOS / "normal.json", extra=(), cwd=None,
                 argv=None, transport="http", env=None):
        self.state, self.port = state, port
        self.argv = argv or [sys.executable, "-m", "sim", "--transport", transport,
                             "--state", str(state), "--port", str(port), *extra, str(scenario)]
        # its own session: the signals in these tests reach it alone, as `kill` would
        self.proc = subprocess.Popen(self.argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     stdin=subprocess.DEVNULL, text=True, cwd=cwd,
                                     env=env, start_new_session=True)
        self.lines, self.err = queue.Queue(), []
        threading.Thread(target=self._pump, args=(self.proc.stdout, self.lines.put),
                         daemon=True).start()
        threading.Thread(target=self._pump, args=(self.proc.stderr, self.err.append),
                         daemon=True).start()
        self.records = []

    @staticmethod
    def _pump(stream, put):
        for line in stream:
            put(line)

    def wait_for(self, predicate, timeout=60):
        """The first JSON record (after those seen) for which predicate is true."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            try:
                line = self.lines.get(timeout=0.2)
            except queue.Empty:
                if self.proc.poll() is not None and self.lines.empty():
                    raise AssertionError("make sim ended (%s): %s"
                                         % (self.proc.returncode, self.stderr())) from None
                continue
            try:
                record = json.loads(line)
            except ValueError:
                continue
            self.records.append(record)
            if predicate(record):
                return record
        raise AssertionError("timed out; make sim said: %s" % self.stderr())

    def wait_reading(self, timeout=60):
        return self.wait_for(lambda r: r.get("type") == "reading", timeout)

    def api(self):
        """An operator client for this sim's head-end (its token and CA from the state)."""
        import ssl

        import httpx
        info = json.loads((self.state / "sim.json").read_text())
        return httpx.Client(base_url="https://127.0.0.1:%d" % self.port, timeout=10,
                            headers={"Authorization": "Bearer " + info["token"]},
                            verify=ssl.create_default_context(
                                cafile=str(self.state / "pki" / "ca.pem")))

    def stderr(self):
        return "".join(self.err)

    def wait(self, timeout=30):
        rc = self.proc.wait(timeout=timeout)
        time.sleep(0.1)                          # let the stderr thread drain
        return rc

    def stop(self):
        """Ctrl-C, as a terminal sends it: to the whole process group (make and sim)."""
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGINT)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def descendants(pid):
    """Every process below pid (from /proc: ppid links)."""
    children = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open("/proc/%s/stat" % entry) as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        for c in children.get(todo.pop(), []):
            out.append(c)
            todo.append(c)
    return out


def command_line(pid):
    try:
        with open("/proc/%d/cmdline" % pid, "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def alive(pids):
    """The pids still running (zombies count as gone)."""
    out = []
    for p in pids:
        try:
            with open("/proc/%d/stat" % p) as f:
                if f.read().rsplit(")", 1)[1].split()[0] != "Z":
                    out.append(p)
        except OSError:
            pass
    return out


def port_free(port):
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


def sandbox(directory):
    """A checkout to run `make sim` in without touching the repository's own .sim: the
    Makefile, the venv and the source folders linked, the state (.sim) its own."""
    directory.mkdir(parents=True, exist_ok=True)
    for name in ("Makefile", "pyproject.toml", ".venv", "tools", "firmware", "boards"):
        if not (directory / name).exists():
            os.symlink(processes.ROOT / name, directory / name)
    return directory
