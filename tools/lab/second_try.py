"""A lane's second try: when a few tests fail, they run once more (each module's failed tests
in a pytest of their own), and the lane passes only if every one of them passes then. The
ones that needed it are printed as FLAKY, by name, so they are fixed rather than forgotten.

Why: the lanes start real brokers, databases, browsers and MicroPython boards on two busy
cores, and a test that waits on one of them can lose a race the code does not (CI lost three
whole runs to such tests, each fixed once seen). CPython's own test runner does the same
(`regrtest --rerun`). A test that fails because the code is wrong fails both times; a lane
where more than TESTS tests, or tests of more than MODULES modules, fail is broken, not
unlucky, and is not tried again.

Loaded into pytest as a plugin (`-p lab.second_try`), it writes the node id of each failed
test to the file BC_FAILED_FILE names (xdist's controller only, so once per test). lab.lanes
calls run() with the lane's pytest command and the command to run given node ids again.
"""

import os
import re
import subprocess
import tempfile

# more failures than these: a broken lane, reported as it is. A flaky module fixture (a
# server that did not start in time) fails every test of its module
TESTS = 30
MODULES = 2
FILE_ENV = "BC_FAILED_FILE"


_record_to = None


def pytest_configure(config):
    """Records in the process that reports (xdist's controller, or pytest without xdist);
    a worker passes its reports on to the controller. Not by PYTEST_XDIST_WORKER, which a
    pytest started by a test on a worker inherits."""
    global _record_to
    _record_to = None if hasattr(config, "workerinput") else os.environ.get(FILE_ENV)


def pytest_runtest_logreport(report):
    if _record_to and report.failed:
        with open(_record_to, "a") as f:
            f.write(node_id(report.nodeid) + "\n")


def node_id(reported):
    """The id to run a test by: xdist's loadgroup reports `path::test@group`."""
    return re.sub(r"@[^@\[\]/:]*$", "", reported)


def failed_ids(path):
    try:
        with open(path) as f:
            return list(dict.fromkeys(line.strip() for line in f if line.strip()))
    except OSError:
        return []


def run(cmd, again_cmd, env, cwd, again_env=None, say=print):
    """Runs `cmd`; when its failed tests are few (at most TESTS, in at most MODULES test
    modules), runs each module's failed tests once more with `again_cmd`, in one pytest per
    module (its fixtures once), in `again_env` (by default `env`). Returns pytest's exit
    status for the whole: 0 only if every failed test passed the second time."""
    rc, failed = _run_recording(cmd, env, cwd)
    modules = {}
    for test in failed:
        modules.setdefault(test.split("::")[0], []).append(test)
    if rc != 1 or not failed or len(failed) > TESTS or len(modules) > MODULES:
        return rc
    say("== %d failed; once more, by module: %s" % (len(failed), " ".join(failed)), flush=True)
    still = []
    for tests in modules.values():
        again_rc, again_failed = _run_recording([*again_cmd, "-p", "lab.second_try", *tests],
                                                again_env or env, cwd)
        if again_rc != 0:
            still += again_failed or tests
    if still:
        say("== failed again: %s" % " ".join(still), flush=True)
        return 1
    say("== FLAKY (failed, then passed the second time; fix it): %s" % " ".join(failed),
        flush=True)
    return 0


def _run_recording(cmd, env, cwd):
    """(exit status, node ids of the failed tests) of one pytest run with this plugin."""
    fd, path = tempfile.mkstemp(prefix="bc-failed-", suffix=".txt")
    os.close(fd)
    try:
        rc = subprocess.call(cmd, cwd=cwd, env=dict(env, **{FILE_ENV: path}))
        return rc, failed_ids(path)
    finally:
        os.unlink(path)
