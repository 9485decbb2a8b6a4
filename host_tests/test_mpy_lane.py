"""Precompiled, as deployed (issue 11): `make deploy` ships .mpy files, so the board
interpreter runs the firmware from .mpy built by mpy-cross for its own architecture
(runner.mpy_tree, BC_FIRMWARE_MPY=1), viper and native code included: the modules load from
.mpy, and the board slice of the unit tests (conftest.BOARD_FAST_SLICE) passes that way."""

import json
import os
import subprocess
import sys

import pytest
from conftest import BOARD_FAST_SLICE

from lab import runner

pytestmark = pytest.mark.system

WHICH = runner.ROOT / "host_tests" / "mp_scripts" / "which_files.py"


@pytest.fixture
def mpy_env(monkeypatch):
    if not runner.available("board"):
        if os.environ.get("CI"):
            pytest.fail("CI is set: " + runner.board_missing_reason())
        pytest.skip(runner.board_missing_reason())
    monkeypatch.setenv("BC_FIRMWARE_MPY", "1")


def test_firmware_loads_from_mpy(mpy_env):
    files = json.loads(runner.run("board", WHICH))
    tree = runner.mpy_tree()
    assert files["app"] == str(tree / "firmware" / "app.mpy")
    assert files["kernel"] == str(tree / "firmware" / "kernel.mpy")  # viper code
    assert files["boards.sim_board"] == str(tree / "boards" / "sim_board.mpy")
    assert runner.mpy_tree() == tree  # cached by content


def test_board_slice_passes_from_mpy(mpy_env):
    tests = [str(runner.ROOT / "host_tests" / name) for name in sorted(BOARD_FAST_SLICE)]
    env = dict(os.environ, BC_FAST="1")
    p = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                        "-m", "unit", "-k", "board", "-rs", *tests], cwd=runner.ROOT, env=env,
                       capture_output=True, text=True, timeout=1200)
    tail = p.stdout[-3000:]
    assert p.returncode == 0, tail
    assert " passed" in tail and "skipped" not in tail, tail


def test_the_unix_port_loads_the_firmware_precompiled_unless_told(monkeypatch):
    """The stock unix port imports the x64 .mpy tree (runner.unix_mpy), viper included, and
    the sources with BC_UNIX_MPY=0; the board interpreter keeps the sources by default."""
    if not runner.available("board"):   # its mpy-cross makes the tree
        if os.environ.get("CI"):
            pytest.fail("CI is set: " + runner.board_missing_reason())
        pytest.skip(runner.board_missing_reason())
    monkeypatch.delenv("BC_FIRMWARE_MPY", raising=False)
    runner.unix_mpy.cache_clear()
    assert runner.unix_mpy()
    tree = runner.mpy_tree(runner.UNIX_ARCH)
    files = json.loads(runner.run("micropython", WHICH))
    assert files["app"] == str(tree / "firmware" / "app.mpy")
    assert files["kernel"] == str(tree / "firmware" / "kernel.mpy")
    assert json.loads(runner.run("board", WHICH))["app"] == str(runner.FIRMWARE / "app.py")
    monkeypatch.setenv("BC_UNIX_MPY", "0")
    runner.unix_mpy.cache_clear()
    try:
        assert json.loads(runner.run("micropython", WHICH))["app"] == str(
            runner.FIRMWARE / "app.py")
    finally:
        monkeypatch.delenv("BC_UNIX_MPY")
        runner.unix_mpy.cache_clear()
