"""The README's release key (`release keygen --out keys/`) is never committed by accident."""

import shutil
import subprocess

import pytest

from lab import runner

pytestmark = pytest.mark.unit


@pytest.mark.skipif(shutil.which("git") is None or not (runner.ROOT / ".git").exists(),
                    reason="not a git checkout")
def test_the_release_key_folder_is_ignored():
    for path in ("keys/release-key.pem", "keys/release-key.pub"):
        p = subprocess.run(["git", "check-ignore", "-q", path], cwd=runner.ROOT)
        assert p.returncode == 0, "%s is not in .gitignore" % path
