"""The lanes lean on pytest-xdist's `--dist loadgroup`: tests marked with one xdist_group run
on one worker (each e2e lab set up once, cached driver runs shared). pytest 9.2's
structured node ids silently undid that (pytest-dev/pytest-xdist#1386: no error, the tests
simply spread), so a pin bump that breaks it again fails here."""

import subprocess
import sys

import pytest
from test_lanes import bare_pytest_env

from lab.runner import ROOT

pytestmark = pytest.mark.system


def test_an_xdist_group_runs_on_one_worker(tmp_path):
    (tmp_path / "test_grouped.py").write_text(
        "import pytest\n\nG = pytest.mark.xdist_group('g')\n\n"
        + "".join("@G\ndef test_%d():\n    pass\n\n" % k for k in range(6)))
    p = subprocess.run([sys.executable, "-m", "pytest", "-v", "-p", "xdist.plugin", "-n", "2",
                        "--dist", "loadgroup", "-p", "no:cacheprovider", "--rootdir",
                        str(tmp_path), "-c", "/dev/null", str(tmp_path)],
                       capture_output=True, text=True, timeout=120, env=bare_pytest_env())
    assert p.returncode == 0, p.stdout[-2000:]
    ran = [line.split()[0] for line in p.stdout.splitlines() if " PASSED " in line]
    assert len(ran) == 6 and len(set(ran)) == 1, p.stdout[-2000:]
    assert "test_0@g" in p.stdout


def test_groups_the_conftest_adds_are_honoured():
    """The groups host_tests/conftest.py adds while collecting (the unit lane's one worker per
    module, each e2e lab's scenarios) only count if its hook runs before xdist's, which turns
    the marks into node-id suffixes: before `tryfirst` none of them grouped anything."""
    p = subprocess.run([sys.executable, "-m", "pytest", "-v", "-p", "xdist.plugin", "-n", "2",
                        "--dist", "loadgroup", "-p", "no:cacheprovider", "--group-modules",
                        "host_tests/test_faults_ledger.py", "host_tests/test_proxy_config.py"],
                       capture_output=True, text=True, timeout=120, cwd=ROOT,
                       env=bare_pytest_env())
    assert p.returncode == 0, p.stdout[-2000:]
    workers = {}
    for line in p.stdout.splitlines():
        if " PASSED " in line:
            worker, nodeid = line.split()[0], line.split()[-1]
            workers.setdefault(nodeid.split("::")[0], set()).add(worker)
    assert len(workers) == 2 and all(len(w) == 1 for w in workers.values()), p.stdout[-3000:]
    assert "@test_faults_ledger" in p.stdout
