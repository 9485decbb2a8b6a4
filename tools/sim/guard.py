"""What keeps `make sim` to itself: one copy per state directory (a lock file), a head-end
port that stays the same between runs, and the processes it starts, which end with it
whatever ends it (Ctrl-C, SIGTERM, a closed terminal, or one of them dying)."""

import ctypes
import errno
import fcntl
import os
import signal
import socket
import subprocess

import click

PR_SET_PDEATHSIG = 1


class Lock:
    """An exclusive flock on STATE/sim.lock, held while `make sim` runs. The kernel drops it
    when the process ends, however it ends, so a stale file never blocks a new run; the pid
    written in it only makes the refusal say who holds it."""

    def __init__(self, state_dir):
        self.path = os.path.join(str(state_dir), "sim.lock")
        self.fd = None

    def acquire(self):
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            holder = os.read(fd, 32).decode(errors="replace").strip() or "?"
            os.close(fd)
            if exc.errno not in (errno.EAGAIN, errno.EACCES):
                raise
            raise click.ClickException(
                "make sim is already running with %s (pid %s): one copy at a time shares "
                "its database and the meter's flash. Stop it first (Ctrl-C in its terminal, "
                "or kill %s)." % (os.path.dirname(self.path), holder, holder)) from None
        os.ftruncate(fd, 0)
        os.write(fd, b"%d\n" % os.getpid())
        self.fd = fd
        return self

    def release(self):
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


def check_port(port, what="the head-end", option="SIM_PORT"):
    """The port itself or a clear error: never silently another one, since the URL, the
    printed CLI command and .sim/env would all change between runs."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError as exc:
            raise click.ClickException(
                "port %d on 127.0.0.1 is taken (%s), so %s cannot listen there: stop what "
                "holds it, or choose another port with `make sim %s=...` (--port)"
                % (port, exc.strerror or exc, what, option)) from None
    return port


def _die_with_parent(sig):
    """preexec_fn: the child gets `sig` when `make sim` dies, even by SIGKILL (Linux)."""
    def setup():
        try:
            ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0)
        except (OSError, AttributeError):
            pass
    return setup


class Children:
    """The processes `make sim` started, each with the signal that stops it cleanly. They run
    in their own session, so a closed terminal's SIGHUP or a Ctrl-C reaches `make sim` alone,
    and it stops them in reverse order of starting (the meter first, the broker last)."""

    def __init__(self):
        self.procs = []          # [(name, Popen, stop signal, log path or None)]
        self.stopping = False

    def start(self, name, cmd, stop_sig=signal.SIGTERM, log=None, **kw):
        proc = subprocess.Popen(cmd, start_new_session=True,
                                preexec_fn=_die_with_parent(stop_sig), **kw)
        self.procs.append((name, proc, stop_sig, log))
        return proc

    def adopt(self, name, proc, stop_sig=signal.SIGTERM, log=None):
        """A process started elsewhere (the broker, by headend.broker)."""
        self.procs.append((name, proc, stop_sig, log))
        return proc

    def died(self):
        """(name, returncode, log) of the first child that ended on its own, or None."""
        if self.stopping:
            return None
        for name, proc, _sig, log in self.procs:
            # a meter may finish by itself (status 0: --seconds offline, a stop op)
            if proc.poll() is not None and (proc.returncode or name != "meter"):
                return name, proc.returncode, log
        return None

    def stop_all(self, timeout=10.0):
        self.stopping = True
        for _name, proc, sig, _log in reversed(self.procs):
            if proc.poll() is None:
                try:
                    proc.send_signal(sig)
                except ProcessLookupError:
                    pass
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def describe_exit(returncode):
    if returncode < 0:
        try:
            return "killed by %s" % signal.Signals(-returncode).name
        except ValueError:
            return "killed by signal %d" % -returncode
    return "exit status %d" % returncode


def stop_signals(handler):
    """SIGTERM and SIGHUP (a closed terminal) end `make sim` the way Ctrl-C does. SIGINT too,
    explicitly: Python leaves it ignored when it starts with SIGINT ignored (a job a shell put
    in the background), and then Ctrl-C or `kill -INT` would not stop it."""
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, handler)


def ignore_signals():
    """While stopping: a second Ctrl-C (or the SIGHUP that follows a closed terminal) must
    not cut the clean-up short and leave a child running."""
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN)
