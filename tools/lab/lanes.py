"""The test lanes: `make test` runs unit, system and root one after another, `make test-fast`
the unit lane alone, and each prints how long it took (CI shows where its time goes).

    python -m lab.lanes [--fast] LANE [LANE ...] [-- PYTEST ARGS]

A lane is a pytest marker (pyproject.toml); every test carries exactly one
(host_tests/test_lanes.py). Each lane runs on pytest-xdist workers (DIST below); --fast
(BC_FAST=1) runs property tests with a twentieth of their examples (host_tests/budget.py),
a slice of the board cases, and each module's first CPython-or-MicroPython run on CPython,
the others on MicroPython (host_tests/conftest.py): every module still runs on both. The
unit lane, fast or not, runs each module's tests on one worker (--group-modules), so a
module's fixtures run once.

The `postgresql` lane is a store lane: the unit tests that build a head-end
(host_tests/headend_harness.py) once more with PostgreSQL as its store (--store=postgresql),
on one private cluster the lane starts for its workers (BC_PG_URL) and removes. Without
PostgreSQL it is skipped, saying why (with CI set it fails instead).

Every lane gives a few failed tests a second try, and names them FLAKY if they pass then
(lab.second_try).
"""

import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

from lab import runner, second_try
from lab.runner import ROOT, VENV

# pytest's own plugins the suite uses, loaded by name: autoloading every installed plugin
# (schemathesis, anyio, ...) costs each xdist worker a second of imports
PLUGINS = ("-p", "xdist.plugin", "-p", "_hypothesis_pytestplugin")


# records the failed tests for their second try (lab.second_try)
SECOND_TRY = ("-p", "lab.second_try")


def pytest_cmd(marker, *options):
    return [sys.executable, "-m", "pytest", "-q", *PLUGINS, "-m", marker, *options]


def run_tests(cmd, again, env, extra):
    """A lane's pytest, with a second try for a few failed tests (lab.second_try), outside
    the fast lane's slicing, which could leave a lone test out. Not when the
    caller gave pytest arguments of its own: those pick what runs."""
    if extra:
        return subprocess.call(cmd, cwd=ROOT, env=env)
    again_env = {k: v for k, v in env.items() if k != "BC_FAST"}
    return second_try.run(cmd, again, env, ROOT, again_env=again_env)


def pytest_environment():
    """The lanes' pytest environment: plugins by name, and compiled bytecode (test modules
    rewritten by pytest, the head-end, the tools) cached under .venv, never in the tree, even
    where the shell sets PYTHONDONTWRITEBYTECODE (each worker compiled everything again)."""
    env = dict(os.environ, PYTEST_DISABLE_PLUGIN_AUTOLOAD="1",
               PYTHONPYCACHEPREFIX=str(VENV / "host-pycache"))
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    return env

LANES = ("unit", "system", "root", "slow")
STORE_LANES = ("postgresql",)
# uses the harness but starts clusters of its own (it stops one): the system lane runs it
OWN_CLUSTER = {"test_store_postgres.py"}


def lane_modules(lane):
    """The test modules that mark tests with `lane` (their pytestmark, or a test's own
    marker): a lane collects only these, so no worker imports the other lanes' modules
    (host_tests/test_lanes.py checks every module names a lane)."""
    return sorted("host_tests/" + p.name for p in (ROOT / "host_tests").glob("test_*.py")
                  if "mark.%s" % lane in p.read_text())


def collect_only(modules):
    """pytest's arguments to collect just `modules`: the test folder, and the modules' names
    for host_tests/conftest.py's --only-modules. Not the modules one by one: pytest 8 lists
    the whole folder once per file argument (about 20,000 nodes made for the unit lane's 107
    files, 3 CPU-s per worker); nor an --ignore per other module (0.6 s per worker)."""
    return ["host_tests", "--only-modules=" + ",".join(m.split("/")[-1] for m in modules)]


def store_modules():
    """The test modules that build their head-end with the harness (so on --store), directly
    or through a helper module that does (protocol_site.py)."""
    folder = ROOT / "host_tests"
    harness = {"headend_harness"} | {p.stem for p in folder.glob("*.py")
                                     if not p.name.startswith(("test_", "conftest"))
                                     and "headend_harness" in p.read_text()}
    uses = re.compile(r"^\s*(?:from|import) (%s)\b" % "|".join(sorted(harness)), re.M)
    return sorted("host_tests/" + p.name for p in folder.glob("test_*.py")
                  if p.name not in OWN_CLUSTER and uses.search(p.read_text()))


def run_postgresql_lane(extra):
    from headend import pg_server
    start = time.monotonic()
    reason = pg_server.missing_reason()
    if reason:
        print("== lane postgresql: %s: %s" % ("FAILED (CI is set)" if os.environ.get("CI")
                                              else "skipped", reason), flush=True)
        return (1 if os.environ.get("CI") else 5), time.monotonic() - start
    # in RAM where there is some: the lane leaves a schema per test, about 50,000 files and
    # 640 MB, which took 40 s to delete from the disk
    scratch = memory_scratch()
    if scratch:
        os.chmod(scratch, 0o711)        # PostgreSQL's own user passes through to its folder
    server = pg_server.temporary(fast=True, under=scratch).start()
    try:
        env = dict(pytest_environment(), BC_PG_URL=server.url())
        again = pytest_cmd("unit", "--store=postgresql", "-p", "no:cacheprovider")
        cmd = [*again, *SECOND_TRY, "-n", str(2 * (os.cpu_count() or 1)),
               *collect_only(store_modules()), *extra]
        rc = run_tests(cmd, again, env, extra)
    finally:
        pg_server.remove(server)
        if scratch:
            shutil.rmtree(scratch, ignore_errors=True)
    return rc, time.monotonic() - start


def memory_scratch():
    """A private directory in RAM (/dev/shm) for the unit lane's temporary files (and the
    postgresql lane's cluster), or None
    where there is none: its tests fsync flash records and databases thousands of times,
    and on a disk each fsync waits for it (nothing in the unit lane is about the disk)."""
    if not os.access("/dev/shm", os.W_OK):
        return None
    return tempfile.mkdtemp(prefix="bc-unit-", dir="/dev/shm")


# How each lane spreads over pytest-xdist workers. unit: two per core, since many unit tests
# mostly wait on MicroPython subprocesses (loadgroup: tests marked xdist_group share one
# worker, and so its cached runs; the unit lane groups each module, so its fixtures run once
# and its waits overlap with other workers' CPU: the fast lane 60 s on four workers, 67 s on
# three, 2026-12-07).
# system: one per core, each test module whole on one
# worker (its servers are module fixtures), every server on a free port. root: one per core;
# each e2e transport's scenarios on one worker, which sets its lab up once (conftest
# group_e2e_by_lab); every lab is a set of namespaces with a prefix of its own.
# The system lane's tests mostly wait on servers and meters (about one core of load with
# two workers): 302 passed in 9.2 min on three, 13 min on two, 20 min one by one.
# BC_<LANE>_WORKERS=N overrides (1: one by one, no xdist).
DIST = {"unit": ("loadgroup", 2), "system": ("loadfile", 1.5), "root": ("loadgroup", 1)}


def workers(lane):
    dist, per_core = DIST.get(lane, (None, 0))
    n = int(os.environ.get("BC_%s_WORKERS" % lane.upper(),
                           per_core * (os.cpu_count() or 1)))
    if dist is None or n < 2:
        return []
    return ["-n", str(n), "--dist", dist, "-p", "no:cacheprovider"]


def run_lane(lane, fast, extra):
    if runner.unix_mpy():   # the unix port's precompiled firmware, built once, not per worker
        runner.mpy_tree(runner.UNIX_ARCH)
    if lane == "postgresql":
        return run_postgresql_lane(extra)
    again = pytest_cmd(lane, "-p", "no:cacheprovider")
    cmd = [*pytest_cmd(lane), *SECOND_TRY, *collect_only(lane_modules(lane)),
           *workers(lane), *(["--group-modules"] if lane == "unit" else []), *extra]
    env = pytest_environment()
    if fast:
        env.setdefault("BC_FAST", "1")                # host_tests/budget.py
        env.setdefault("BC_FUZZ_EXAMPLES", "15")
        env.setdefault("BC_FUZZ_MP_EXAMPLES", "20")
        env.setdefault("BC_SCHEMA_EXAMPLES", "1")
    scratch = memory_scratch() if lane == "unit" else None
    if scratch:
        cmd += ["--basetemp", os.path.join(scratch, "pytest")]
        again += ["--basetemp", os.path.join(scratch, "again")]
        env["TMPDIR"] = scratch
        env["BC_QUICK_EXIT"] = "1"     # its workers skip interpreter teardown (conftest)
    start = time.monotonic()
    try:
        rc = run_tests(cmd, again, env, extra)
    finally:
        if scratch:
            shutil.rmtree(scratch, ignore_errors=True)
    return rc, time.monotonic() - start


def main(argv):
    fast = "--fast" in argv
    argv = [a for a in argv if a != "--fast"]
    extra = []
    if "--" in argv:
        k = argv.index("--")
        argv, extra = argv[:k], argv[k + 1:]
    lanes = argv or ["unit", "system", "root"]
    unknown = [lane for lane in lanes if lane not in LANES + STORE_LANES]
    if unknown:
        sys.stderr.write("lanes: unknown lane %s (one of %s)\n" % (
            ", ".join(unknown), ", ".join(LANES + STORE_LANES)))
        return 2
    results = []
    for lane in lanes:
        print("== lane %s" % lane, flush=True)
        rc, seconds = run_lane(lane, fast, extra)
        results.append((lane, rc, seconds))
        print("== lane %s: %s in %.0f s" % (lane, "passed" if rc in (0, 5) else "FAILED (%d)" % rc,
                                            seconds), flush=True)
    print("== lanes: " + ", ".join("%s %.0f s%s" % (lane, s, "" if rc in (0, 5) else " FAILED")
                                   for lane, rc, s in results))
    failed = [rc for _, rc, _ in results if rc not in (0, 5)]
    if failed:
        return failed[0]
    return 5 if all(rc == 5 for _, rc, _ in results) else 0   # 5: nothing collected at all


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
