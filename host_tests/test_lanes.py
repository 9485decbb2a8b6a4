"""The house rules the layout depends on: one lane marker per test, tools/ never importing
host_tests/, firmware paths built in one place, and the ruff configuration in force."""

import ast
import functools
import os
import subprocess
import sys
from pathlib import Path

import pytest

from lab import runner, second_try

# one xdist worker for the module: the house rules share parsed() syntax trees
pytestmark = [pytest.mark.unit, pytest.mark.xdist_group("house_rules")]

ROOT = runner.ROOT
HOST_TEST_MODULES = {p.stem for p in (ROOT / "host_tests").rglob("*.py")}


def test_every_collected_test_has_exactly_one_lane(request):
    # conftest refuses such a collection outright; this checks the rule still holds for
    # every test of this run, and that the lane names are the ones pyproject declares
    lanes = {}
    for item in request.session.items:
        names = [m.name for m in item.iter_markers() if m.name in ("unit", "system", "root",
                                                                   "slow")]
        assert len(names) == 1, (item.nodeid, names)
        lanes[names[0]] = lanes.get(names[0], 0) + 1
    assert lanes.get("unit", 0) > 0


def test_every_test_module_names_its_lane():
    """A lane collects only the modules that name it (lab.lanes.lane_modules): a module that
    named none would never run in any lane."""
    from lab.lanes import LANES, lane_modules

    named = set().union(*(lane_modules(lane) for lane in LANES))
    every = {"host_tests/" + p.name for p in (ROOT / "host_tests").glob("test_*.py")}
    assert every - named == set()


@functools.cache
def parsed(path):
    """A module's syntax tree, parsed once for all the house rules below."""
    return ast.parse(path.read_text(), str(path))


@functools.cache
def nodes(path):
    """A module's import, from-import, attribute and class nodes, from one walk of its tree
    (walking each tree once per rule cost seconds)."""
    kinds = (ast.Import, ast.ImportFrom, ast.Attribute, ast.ClassDef)
    found = {kind: [] for kind in kinds}
    for node in ast.walk(parsed(path)):
        if isinstance(node, kinds):
            found[type(node)].append(node)
    return found


# the rules that read every module's tree share one worker, and so its parsed trees
HOUSE_RULES = pytest.mark.xdist_group("house_rules")


def bare_pytest_env():
    """The environment for a nested pytest on a tiny test tree: without the installed plugins
    (hypothesis, schemathesis, xdist), whose import costs seconds and is not under test."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("CI", "BC_FAST", second_try.FILE_ENV)}
    env["PYTEST_DISABLE_PLUGIN_AUTOLOAD"] = "1"
    return env


def test_a_test_without_a_lane_is_refused(tmp_path):
    (tmp_path / "conftest.py").write_text((ROOT / "host_tests" / "conftest.py").read_text())
    (tmp_path / "test_unmarked.py").write_text("def test_x():\n    pass\n")
    p = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                        "--rootdir", str(tmp_path), "-c", "/dev/null", str(tmp_path)],
                       capture_output=True, text=True, timeout=120, env=bare_pytest_env())
    assert p.returncode != 0
    assert "every test needs exactly one lane marker" in p.stdout + p.stderr
    assert "test_unmarked.py::test_x: no lane" in p.stdout + p.stderr


def _run_without_board(tmp_path, ci):
    """A test on the `interpreter` fixture, with conftest told the board binary is absent."""
    conftest = (ROOT / "host_tests" / "conftest.py").read_text()
    (tmp_path / "conftest.py").write_text(
        conftest + "\nfrom pathlib import Path\nrunner.BOARD_DIR = Path('/nonexistent')\n")
    (tmp_path / "test_interp.py").write_text(
        "import pytest\npytestmark = pytest.mark.unit\n\n"
        "def test_x(interpreter):\n    pass\n")
    env = bare_pytest_env()
    if ci:
        env["CI"] = "true"
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-rsE", "-p", "no:cacheprovider",
                           "--rootdir", str(tmp_path), "-c", "/dev/null", str(tmp_path)],
                          capture_output=True, text=True, timeout=120, env=env)


def test_board_cases_skip_with_the_reason_when_the_binary_is_absent(tmp_path):
    p = _run_without_board(tmp_path, ci=False)
    assert p.returncode == 0, p.stdout
    assert "2 passed, 1 skipped" in p.stdout.replace(", 1 warning", "")
    assert "SKIPPED" in p.stdout and "board interpreter" in p.stdout and "make venv" in p.stdout


def test_board_cases_fail_in_ci_when_the_binary_is_absent(tmp_path):
    p = _run_without_board(tmp_path, ci=True)
    assert p.returncode == 1, p.stdout
    assert "2 passed, 1 error" in p.stdout.replace(", 1 warning", "")
    assert "CI is set: the board interpreter" in p.stdout


def _imports(path):
    for node in nodes(path)[ast.Import]:
        yield from (a.name.split(".")[0] for a in node.names)
    for node in nodes(path)[ast.ImportFrom]:
        if node.module and not node.level:
            yield node.module.split(".")[0]


@HOUSE_RULES
def test_tools_never_import_host_tests():
    offenders = []
    for path in (ROOT / "tools").rglob("*.py"):
        bad = sorted(set(_imports(path)) & (HOST_TEST_MODULES | {"host_tests"}))
        if bad:
            offenders.append("%s imports %s" % (path.relative_to(ROOT), ", ".join(bad)))
    assert not offenders


def test_sys_path_edits_stay_at_a_handful():
    needle = "sys." + "path"
    hits = []
    for folder in ("tools", "host_tests"):
        for path in (ROOT / folder).rglob("*"):
            if path.is_file() and path.suffix in (".py", "") and "__pycache__" not in path.parts:
                text = path.read_text(errors="replace")
                hits += ["%s:%d" % (path.relative_to(ROOT), n)
                         for n, line in enumerate(text.splitlines(), 1) if needle in line]
    assert len(hits) <= 5, hits


def test_only_the_runner_builds_a_firmware_path():
    for folder in ("tools", "host_tests", "boards", "firmware"):
        for path in (ROOT / folder).rglob("*.py"):
            if path in (ROOT / "tools" / "lab" / "runner.py", Path(__file__)):
                continue
            text = path.read_text()
            assert 'MICROPYPATH"] =' not in text and "MICROPYPATH=" not in text, path
    assert "MICROPYPATH" not in (ROOT / "Makefile").read_text()


def test_tools_top_level_stays_small():
    entries = [p.name for p in (ROOT / "tools").iterdir() if p.name != "__pycache__"]
    assert len(entries) <= 10, entries


def test_no_two_modules_share_a_name_unless_the_same_role():
    # the same role: package entry points, and the fakes of MicroPython's own modules; a
    # link to a file is that file (the WBXML tokens both ends import)
    allowed = {"__init__", "__main__", "cli", "conftest"}
    seen = {}
    for folder in ("firmware", "boards", "tools", "host_tests"):
        for path in (ROOT / folder).rglob("*.py"):
            seen.setdefault(path.stem, set()).add(str(path.resolve().relative_to(ROOT)))
    dupes = {k: v for k, v in seen.items() if len(v) > 1 and k not in allowed}
    assert not dupes


def test_ruff_is_clean():
    p = subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache", str(ROOT)],
                       capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert p.returncode == 0, p.stdout[-3000:]


@HOUSE_RULES
def test_no_private_names_cross_a_module_boundary():
    """Seams at natural boundaries: no `from X import _name`, and no `X._name` on a module X
    of the project, in firmware/, boards/ and tools/."""
    project = ({p.stem for p in (ROOT / "firmware").glob("*.py")} |
               {p.stem for p in (ROOT / "boards").glob("*.py")} | {"boards"} |
               {p.name for p in (ROOT / "tools").iterdir() if p.is_dir()})
    offenders = []
    for folder in ("firmware", "boards", "tools"):
        for path in (ROOT / folder).rglob("*.py"):
            found = nodes(path)
            for node in found[ast.ImportFrom]:
                if node.module and not node.level and node.module.split(".")[0] in project:
                    offenders += ["%s: from %s import %s" % (path.name, node.module, a.name)
                                  for a in node.names if a.name.startswith("_")]
            modules = {(a.asname or a.name) for node in found[ast.Import] for a in node.names
                       if a.name.split(".")[0] in project}
            for node in found[ast.Attribute]:
                if (isinstance(node.value, ast.Name)
                        and node.value.id in modules and node.attr.startswith("_")
                        and not node.attr.startswith("__")):
                    offenders.append("%s: %s.%s" % (path.name, node.value.id, node.attr))
    assert not offenders


def test_interpreter_differences_live_in_mpshim():
    """MicroPython-or-CPython questions are answered in firmware/mpshim.py alone: no other
    firmware or board module probes the interpreter or writes its own fallback."""
    import re

    probes = re.compile(r"import micropython|from micropython import|sys\.implementation|"
                        r"time\.ticks_|time\.sleep_ms|asyncio\.sleep_ms|sys\.print_exception|"
                        r"from (u?time|u?asyncio) import .*(ticks|sleep_ms)|"
                        r"import traceback|import mpshim as|\"u(socket|struct|binascii|json)\"")
    hits = []
    for folder in ("firmware", "boards"):
        for path in sorted((ROOT / folder).glob("*.py")):
            if path.name in ("mpshim.py", "harmonics_host.py"):  # the shim; host-only numpy
                continue
            for n, line in enumerate(path.read_text().splitlines(), 1):
                code = line.split("#", 1)[0]
                if probes.search(code):
                    hits.append("%s:%d: %s" % (path.relative_to(ROOT), n, line.strip()))
    assert not hits


@HOUSE_RULES
def test_firmware_classes_are_collaborators_not_mixins():
    """A firmware class inherits from no other project class (exceptions aside): a helper is
    an object it holds, with its own state, not a mixin working on the host's attributes."""
    classes = {}
    for path in (ROOT / "firmware").glob("*.py"):
        for node in nodes(path)[ast.ClassDef]:
            classes[node.name] = [b.id if isinstance(b, ast.Name) else
                                  getattr(b, "attr", "?") for b in node.bases]
    mixed = {name: bases for name, bases in classes.items()
             if any(b in classes and "Error" not in b and "Exception" not in b
                    for b in bases)}
    assert not mixed


def test_the_fast_lane_runs_each_module_on_both_interpreters_mostly_micropython():
    from types import SimpleNamespace as Item

    from conftest import fast_interpreter_turns

    def item(module, fn, interp, **cases):
        prop = Item(is_hypothesis_test=module == "test_b.py" and fn == "t_one")
        return Item(path=Path(module), originalname=fn, name=fn, obj=prop,
                    callspec=Item(params=dict(cases, interpreter=interp)))
    items = [item(m, fn, i, **cases) for m in ("test_a.py", "test_b.py")
             for fn, cases in (("t_one", {}), ("t_cases", {"n": 1}), ("t_cases", {"n": 2}),
                               ("t_cases", {"n": 3}))
             for i in ("micropython", "cpython", "board")]
    items.append(Item(path=Path("test_c.py"), originalname="plain", name="plain"))
    gone = fast_interpreter_turns(items)
    kept = [i for i in items if i not in gone]
    # each (function, case) once among CPython and MicroPython: the module's first on CPython
    # (unless it is a property test: test_b's t_one), the others on MicroPython; board cases
    # are not its cut
    for m in ("test_a.py", "test_b.py"):
        runs = [(i.originalname, i.callspec.params.get("n"), i.callspec.params["interpreter"])
                for i in kept if str(i.path) == m and i.callspec.params["interpreter"] != "board"]
        on_cpython = [(f, n) for f, n, i in runs if i == "cpython"]
        assert on_cpython == ([("t_one", None)] if m == "test_a.py" else [("t_cases", 1)])
        assert sorted((f, n or 0) for f, n, _ in runs) == [
            ("t_cases", 1), ("t_cases", 2), ("t_cases", 3), ("t_one", 0)]
    assert len([i for i in kept if getattr(i, "callspec", None) and
                i.callspec.params["interpreter"] == "board"]) == 8
    assert items[-1] in kept


def test_lanes_spread_over_workers_unless_told_one_by_one(monkeypatch):
    from lab import lanes
    monkeypatch.setattr(lanes.os, "cpu_count", lambda: 2)
    monkeypatch.delenv("BC_SYSTEM_WORKERS", raising=False)
    monkeypatch.delenv("BC_UNIT_WORKERS", raising=False)
    assert lanes.workers("unit")[:4] == ["-n", "4", "--dist", "loadgroup"]
    assert lanes.workers("system")[:4] == ["-n", "3", "--dist", "loadfile"]
    assert lanes.workers("root")[:4] == ["-n", "2", "--dist", "loadgroup"]
    monkeypatch.setenv("BC_SYSTEM_WORKERS", "1")
    assert lanes.workers("system") == []
    assert lanes.workers("slow") == []


def test_each_e2e_labs_scenarios_share_one_worker():
    from types import SimpleNamespace as Item

    from conftest import group_e2e_by_lab

    class Scenario(Item):
        def add_marker(self, mark):
            self.marks.append(mark)
    items = [Scenario(callspec=Item(params={"env": env}), marks=[])
             for env in ("http", "mqtt", "http", "email")] + [Scenario(marks=[])]
    group_e2e_by_lab(items)
    groups = [[m.args[0] for m in i.marks if m.name == "xdist_group"] for i in items]
    assert groups == [["e2e-http"], ["e2e-mqtt"], ["e2e-http"], ["e2e-email"], []]
    assert all(isinstance(m, pytest.MarkDecorator) for i in items for m in i.marks)


def test_the_fast_lane_keeps_a_spread_of_each_functions_cases():
    from types import SimpleNamespace as Item

    from conftest import FAST_CASES, fast_case_spread

    def item(module, fn, n):
        return Item(path=Path(module), originalname=fn, name="%s[%d]" % (fn, n),
                    callspec=Item(params={"n": n}))
    many = [item("test_a.py", "t_many", n) for n in range(10)]
    few = [item("test_a.py", "t_few", n) for n in range(FAST_CASES)]
    compiles = [item("test_mpy_cross.py", "test_compiles", n) for n in range(10)]
    plain = Item(path=Path("test_b.py"), originalname="plain", name="plain")
    gone = fast_case_spread(many + few + compiles + [plain])
    gone_ids = {id(i) for i in gone}
    kept = [i.callspec.params["n"] for i in many if id(i) not in gone_ids]
    assert kept == [0, 4, 9] or kept == [0, 5, 9]
    assert not gone_ids & {id(i) for i in few + compiles + [plain]}


def test_a_lane_collects_its_folder_less_the_other_modules():
    from conftest import pytest_ignore_collect

    from lab.lanes import collect_only, lane_modules
    unit = lane_modules("unit")
    args = collect_only(unit)
    assert args[0] == "host_tests" and args[1].startswith("--only-modules=")

    class Config:
        def getoption(self, name):
            return args[1].split("=", 1)[1]

    config = Config()
    every = sorted((ROOT / "host_tests").glob("test_*.py"))
    kept = {"host_tests/" + p.name for p in every if not pytest_ignore_collect(p, config)}
    assert kept == set(unit) and len(kept) < len(every)
    assert pytest_ignore_collect(ROOT / "host_tests" / "fuzz_common.py", config) is None


def test_the_store_lane_takes_modules_that_build_the_head_end_through_a_helper():
    # test_attacks_protocol and _clock build theirs through protocol_site.py: they left the
    # postgresql lane unnoticed when the harness import moved there
    from lab.lanes import store_modules
    store = set(store_modules())
    assert {"host_tests/test_attacks_protocol.py", "host_tests/test_attacks_clock.py",
            "host_tests/test_tariff_renew.py", "host_tests/test_headend_billing.py"} <= store
    assert "host_tests/test_mpy_lane.py" not in store


FLAKY_MODULE = '''
import os
import pytest

pytestmark = pytest.mark.xdist_group("g")

def test_flaky():
    seen = os.path.join(os.environ["FLAKY_DIR"], "seen")
    if not os.path.exists(seen):
        open(seen, "w").close()
        assert False, "loses a race the first time"

def test_broken():
    assert os.environ.get("FIXED") == "1"

def test_fine():
    pass
'''


def _second_try(tmp_path, *select, workers=()):
    """lab.second_try.run on a tiny module: what it said, and the lane's exit status."""
    (tmp_path / "test_races.py").write_text(FLAKY_MODULE)
    pytest_cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                  "--rootdir", str(tmp_path), "-c", "/dev/null"]
    said = []
    rc = second_try.run([*pytest_cmd, "-p", "lab.second_try", *workers, *select],
                        pytest_cmd, dict(bare_pytest_env(), FLAKY_DIR=str(tmp_path),
                                         # as when this test runs on a lane's worker
                                         PYTEST_XDIST_WORKER="gw9"), tmp_path,
                        say=lambda line, flush: said.append(line))
    return rc, "\n".join(said)


def test_a_test_that_fails_once_passes_on_its_second_try_and_is_named_flaky(tmp_path):
    # on xdist workers with loadgroup, as the unit lane runs: its ids end in "@group"
    rc, said = _second_try(tmp_path, "test_races.py::test_flaky", "test_races.py::test_fine",
                           workers=("-p", "xdist.plugin", "-n", "2", "--dist", "loadgroup"))
    assert rc == 0, said
    assert "FLAKY" in said and "test_races.py::test_flaky" in said and "@g" not in said


def test_a_test_that_fails_twice_fails_the_lane(tmp_path):
    rc, said = _second_try(tmp_path, "test_races.py::test_broken", "test_races.py::test_fine")
    assert rc == 1 and "failed again: test_races.py::test_broken" in said, said
    assert "FLAKY" not in said


def test_a_lane_with_failures_in_too_many_modules_gets_no_second_try(tmp_path, monkeypatch):
    monkeypatch.setattr(second_try, "MODULES", 1)
    (tmp_path / "test_more.py").write_text("def test_no():\n    assert False\n")
    rc, said = _second_try(tmp_path, "test_races.py::test_flaky", "test_more.py")
    assert rc == 1 and said == ""


def test_a_lane_with_too_many_failures_gets_no_second_try(tmp_path, monkeypatch):
    monkeypatch.setattr(second_try, "TESTS", 1)
    rc, said = _second_try(tmp_path, "test_races.py")
    assert rc == 1 and said == ""


def test_each_module_runs_its_failed_tests_again_together(tmp_path):
    (tmp_path / "test_more.py").write_text(FLAKY_MODULE.replace('"seen"', '"seen-more"'))
    rc, said = _second_try(tmp_path, "test_races.py::test_flaky", "test_more.py::test_flaky",
                           "test_races.py::test_fine")
    assert rc == 0, said
    assert "test_races.py::test_flaky" in said.split("FLAKY")[1]
    assert "test_more.py::test_flaky" in said.split("FLAKY")[1]
