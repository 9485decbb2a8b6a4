# A signed release manifest (docs/ota.md): signature check and shape check. The manifest
# text is checked exactly as signed, then parsed; nothing in it is trusted before both.

import json
from binascii import unhexlify

import p256
import version as fwversion

MAX_FILES = 96     # the firmware tree is 68 files with the XMPP transport (was 64)
MAX_PATH = 64
MAX_FILE_LEN = 1 << 20      # one module file
MAX_IMAGE_LEN = 16 << 20    # a whole ESP32 image
IMAGE_PATH = "firmware.bin"
_PATH_CHARS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-/"
_HEX = "0123456789abcdef"


class Refused(ValueError):
    """The reason an update is refused, as sent back to the head-end."""


def check_signature(key_hex, text, sig_hex):
    if not key_hex:
        raise Refused("no update key configured")
    try:
        key = p256.public_key_from_hex(key_hex)
        sig = unhexlify(sig_hex) if isinstance(sig_hex, str) and len(sig_hex) == 128 else b""
    except ValueError:
        raise Refused("bad signature")
    if not p256.verify(key, text.encode(), sig):
        raise Refused("bad signature")


def _bad(what):
    raise Refused("bad manifest: " + what)


def safe_path(path):
    if not isinstance(path, str) or not 0 < len(path) <= MAX_PATH:
        return False
    for c in path:
        if c not in _PATH_CHARS:
            return False
    for part in path.split("/"):
        if part in ("", ".", ".."):
            return False
    return True


def _hash(entry, where):
    h = entry.get("sha256")
    if not isinstance(h, str) or len(h) != 64 or any(c not in _HEX for c in h):
        _bad("%s: sha256 must be 64 lowercase hex digits" % (where,))
    return h


def _length(entry, where, most):
    n = entry.get("len")
    if isinstance(n, bool) or not isinstance(n, int) or not 0 <= n <= most:
        _bad("%s: len must be a whole number from 0 to %d" % (where, most))
    return n


def parse(text):
    """{"version", "files": [{"path","len","sha256"}], "image": bool, "total": bytes}; an
    image release is one file, IMAGE_PATH. Refused("bad manifest: ...") when malformed."""
    try:
        m = json.loads(text)
    except ValueError:
        _bad("not JSON")
    if not isinstance(m, dict):
        _bad("not a JSON object")
    ver = m.get("version")
    if fwversion.parse(ver) is None:
        _bad("version must be MAJOR.MINOR.PATCH")
    if ("files" in m) == ("image" in m):
        _bad("needs either files or image")
    if "image" in m:
        image = m["image"]
        if not isinstance(image, dict):
            _bad("image must be an object")
        n = _length(image, "image", MAX_IMAGE_LEN)
        if n == 0:
            _bad("image is empty")
        files = [{"path": IMAGE_PATH, "len": n, "sha256": _hash(image, "image")}]
        return {"version": ver, "files": files, "image": True, "total": n}
    files = m["files"]
    if not isinstance(files, list) or not 0 < len(files) <= MAX_FILES:
        _bad("files must be a list of 1 to %d entries" % (MAX_FILES,))
    out = []
    seen = {}
    total = 0
    for entry in files:
        if not isinstance(entry, dict) or not safe_path(entry.get("path")):
            _bad("unsafe or missing path %r" % (entry.get("path") if isinstance(entry, dict)
                                               else entry,))
        path = entry["path"]
        if path in seen:
            _bad("%s listed twice" % (path,))
        seen[path] = 1
        n = _length(entry, path, MAX_FILE_LEN)
        out.append({"path": path, "len": n, "sha256": _hash(entry, path)})
        total += n
    for path in seen:  # a file where another needs a directory: "a" and "a/b"
        k = path.find("/")
        while k > 0:
            if path[:k] in seen:
                _bad("%s is both a file and a directory" % (path[:k],))
            k = path.find("/", k + 1)
    return {"version": ver, "files": out, "image": False, "total": total}


def check(key_hex, text, sig_hex, running):
    """The parsed manifest of a release this meter may install, else Refused(reason)."""
    if not isinstance(text, str):
        _bad("manifest must be text")
    check_signature(key_hex, text, sig_hex)
    m = parse(text)
    if not fwversion.newer(m["version"], running):
        raise Refused("version downgrade: running %s, offered %s" % (running, m["version"]))
    return m
