"""Signed releases (docs/ota.md): the manifest format, `release sign` and `release publish`.

A release directory holds the release's files, `manifest.json` (the manifest text exactly as
signed) and `manifest.sig` (hex r || s). Releases are written to a hidden temporary
directory and renamed into place, so a release directory is complete or absent."""

import hashlib
import json
import os
import re
import shutil
import tempfile

from . import release_keys
from .release_keys import ReleaseError

# use with fullmatch (`$` would also match before a trailing newline)
VERSION = re.compile(r"(0|[1-9][0-9]{0,8})\.(0|[1-9][0-9]{0,8})\.(0|[1-9][0-9]{0,8})")
PATH = re.compile(r"[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)*")
SHA256 = re.compile(r"[0-9a-f]{64}")
# The meter's limits (firmware/fw_manifest.py): the signer refuses what a meter would.
MAX_FILES = 96     # as firmware/fw_manifest.py: what a meter accepts
MAX_PATH = 64                                # characters
MAX_FILE_LEN = 1 << 20                       # one module file
MAX_IMAGE_LEN = 16 << 20                     # a whole ESP32 image
IMAGE = "firmware.bin"                       # the one file of a whole-image release
MANIFEST, SIGNATURE = "manifest.json", "manifest.sig"
SKIPPED_DIRS = ("__pycache__",)              # never part of a release
# fwboot runs first and picks the release (docs/ota.md): a release never replaces it
NEVER_SHIPPED = ("fwboot.py", "fwboot.mpy")
VERSION_MODULE = "version.py"
# the one line `VERSION = "X.Y.Z"` of firmware/version.py that `sign` writes the version into
VERSION_LINE = re.compile(rb'^VERSION = "([^"\n]*)"[ \t]*(#[^\n]*)?$', re.M)


def check_version(version):
    if not isinstance(version, str) or not VERSION.fullmatch(version):
        raise ReleaseError("bad version %r: expected MAJOR.MINOR.PATCH (integers, no "
                           "leading zeros)" % (version,))
    return version


def version_key(version):
    return tuple(int(p) for p in version.split("."))


def safe_path(path):
    """True for a relative path of [A-Za-z0-9_.-] components, none of them `.` or `..`,
    of at most MAX_PATH characters."""
    return (isinstance(path, str) and len(path) <= MAX_PATH and bool(PATH.fullmatch(path))
            and all(part not in (".", "..") for part in path.split("/")))


def canonical(manifest):
    """The manifest text that is signed: sorted keys, separators `,` `:`."""
    return json.dumps(manifest, sort_keys=True, separators=(",", ":"))


def parse_manifest(text):
    """The manifest dict of a manifest text, checked: canonical, a good version, and either
    `files` (1..64 safe, unique paths, sorted) or `image`. ReleaseError otherwise."""
    try:
        m = json.loads(text)
    except ValueError as e:
        raise ReleaseError("manifest is not JSON: %s" % e) from None
    if not isinstance(m, dict) or set(m) not in ({"version", "files"}, {"version", "image"}):
        raise ReleaseError("manifest must have `version` and either `files` or `image`")
    check_version(m["version"])
    if "image" in m and (not isinstance(m["image"], dict) or set(m["image"]) != {"len", "sha256"}):
        raise ReleaseError("manifest image must be {len, sha256}")
    entries = [dict(m["image"], path=IMAGE)] if "image" in m else m["files"]
    if not isinstance(entries, list) or not 1 <= len(entries) <= MAX_FILES:
        raise ReleaseError("manifest files must be a list of 1 to %d files" % MAX_FILES)
    for e in entries:
        if not isinstance(e, dict) or set(e) != {"len", "path", "sha256"}:
            raise ReleaseError("each manifest file must be {len, path, sha256}")
        if not safe_path(e["path"]) or e["path"] in (MANIFEST, SIGNATURE):
            raise ReleaseError("unsafe file name in manifest: %r" % (e["path"],))
        if e["path"] in NEVER_SHIPPED:
            raise ReleaseError("%s is never part of a release (docs/ota.md)" % e["path"])
        least, most = (1, MAX_IMAGE_LEN) if "image" in m else (0, MAX_FILE_LEN)
        if type(e["len"]) is not int or not least <= e["len"] <= most:
            raise ReleaseError("%s: length %r, must be %d to %d bytes"
                               % (e["path"], e["len"], least, most))
        if not isinstance(e["sha256"], str) or not SHA256.fullmatch(e["sha256"]):
            raise ReleaseError("bad sha256 for %s" % e["path"])
    paths = [e["path"] for e in entries]
    if paths != sorted(set(paths)):
        raise ReleaseError("manifest files must be sorted by path, without duplicates")
    names = set(paths)
    for p in paths:                 # "a" and "a/b": a file where another needs a directory
        parts = p.split("/")
        for k in range(1, len(parts)):
            if "/".join(parts[:k]) in names:
                raise ReleaseError("%s is both a file and a directory" % "/".join(parts[:k]))
    if canonical(m) != text:
        raise ReleaseError("manifest text is not canonical (sorted keys, separators , :)")
    return m


def files_of(manifest):
    """{path: (len, sha256)} of the files a release serves."""
    if "image" in manifest:
        return {IMAGE: (manifest["image"]["len"], manifest["image"]["sha256"])}
    return {e["path"]: (e["len"], e["sha256"]) for e in manifest["files"]}


def source_files(src_dir):
    """[(release path, source path)] of every file under src_dir, sorted by path."""
    if not os.path.isdir(src_dir):
        raise ReleaseError("%s: not a directory" % src_dir)
    found = []
    for root, dirs, names in os.walk(src_dir):
        dirs[:] = sorted(d for d in dirs if d not in SKIPPED_DIRS)
        for name in names:
            full = os.path.join(root, name)
            rel = os.path.relpath(full, src_dir).replace(os.sep, "/")
            if rel in NEVER_SHIPPED:
                continue
            if not safe_path(rel):
                raise ReleaseError("unsafe file name %r: use [A-Za-z0-9_.-] and /, at most "
                                   "%d characters" % (rel, MAX_PATH))
            if rel in (MANIFEST, SIGNATURE):
                raise ReleaseError("%s: %s is reserved for the release's manifest"
                                   % (src_dir, rel))
            found.append((rel, full))
    if not found:
        raise ReleaseError("%s: no files to release" % src_dir)
    if len(found) > MAX_FILES:
        raise ReleaseError("%s: %d files, at most %d" % (src_dir, len(found), MAX_FILES))
    return sorted(found)


def _read(path):
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as e:
        raise ReleaseError("%s: %s" % (path, e.strerror or e)) from None


def _write(root, rel, data):
    full = os.path.join(root, *rel.split("/"))
    os.makedirs(os.path.dirname(full), exist_ok=True)
    with open(full, "wb") as f:
        f.write(data)


def _into_place(parent, version, fill):
    """Create parent/version through a temporary directory that fill(tmp) populates."""
    dest = os.path.join(parent, version)
    if os.path.lexists(dest):
        raise ReleaseError("%s already exists" % dest)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=".%s." % version, dir=parent)
    try:
        fill(tmp)
        os.rename(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return dest


def sign(key_path, version, out_dir, src_dir=None, image=None):
    """Copy src_dir's files (or the one image as firmware.bin) into out_dir/version with
    the signed manifest; returns (release dir, manifest text)."""
    key = release_keys.load_private(key_path)
    check_version(version)
    if (src_dir is None) == (image is None):
        raise ReleaseError("give either a source directory or --image")
    sources = [(IMAGE, image)] if image is not None else source_files(src_dir)
    blobs = [(rel, _read(path)) for rel, path in sources]
    if image is None:
        blobs = stamp_version(blobs, version, src_dir)
    entries = [{"len": len(d), "path": rel, "sha256": hashlib.sha256(d).hexdigest()}
               for rel, d in blobs]
    if image is not None:
        manifest = {"image": {"len": entries[0]["len"], "sha256": entries[0]["sha256"]},
                    "version": version}
    else:
        manifest = {"files": entries, "version": version}
    text = canonical(manifest)
    parse_manifest(text)                 # the signer never signs what a meter would refuse
    sig = release_keys.sign(key, text.encode())

    def fill(tmp):
        for rel, data in blobs:
            _write(tmp, rel, data)
        _write(tmp, MANIFEST, text.encode())
        _write(tmp, SIGNATURE, (sig + "\n").encode())
    return _into_place(out_dir, version, fill), text


def stamp_version(blobs, version, src_dir):
    """blobs [(release path, bytes)] with version.py saying `version`, so that a meter running
    the release reports the version it was signed as (the source tree is not changed).
    Refused: no version.py (the meter would go on reporting the version it replaced), a
    compiled version.mpy, not exactly one VERSION line, or a VERSION newer than `version`
    (signing a later tree as an earlier release is a mistake)."""
    files = dict(blobs)
    if "version.mpy" in files:
        raise ReleaseError("%s: version.mpy cannot be given the release version: sign the "
                           "source version.py instead" % src_dir)
    if VERSION_MODULE not in files:
        raise ReleaseError("%s has no version.py: a meter running the release would go on "
                           "reporting the version it replaced (copy firmware/version.py "
                           "into it)" % src_dir)
    found = VERSION_LINE.findall(files[VERSION_MODULE])
    declared = found[0][0].decode(errors="replace") if len(found) == 1 else None
    if declared is None or not VERSION.fullmatch(declared):
        raise ReleaseError('%s/version.py: expected one line VERSION = "X.Y.Z" to write the '
                           "release version into" % src_dir)
    if version_key(declared) > version_key(version):
        raise ReleaseError("%s/version.py says %s, newer than --version %s: the release "
                           "would report another version than it is signed as"
                           % (src_dir, declared, version))
    text = VERSION_LINE.sub(b'VERSION = "%s"' % version.encode(), files[VERSION_MODULE], 1)
    return [(rel, text if rel == VERSION_MODULE else data) for rel, data in blobs]


def read_signed(release_dir):
    """(manifest text, sig hex) of a release directory."""
    text = _read(os.path.join(release_dir, MANIFEST))
    sig = _read(os.path.join(release_dir, SIGNATURE))
    try:
        return text.decode(), sig.decode().strip()
    except UnicodeDecodeError:
        raise ReleaseError("%s: manifest or signature is not text" % release_dir) from None


def verify(release_dir, public_key):
    """Check the signature and every file; returns (manifest, text, sig, {path: bytes})."""
    text, sig = read_signed(release_dir)
    if not release_keys.verify(public_key, text.encode(), sig):
        raise ReleaseError("%s: bad signature: the manifest is not signed by this key"
                           % release_dir)
    manifest = parse_manifest(text)
    blobs = {}
    for rel, (size, digest) in files_of(manifest).items():
        data = _read(os.path.join(release_dir, *rel.split("/")))
        if len(data) != size or hashlib.sha256(data).hexdigest() != digest:
            raise ReleaseError("%s: %s does not match the manifest (tampered or damaged)"
                               % (release_dir, rel))
        blobs[rel] = data
    return manifest, text, sig, blobs


def publish(release_dir, public_key, releases_dir):
    """Verify release_dir and copy what the manifest lists into releases_dir/<version>.
    Returns (destination, True) or (destination, False) if already published as is."""
    manifest, text, sig, blobs = verify(release_dir, public_key)
    dest = os.path.join(releases_dir, manifest["version"])
    if os.path.lexists(dest):
        try:
            same = read_signed(dest) == (text, sig)
        except ReleaseError:
            same = False
        if same:
            return dest, False
        raise ReleaseError("%s already exists with a different release" % dest)

    def fill(tmp):
        for rel, data in blobs.items():
            _write(tmp, rel, data)
        _write(tmp, MANIFEST, text.encode())
        _write(tmp, SIGNATURE, (sig + "\n").encode())
    return _into_place(releases_dir, manifest["version"], fill), True
