"""The lanes lean on pytest-xdist's `--dist loadgroup`: tests marked with one xdist_group run
on one worker (each e2e lab set up once, cached driver runs shared). pytest 9.2's
structured node ids silently undid that (pytest-dev/pytest-xdist#1386: no error, the tests
simply spread), so a pin bump that breaks it again fails here."""

import subprocess
import sys

import pytest
from test_lanes import bare_pytest_env

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
