"""Shared fixtures, and the lane rule: every test carries exactly one lane marker (unit,
system, root or slow; pyproject.toml), set by its module's `pytestmark`.

Interpreters: a test parametrized over runner.INTERPRETERS (the `interpreter` fixture, or a
fixture of its own) runs on "micropython", "cpython" and "board" (32-bit, float32). Without
the board binary its "board" cases skip with the reason; with CI set they fail instead. The
fast lane (BC_FAST) keeps only a slice of the board cases (BOARD_FAST_SLICE), and runs each
module's first interpreter case on CPython and the rest on MicroPython (fast_interpreter_turns)."""

import atexit
import os
import sys

import pytest
from hypothesis import HealthCheck, settings

from lab import runner

os.environ.setdefault("COLUMNS", "200")   # rich tables as wide as a real terminal, under xdist too

# Hypothesis's timing checks say how loaded the machine is, not whether the code is right: a
# CI machine or a busy desktop failed "input generation is slow" (test_config_store) at a
# load of 14. Tests' own @settings still set their examples.
settings.register_profile("backchannel", deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("backchannel")

LANES = ("unit", "system", "root", "slow")


def lanes_of(item):
    return [m.name for m in item.iter_markers() if m.name in LANES]


# test modules whose "board" cases the fast lane keeps: the float32 time and arithmetic
# checks, plus a few quick firmware modules (see `time make test-fast`)
BOARD_FAST_SLICE = {"test_board_time.py", "test_boards.py", "test_config_store.py",
                    "test_inbox.py", "test_long_run.py"}


def on_board(item):
    spec = getattr(item, "callspec", None)
    return spec is not None and "board" in spec.params.values()


def pytest_addoption(parser):
    parser.addoption("--store", choices=("sqlite", "postgresql"),
                     default=os.environ.get("BC_STORE", "sqlite"),
                     help="the head-end tests' store (host_tests/store_harness.py)")
    parser.addoption("--group-modules", action="store_true",
                     help="run each test module's tests on one xdist worker (lab.lanes)")
    parser.addoption("--only-modules", default=None, metavar="NAMES",
                     help="collect only these test modules (comma-separated file names: "
                          "lab.lanes gives each lane its own)")


def pytest_ignore_collect(collection_path, config):
    """--only-modules: a set looked up once per file (pytest's --ignore, one per module left
    out, cost each worker 0.6 s of matching while collecting the unit lane)."""
    names = config.getoption("--only-modules")
    if names and collection_path.suffix == ".py" and collection_path.name.startswith("test_"):
        if not hasattr(config, "bc_only_modules"):
            config.bc_only_modules = set(names.split(","))
        return collection_path.name not in config.bc_only_modules or None
    return None


def pytest_configure(config):
    os.environ["BC_STORE"] = config.getoption("--store")     # read by store_harness


def pytest_unconfigure(config):
    """BC_QUICK_EXIT (the unit lane, lab.lanes): an xdist worker that has reported its tests
    leaves without tearing down its interpreter. Freeing every module and object of a worker
    that imported the whole lane took 1.5-2.5 s at the end of each run; its temporary files
    are in the lane's own scratch folder, which the lane removes. Only a worker: a pytest that
    a test starts (test_lanes) inherits the environment and must keep its exit status."""
    if hasattr(config, "workerinput") and os.environ.get("BC_QUICK_EXIT") == "1":
        atexit.register(exit_now)      # registered last, so run first


def exit_now():
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def pytest_runtest_teardown(item):
    os.environ.pop("BACKCHANNEL_DB_KEY", None)     # store_harness sets it per test


def pytest_runtest_setup(item):
    if on_board(item) and not runner.available("board"):
        if os.environ.get("CI"):
            pytest.fail("CI is set: " + runner.board_missing_reason(), pytrace=False)
        pytest.skip(runner.board_missing_reason())


@pytest.hookimpl(tryfirst=True)    # before xdist's, which reads the xdist_group marks
def pytest_collection_modifyitems(config, items):
    if os.environ.get("BC_FAST") == "1":
        slow_board = [item for item in items
                      if on_board(item) and item.path.name not in BOARD_FAST_SLICE]
        if slow_board:
            config.hook.pytest_deselected(items=slow_board)
            gone = set(slow_board)
            items[:] = [item for item in items if item not in gone]
        _deselect(config, items, fast_interpreter_turns(items))
        _deselect(config, items, fast_case_spread(items))
    if config.getoption("--group-modules"):
        group_by_module(items)
    _deselect_e2e(config, items)
    group_e2e_by_lab(items)
    wrong = ["%s: %s" % (item.nodeid, lanes_of(item) or "no lane") for item in items
             if len(lanes_of(item)) != 1]
    if wrong:
        raise pytest.UsageError("every test needs exactly one lane marker (%s):\n  %s"
                                % (", ".join(LANES), "\n  ".join(wrong)))


def _deselect(config, items, gone):
    if gone:
        config.hook.pytest_deselected(items=gone)
        drop = set(gone)
        items[:] = [item for item in items if item not in drop]


TURNS = ("micropython", "cpython")


def fast_interpreter_turns(items):
    """The fast lane's cut: each run of a test that make test repeats per interpreter goes to
    one interpreter. In each module one such run goes to CPython (the first that is not a
    property test, whose many examples cost most on CPython) and every other to MicroPython,
    so each module still runs on both; MicroPython is the meter's own interpreter, and it
    runs the firmware several times faster than CPython does (a CPython run cost 0.42 CPU-s
    on average, a MicroPython run 0.17)."""
    modules = {}
    for item in items:
        spec = getattr(item, "callspec", None)
        if spec is None:
            continue
        interp = [v for v in spec.params.values() if v in TURNS]
        if len(interp) != 1:
            continue
        others = tuple(sorted((k, repr(v)) for k, v in spec.params.items() if v not in TURNS))
        key = (getattr(item, "originalname", item.name), others)
        modules.setdefault(item.path, {}).setdefault(key, []).append((interp[0], item))
    gone = []
    for runs_by_case in modules.values():
        cases = list(runs_by_case.values())
        plain = [k for k, runs in enumerate(cases) if not is_property_test(runs[0][1])]
        on_cpython = plain[0] if plain else 0
        for k, runs in enumerate(cases):
            keep = "cpython" if k == on_cpython else "micropython"
            gone += [item for interp, item in runs if interp != keep]
    return gone


def is_property_test(item):
    return getattr(getattr(item, "obj", None), "is_hypothesis_test", False)


# the fast lane's cap on a test function's data cases (beyond the interpreter), and the modules
# it keeps whole: test_mpy_cross compiles each firmware module, which is what an edit breaks
FAST_CASES = 3
FAST_EVERY_CASE = {"test_mpy_cross.py"}


def fast_case_spread(items):
    """The fast lane's second cut: a test function with more than FAST_CASES data cases
    keeps its first, middle and last (make test runs them all)."""
    functions = {}
    for item in items:
        if getattr(item, "callspec", None) is not None and item.path.name not in FAST_EVERY_CASE:
            functions.setdefault((item.path, getattr(item, "originalname", item.name)),
                                 []).append(item)
    gone = []
    for cases in functions.values():
        if len(cases) > FAST_CASES:
            keep = {round(k * (len(cases) - 1) / (FAST_CASES - 1)) for k in range(FAST_CASES)}
            gone += [case for k, case in enumerate(cases) if k not in keep]
    return gone


def group_by_module(items):
    """--group-modules (the unit lane, lab.lanes): each module's tests go to one worker
    (--dist loadgroup), unless a test names its own group. A module's fixtures (a MicroPython
    driver's run, a head-end) then run once, not once per worker that drew one of its tests:
    the unit lane took 203 s instead of 267-299 s, the fast lane 89 CPU-s instead of 127."""
    for item in items:
        if not any(m.name == "xdist_group" for m in item.iter_markers()):
            item.add_marker(pytest.mark.xdist_group(item.path.stem))


def env_param(item):
    spec = getattr(item, "callspec", None)
    return spec.params.get("env") if spec is not None else None


def group_e2e_by_lab(items):
    """The e2e scenarios share one lab per transport (the session fixture `env`): on xdist
    workers (the root lane, --dist loadgroup) each transport's scenarios go to one worker,
    which sets that lab up once, while the other labs run on the other workers."""
    for item in items:
        if env_param(item):
            item.add_marker(pytest.mark.xdist_group("e2e-" + env_param(item)))


def _deselect_e2e(config, items):
    """The e2e scenarios run over xmpp and email only where e2e_env.selected says so."""
    if not any(env_param(item) for item in items):
        return
    import e2e_env
    gone = [item for item in items if env_param(item) and not e2e_env.selected(
        getattr(item, "originalname", item.name), env_param(item))]
    if gone:
        config.hook.pytest_deselected(items=gone)
        drop = set(gone)
        items[:] = [item for item in items if item not in drop]


@pytest.fixture(autouse=True)
def close_test_headends():
    """After each test, the in-process head-ends it made (headend_harness): closed, so their
    database connections do not wait for the garbage collector. Those of a module's fixture
    were made before this test began, and stay."""
    harness = sys.modules.get("headend_harness")
    mark = len(harness.OPEN) if harness else 0
    yield
    harness = sys.modules.get("headend_harness")
    if harness:
        harness.close_since(mark)


@pytest.fixture(params=runner.INTERPRETERS)
def interpreter(request):
    return request.param


@pytest.fixture(scope="session", params=("http", "mqtt", "xml", "soap", "wbxml", "xmpp", "email"))
def env(request, tmp_path_factory):
    """The end-to-end lab (host_tests/e2e_env.py), shared by the test_e2e*.py modules: over
    each transport with JSON, then over HTTP in each other encoding (issue 17), then over
    XMPP and email (their scenarios: e2e_env.MESSAGING_SCENARIOS)."""
    import e2e_env
    yield from e2e_env.make_env(request.param, tmp_path_factory)
