"""What the head-end exposes beyond its owner: files other users could read (the database
holds every device key in clear; token files and keys are secrets too) and listeners other
hosts could reach in clear (docs/security.md "Head-end limits")."""

import ipaddress
import os
import stat
import tempfile
from contextlib import suppress

PRIVATE = 0o600


def is_loopback(host):
    """True for 127.0.0.0/8, ::1 and `localhost`; any other address or name is not."""
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def create_private(path):
    """Create `path` (empty) readable by its owner only, unless it exists."""
    with suppress(FileExistsError):
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE))


def narrow(path):
    """Take group and other permissions off an existing regular file we own; False if
    there is nothing at `path`."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return False
    mode = stat.S_IMODE(st.st_mode)
    if stat.S_ISREG(st.st_mode) and mode & 0o077:
        with suppress(PermissionError):
            os.chmod(path, mode & 0o700)
    return True


def readable_by_others(path):
    try:
        return bool(os.stat(path).st_mode & 0o077)
    except OSError:
        return False


def write_private(path, text):
    """Write a file readable by its owner only, atomically (never visible with a wider
    mode: mkstemp creates it 0600)."""
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(str(path)) or ".", prefix=".tmp-")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.chmod(tmp, PRIVATE)
        os.replace(tmp, path)
    except BaseException:
        with suppress(OSError):
            os.unlink(tmp)
        raise
