"""Build the "board" interpreter: a MicroPython unix port: 32-bit words (gcc -m32), single-precision
floats, with viper, asyncio and tls (as the ESP32 and RP2040 ports run), plus mpy-cross
from the same source.

    build(dest_dir=DEST, src_tgz=None, src_dir=None, jobs=2) -> path to the micropython binary

Source, first match wins: src_dir, $MICROPYTHON_SRC (a user's own checkout with its
submodules; used in place, never extracted or written to), src_tgz, the vendored tarball
(../shared/vendor/micropython-src.tgz found upwards from the cwd or this file, or
$MICROPYTHON_SRC_TGZ).

Nothing is written into the source tree: the float32 variant and the build directories live
under dest_dir (VARIANT_DIR=..., BUILD=...). The build is cached: when dest_dir holds a
binary whose stamp names the same source hash and recipe, build() returns at once.

CLI:  python -m lab.board_build [--dest DIR] [--src-tgz F | --src-dir D] [-j N] [--if-source]
Prints the binary's path on stdout; on failure one line "board micropython: ..." on stderr
and exit status 2. --if-source (what `make venv` uses) says so and exits 0 when there is no
source at all: the board interpreter's tests then skip, or fail where CI is set.
The runner (lab/runner.py) finds the result at DEST/micropython-board.
"""

import argparse
import contextlib
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DEST = ROOT / ".venv" / "board-micropython"
RECIPE_VERSION = 1
MAKE_FLAGS = ["MICROPY_PY_BTREE=0", "MICROPY_PY_FFI=0"]
CC32 = "gcc -m32"
BIN_NAME = "micropython-board"
MPY_CROSS_NAME = "mpy-cross-board"
STAMP = "board-build.json"
TARBALL = "micropython-src.tgz"
SKIP_DIRS = {".git", "__pycache__"}


class BuildError(RuntimeError):
    """A build that cannot proceed; str() is one line."""


def _log(msg):
    print("[board-mp] " + msg, file=sys.stderr, flush=True)


# ---------------------------------------------------------------- source

def find_vendored_tgz():
    env = os.environ.get("MICROPYTHON_SRC_TGZ")
    if env:
        return Path(env)
    # ../shared/vendor beside the repository; upwards, so a git worktree finds it too
    for start in (ROOT, Path.cwd()):
        for d in (start, *start.parents):
            p = d / "shared" / "vendor" / TARBALL
            if p.is_file():
                return p
    return None


def _sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _hash_tree(root):
    """Content hash of a source tree, skipping .git and build output (build*, */build-*)."""
    h = hashlib.sha256()
    root = Path(root)
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames
                             if d not in SKIP_DIRS and not d.startswith("build"))
        for name in sorted(filenames):
            p = Path(dirpath, name)
            if p.is_symlink() or not p.is_file():
                continue
            h.update(str(p.relative_to(root)).encode() + b"\0")
            h.update(_sha256_file(p).encode())
    return h.hexdigest()


def _check_source(src):
    src = Path(src)
    need = [src / "py" / "mpconfig.h", src / "ports" / "unix" / "Makefile",
            src / "lib" / "mbedtls" / "library"]
    missing = [str(p.relative_to(src)) for p in need if not p.exists()]
    if missing:
        raise BuildError("%s is not a usable MicroPython source (missing %s; for a git "
                         "checkout run `make -C ports/unix submodules`)"
                         % (src, ", ".join(missing)))
    return src


def _resolve_source(dest, src_tgz, src_dir):
    """Returns (source dir, source hash, description)."""
    src_dir = src_dir or os.environ.get("MICROPYTHON_SRC") or None
    if src_dir:
        src = _check_source(Path(src_dir).resolve())
        return src, "tree:" + _hash_tree(src), "tree %s" % src
    tgz = Path(src_tgz) if src_tgz else find_vendored_tgz()
    if tgz is None or not tgz.is_file():
        raise BuildError("no MicroPython source: pass src_dir/src_tgz, set MICROPYTHON_SRC, "
                         "or provide ../shared/vendor/%s" % TARBALL)
    digest = _sha256_file(tgz)
    out = dest / ("src-" + digest[:16])
    done = out / ".extracted"
    if not done.exists():
        _log("extracting %s" % tgz)
        if out.exists():
            shutil.rmtree(out)
        tmp = Path(tempfile.mkdtemp(prefix="src-", dir=dest))
        with tarfile.open(tgz) as t:
            if sys.version_info >= (3, 12):
                t.extractall(tmp, filter="data")
            else:
                t.extractall(tmp)
        tops = [p for p in tmp.iterdir()]
        top = tops[0] if len(tops) == 1 and tops[0].is_dir() else tmp
        top.rename(out) if top != tmp else tmp.rename(out)
        shutil.rmtree(tmp, ignore_errors=True)
        done.write_text(str(tgz))
    return _check_source(out), "tgz:" + digest, "tarball %s" % tgz


# ---------------------------------------------------------------- toolchain

def _can_link_m32():
    with tempfile.TemporaryDirectory() as d:
        c = Path(d, "t.c")
        c.write_text("#include <stdio.h>\nint main(void){return sizeof(void*)==4?0:1;}\n")
        p = subprocess.run(CC32.split() + [str(c), "-o", str(Path(d, "t"))],
                           capture_output=True)
        return p.returncode == 0


def ensure_multilib():
    if _can_link_m32():
        return
    if not shutil.which("gcc"):
        hint = "gcc is missing"
    else:
        hint = "gcc -m32 cannot link (gcc-multilib missing)"
    if os.geteuid() == 0 and shutil.which("apt-get"):
        _log(hint + ": apt-get update && apt-get install -y gcc-multilib")
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        for cmd in (["apt-get", "update"],
                    ["apt-get", "install", "-y", "--no-install-recommends",
                     "gcc", "gcc-multilib", "make"]):
            p = subprocess.run(cmd, env=env, capture_output=True, text=True)
            if p.returncode != 0:
                tail = (p.stderr.strip().splitlines() or ["?"])[-1]
                raise BuildError("%s failed: %s" % (" ".join(cmd), tail))
        if _can_link_m32():
            return
        raise BuildError("gcc -m32 still cannot link after installing gcc-multilib")
    raise BuildError(hint + ": install it as root (apt-get install gcc-multilib), "
                     "or run this build as root to have it installed")


# ---------------------------------------------------------------- build

def _write_variant(vdir, src):
    vdir.mkdir(parents=True, exist_ok=True)
    unix = src / "ports" / "unix"
    h = ("// board-faithful unix variant: 32-bit (built with -m32), single-precision floats\n"
         "#define MICROPY_CONFIG_ROM_LEVEL (MICROPY_CONFIG_ROM_LEVEL_EXTRA_FEATURES)\n"
         "#define MICROPY_FLOAT_IMPL (MICROPY_FLOAT_IMPL_FLOAT)\n"
         '#include "%s"\n' % (unix / "variants" / "mpconfigvariant_common.h"))
    mk = "FROZEN_MANIFEST ?= %s\n" % (unix / "variants" / "standard" / "manifest.py")
    for name, text in (("mpconfigvariant.h", h), ("mpconfigvariant.mk", mk)):
        p = vdir / name
        if not p.exists() or p.read_text() != text:
            p.write_text(text)
    return h + mk


def _run(cmd, cwd, log):
    with open(log, "a") as f:
        f.write("\n$ (cd %s && %s)\n" % (cwd, " ".join(cmd)))
        f.flush()
        p = subprocess.run(cmd, cwd=cwd, stdout=f, stderr=subprocess.STDOUT)
    if p.returncode != 0:
        tail = Path(log).read_text(errors="replace").strip().splitlines()
        err = next((line for line in reversed(tail) if "error" in line.lower()),
                   tail[-1] if tail else "?")
        raise BuildError("%s failed (see %s): %s" % (cmd[0], log, err.strip()[:200]))


@contextlib.contextmanager
def _lock(dest):
    import fcntl
    with open(dest / ".lock", "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def install_aiorepl(src, dest):
    """micropython-lib's aiorepl (not on PyPI) from the same source into DEST/lib, the folder
    the REPL tests add to the board interpreter's path (lab/runner.BOARD_LIB); not into
    .venv/mplib, so the stock interpreter's tests still run without it."""
    found = Path(src) / "lib" / "micropython-lib" / "micropython" / "aiorepl" / "aiorepl.py"
    if not found.is_file():
        return None
    lib = Path(dest) / "lib"
    lib.mkdir(exist_ok=True)
    target = lib / "aiorepl.py"
    if not target.is_file() or target.read_bytes() != found.read_bytes():
        shutil.copyfile(found, target)
    return target


def read_stamp(dest_dir):
    try:
        return json.loads((Path(dest_dir) / STAMP).read_text())
    except (OSError, ValueError):
        return None


def has_source():
    """Whether build() has any source to use (MICROPYTHON_SRC or a tarball)."""
    return bool(os.environ.get("MICROPYTHON_SRC")) or find_vendored_tgz() is not None


def build(dest_dir=DEST, src_tgz=None, src_dir=None, jobs=2):
    """Build (or find cached) the board MicroPython in dest_dir; returns the binary's path."""
    dest = Path(dest_dir).resolve()
    dest.mkdir(parents=True, exist_ok=True)
    with _lock(dest):
        src, src_hash, what = _resolve_source(dest, src_tgz, src_dir)
        vdir = dest / "variant" / "float32"
        recipe = _write_variant(vdir, src)
        key = hashlib.sha256(json.dumps(
            [RECIPE_VERSION, src_hash, recipe, CC32, MAKE_FLAGS]).encode()
        ).hexdigest()
        binary, cross = dest / BIN_NAME, dest / MPY_CROSS_NAME
        stamp = read_stamp(dest)
        if stamp and stamp.get("key") == key and binary.is_file() and cross.is_file():
            install_aiorepl(src, dest)
            return str(binary)

        ensure_multilib()
        log = dest / "build.log"
        log.write_text("board micropython build from %s\n" % what)
        _log("building from %s (log: %s)" % (what, log))
        # mpy-cross first, in its own build dir: the unix build needs it for its frozen
        # modules (asyncio, ssl), and BUILD=... on the command line would leak into the
        # unix Makefile's own mpy-cross sub-make.
        t0 = time.monotonic()
        cdir = dest / "build-mpy-cross"
        _run(["make", "-j%d" % jobs, "BUILD=%s" % cdir], src / "mpy-cross", log)
        t_cross = time.monotonic() - t0
        t1 = time.monotonic()
        bdir = dest / "build-float32"
        make = ["make", "-j%d" % jobs, "VARIANT_DIR=%s" % vdir, "BUILD=%s" % bdir,
                "CC=%s" % CC32, "LD=%s" % CC32, "MICROPY_MPYCROSS=%s" % (cdir / "mpy-cross"),
                *MAKE_FLAGS]
        _run(make, src / "ports" / "unix", log)
        t_unix = time.monotonic() - t1
        for built, final in ((bdir / "micropython", binary), (cdir / "mpy-cross", cross)):
            tmp = final.with_suffix(".tmp")
            shutil.copy2(built, tmp)
            os.replace(tmp, final)

        probe = subprocess.run(
            [str(binary), "-c", "import sys;print(sys.maxsize, sys.implementation._mpy & 0xff,"
             " (sys.implementation._mpy >> 10) & 0xf, 1796549697.0 + 30.5)"],
            capture_output=True, text=True)
        if probe.returncode != 0 or not probe.stdout.startswith("2147483647 "):
            raise BuildError("built binary is not 32-bit/float32: %r %r"
                             % (probe.stdout.strip(), probe.stderr.strip()[-200:]))
        maxsize, mpy_ver, arch, f = probe.stdout.split()
        stamp = {"key": key, "source": what, "source_hash": src_hash, "src_dir": str(src),
                 "binary": str(binary), "mpy_cross": str(cross),
                 "sys.maxsize": int(maxsize), "mpy_version": int(mpy_ver),
                 "native_arch_code": int(arch), "probe_1796549697.0+30.5": f,
                 "seconds_unix": round(t_unix, 1),
                 "seconds_mpy_cross": round(t_cross, 1),
                 "built_at": time.strftime("%Y-%m-%dT%H:%M:%S")}
        (dest / STAMP).write_text(json.dumps(stamp, indent=1) + "\n")
        install_aiorepl(src, dest)
        _log("built in %.1f s (mpy-cross %.1f s first): %s" % (t_unix, t_cross, binary))
        return str(binary)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dest", default=str(DEST), help="output/cache directory (%(default)s)")
    g = ap.add_mutually_exclusive_group()
    g.add_argument("--src-tgz", help="MicroPython source tarball")
    g.add_argument("--src-dir", help="MicroPython checkout (default $MICROPYTHON_SRC)")
    ap.add_argument("-j", "--jobs", type=int, default=2)
    ap.add_argument("--if-source", action="store_true",
                    help="without any source, say so and exit 0 instead of failing")
    a = ap.parse_args(argv)
    if a.if_source and not (a.src_tgz or a.src_dir or has_source()):
        print("board micropython: not built (no ../shared/vendor/%s and no MICROPYTHON_SRC); "
              "its tests skip" % TARBALL, file=sys.stderr)
        return 0
    try:
        print(build(a.dest, a.src_tgz, a.src_dir, a.jobs))
    except BuildError as e:
        print("board micropython: %s" % e, file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
