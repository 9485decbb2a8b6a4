"""Runs firmware code under the real MicroPython unix port or CPython, for the tests."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
FIRMWARE = ROOT / "firmware"
BOARDS = ROOT / "boards"
MPLIB = ROOT / ".venv" / "mplib"  # micropython-lib modules (tools/fetch_mplib.py, make venv)
INTERPRETERS = ("micropython", "cpython")


def micropython_binary():
    here = Path(sys.executable).parent / "micropython"
    found = str(here) if here.exists() else shutil.which("micropython")
    if not found:
        raise RuntimeError("micropython not found: run `make test`, which installs it into .venv")
    return found


def command(interpreter, script, *args):
    env = dict(os.environ)
    if interpreter == "micropython":
        env["MICROPYPATH"] = ".frozen:%s:%s:%s" % (FIRMWARE, BOARDS, MPLIB)
        return [micropython_binary(), str(script), *args], env
    env["PYTHONPATH"] = "%s:%s:%s" % (FIRMWARE, BOARDS, MPLIB)
    return [sys.executable, str(script), *args], env


def run(interpreter, script, *args, stdin=b"", timeout=300):
    """Run a firmware-side script; returns stdout text. Raises with stderr on failure."""
    cmd, env = command(interpreter, script, *args)
    p = subprocess.run(cmd, input=stdin, capture_output=True, env=env, timeout=timeout)
    if p.returncode != 0:
        raise RuntimeError("%s failed (%d):\n%s" % (cmd, p.returncode, p.stderr.decode()))
    return p.stdout.decode()


def records(text):
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def replay(v, i, rate, v_gain, i_gain, interpreter="micropython", delay_us=0.0, config=None):
    """Feed physical samples (volts, amps) through the sim board's virtual 12-bit ADC into
    the firmware metering engine. Returns the JSON records it printed."""
    data = np.empty(2 * len(v), dtype="<f4")
    data[0::2] = v
    data[1::2] = i
    out = run(interpreter, BOARDS / "sim_main.py", "--replay", "rate=%r" % float(rate),
              "v_gain=%r" % float(v_gain), "i_gain=%r" % float(i_gain),
              "delay_us=%r" % float(delay_us), "config=" + json.dumps(config or {}),
              stdin=data.tobytes())
    return records(out)
