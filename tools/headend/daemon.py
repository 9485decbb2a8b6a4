"""Starting and stopping the servers the project runs from its own private configs (the
MQTT broker, the IM server, the mail server): spawn, wait until a port accepts connections,
say why in one line when it does not, stop politely then firmly."""

import socket
import subprocess
import time
from pathlib import Path


class DaemonError(Exception):
    """One line for the user: what did not start, and the tail of its log."""


def start(argv, name, host, port, log, timeout=10.0, errlog=None):
    """Run argv (output appended to `log`); return the Popen once host:port accepts a
    connection. errlog: the file whose tail explains a failure (default: log)."""
    log = Path(log)
    with open(log, "ab") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL)
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise DaemonError("%s exited with %s: %s" % (name, proc.returncode,
                                                        tail(errlog or log)))
        try:
            socket.create_connection((host, port), timeout=0.5).close()
            return proc
        except OSError:
            pass
        if time.monotonic() > deadline:
            stop(proc)
            raise DaemonError("%s did not listen on %s:%d: %s" % (name, host, port,
                                                                  tail(errlog or log)))
        time.sleep(0.02)


def stop(proc, timeout=5.0):
    """SIGTERM (servers save their state), then SIGKILL after `timeout`."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout)


def tail(path, n=5):
    try:
        lines = Path(path).read_text(errors="replace").strip().splitlines()
    except OSError:
        return "(no log)"
    return " | ".join(lines[-n:]) or "(empty log)"
