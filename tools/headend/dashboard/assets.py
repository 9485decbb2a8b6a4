"""Browser assets the dashboard serves itself (no CDN, works with no internet): uPlot from
npm, pinned in package.json / package-lock.json beside this file (npm checks the lockfile's
sha512), copied into the venv and checked here by sha256. `make venv` runs
`python -m headend.dashboard.assets`; a file that is missing or does not match is never
served (the pages say the plots are unavailable).

Where: $BACKCHANNEL_ASSETS, or <venv>/share/backchannel-dashboard."""

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
# served name -> (path inside the npm install, sha256)
FILES = {
    "uPlot.iife.min.js": ("node_modules/uplot/dist/uPlot.iife.min.js",
                          "19c8d4c6ad88929a79f4ae49d6f7161566dfd0ba3d15cc495e974f787eb78f1f"),
    "uPlot.min.css": ("node_modules/uplot/dist/uPlot.min.css",
                      "df630c6a8d6f8eeaff264b50f73ce5b114f646ffd9a0bb74f049b0a00135fa04"),
    "uPlot.LICENSE": ("node_modules/uplot/LICENSE",
                      "8f989229699b4fe2f1a0432d0e9edc338a8a911e250e2d1b01ecd770a5f5b1bd"),
}


class AssetError(Exception):
    pass


def directory():
    return os.environ.get("BACKCHANNEL_ASSETS") or os.path.join(
        sys.prefix, "share", "backchannel-dashboard")


def sha256(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def verified(target=None):
    """{served name: path} of the files present with their pinned sha256."""
    target = target or directory()
    out = {}
    for name, (_, digest) in FILES.items():
        path = os.path.join(target, name)
        try:
            if sha256(path) == digest:
                out[name] = path
        except OSError:
            pass
    return out


def fetch(target=None, npm="npm"):
    """Make sure target holds the pinned files; True if it had to install them."""
    target = target or directory()
    if len(verified(target)) == len(FILES):
        return False
    if shutil.which(npm) is None:
        raise AssetError("npm not found (Debian: apt-get install npm)")
    with tempfile.TemporaryDirectory() as tmp:
        for name in ("package.json", "package-lock.json"):
            shutil.copy(os.path.join(HERE, name), tmp)
        p = subprocess.run([npm, "ci", "--ignore-scripts", "--no-audit", "--no-fund"],
                           cwd=tmp, capture_output=True, text=True, timeout=300)
        if p.returncode != 0:
            lines = (p.stderr or p.stdout).strip().splitlines()
            raise AssetError("npm ci failed: %s" % (lines[-1] if lines else p.returncode))
        os.makedirs(target, exist_ok=True)
        for name, (src, digest) in FILES.items():
            src = os.path.join(tmp, src)
            if sha256(src) != digest:
                raise AssetError("%s from npm does not match its pinned sha256" % name)
            dst = os.path.join(target, name)
            shutil.copy(src, dst + ".tmp")
            os.replace(dst + ".tmp", dst)
    return True


def main():
    target = directory()
    try:
        fetched = fetch(target)
    except (AssetError, OSError, subprocess.SubprocessError) as e:
        # the head-end runs without them; only the dashboard's plots are missing
        print("dashboard assets: not installed: %s" % e, file=sys.stderr)
        return 0
    print("dashboard assets: %s %s" % ("installed in" if fetched else "ok in", target))
    return 0


if __name__ == "__main__":
    sys.exit(main())
