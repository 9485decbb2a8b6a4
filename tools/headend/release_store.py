"""The head-end's published releases (`release publish` puts them there): what the operator
API lists and what `fetch` on the exchange serves, chunk by chunk. Only the files a
release's manifest lists are served, so no request can reach any other file."""

import base64
import os

from . import releases
from .release_keys import ReleaseError

CHUNK_MAX = 8192          # bytes per chunk, whatever `len` a meter asks for


def directory(settings):
    """settings.releases, or `releases` next to the database file (on PostgreSQL: next to
    the device-key file)."""
    if settings.releases:
        return settings.releases
    from .datastore import beside
    return beside(settings, "releases")


def load(root, version):
    """A published release {version, manifest (text), sig, files {path: (len, sha256)},
    kind}, or None if there is no complete, well-formed release of that version."""
    if not isinstance(version, str) or not releases.VERSION.fullmatch(version):
        return None
    try:
        text, sig = releases.read_signed(os.path.join(root, version))
        manifest = releases.parse_manifest(text)
    except ReleaseError:
        return None
    if manifest["version"] != version:
        return None
    return {"version": version, "manifest": text, "sig": sig,
            "files": releases.files_of(manifest),
            "kind": "image" if "image" in manifest else "files"}


def versions(root):
    """The published versions, oldest first."""
    try:
        names = os.listdir(root)
    except OSError:
        return []
    found = [n for n in names if load(root, n) is not None]
    return sorted(found, key=releases.version_key)


def view(release):
    """The operator API's view of a release."""
    return {"version": release["version"], "kind": release["kind"],
            "manifest": release["manifest"], "sig": release["sig"],
            "files": [{"path": p, "len": n, "sha256": h}
                      for p, (n, h) in sorted(release["files"].items())]}


def chunk(root, fetch, cap=CHUNK_MAX):
    """The `chunk` answering a `fetch` {version, path, offset, len}: at most `cap` bytes of a
    file the release's manifest lists, or {version, path, error}."""
    head = {"version": fetch.version, "path": fetch.path}
    release = load(root, fetch.version)
    if release is None:
        return dict(head, error="no such release")
    if fetch.path not in release["files"]:
        return dict(head, error="no such file in release")
    base = os.path.realpath(os.path.join(root, fetch.version))
    full = os.path.realpath(os.path.join(base, *fetch.path.split("/")))
    if not full.startswith(base + os.sep):
        return dict(head, error="no such file in release")
    try:
        with open(full, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            if size != release["files"][fetch.path][0]:
                return dict(head, error="file does not match the manifest")
            if fetch.offset > size:
                return dict(head, error="offset beyond the end of the file")
            f.seek(fetch.offset)
            data = f.read(min(fetch.len, cap))
    except OSError:
        return dict(head, error="file unreadable")
    return dict(head, offset=fetch.offset, size=size, data=base64.b64encode(data).decode())
