# Power-fail-safe small records on littlefs: write a temp file, then rename over the old one.
# A record is: magic b"BC1", payload length (u32 LE), payload, crc32 of payload (u32 LE).

import os
import struct
from binascii import crc32

MAGIC = b"BC1"


class CorruptRecord(ValueError):
    pass


def encode(payload):
    return MAGIC + struct.pack("<I", len(payload)) + payload + struct.pack("<I", crc32(payload))


def decode(data):
    if len(data) < 11 or data[:3] != MAGIC:
        raise CorruptRecord("bad header")
    (size,) = struct.unpack("<I", data[3:7])
    if len(data) != 11 + size:
        raise CorruptRecord("length %d does not match header %d" % (len(data) - 11, size))
    payload = data[7:7 + size]
    (crc,) = struct.unpack("<I", data[7 + size:])
    if crc32(payload) != crc:
        raise CorruptRecord("crc mismatch")
    return payload


def write_record(path, payload):
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(encode(payload))
    os.rename(tmp, path)


def read_record(path):
    """The payload, None if the file does not exist, CorruptRecord if it is damaged."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError:
        return None
    return decode(data)


def write_generation(path, gen, payload):
    """Alternate between two slots so a damaged newest slot still leaves the previous one."""
    write_record("%s.%d" % (path, gen % 2), struct.pack("<I", gen) + payload)


def read_latest_generation(path):
    """(gen, payload, damaged_slots) of the newest intact slot; (None, None, n) if none."""
    best = None
    damaged = 0
    for slot in (0, 1):
        try:
            data = read_record("%s.%d" % (path, slot))
        except CorruptRecord:
            damaged += 1
            continue
        if data is None or len(data) < 4:
            continue
        (gen,) = struct.unpack("<I", data[:4])
        if best is None or gen > best[0]:
            best = (gen, data[4:])
    if best is None:
        return None, None, damaged
    return best[0], best[1], damaged
