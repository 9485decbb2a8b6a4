# Small file-system helpers for firmware updates (os has no path module on MicroPython).

import hashlib
import os
from binascii import hexlify

_DIR = 0x4000


def size(path):
    """The file's size in bytes, -1 when it does not exist."""
    try:
        return os.stat(path)[6]
    except OSError:
        return -1


def is_dir(path):
    try:
        return bool(os.stat(path)[0] & _DIR)
    except OSError:
        return False


def mkdir(path):
    try:
        os.mkdir(path)
    except OSError:
        pass


def makedirs(path):
    """path and its parents (a relative path, or an absolute one under existing roots)."""
    k = path.find("/", 1)
    while k > 0:
        mkdir(path[:k])
        k = path.find("/", k + 1)
    mkdir(path)


def rmtree(path):
    if not is_dir(path):
        try:
            os.remove(path)
        except OSError:
            pass
        return
    for name in os.listdir(path):
        rmtree(path + "/" + name)
    try:
        os.rmdir(path)
    except OSError:
        pass


def rename(old, new):
    os.rename(old, new)


def remove(path):
    try:
        os.remove(path)
    except OSError:
        pass


def sha256_hex(path, block=1024):
    h = hashlib.sha256()
    buf = bytearray(block)
    mv = memoryview(buf)
    with open(path, "rb") as f:
        while True:
            n = f.readinto(buf)
            if not n:
                break
            h.update(mv[:n])
    return hexlify(h.digest()).decode()
