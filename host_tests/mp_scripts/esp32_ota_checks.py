# boards/esp32_ota.py on the fake esp32.Partition (host_tests/fakes), under MicroPython and
# CPython.
#   esp32_ota_checks.py ROOT   reads the image (hex, one line) and its sha256 (hex, second
#   line) from stdin; prints one JSON document of what the writer did (test_esp32_ota.py).

import gc
import hashlib
import json
import sys
from binascii import hexlify, unhexlify

import esp32  # the fake

from boards.esp32_ota import ImageWriter

ROOT = sys.argv[1]

CHUNKS = (1000, 8192, 3, 4096, 5000, 1)  # cycled: odd sizes cross block boundaries


def sha(data):
    return hexlify(hashlib.sha256(data).digest()).decode()


def error(fn, *args):
    try:
        fn(*args)
        return ["ok"]
    except (ValueError, OSError) as e:
        return [type(e).__name__, str(e)]


def feed(writer, image, start, stop):
    pos, k = start, 0
    while pos < stop:
        n = min(CHUNKS[k % len(CHUNKS)], stop - pos)
        writer.write(image[pos:pos + n])
        pos += n
        k += 1


def full_write(image, digest):
    esp32.partition_table()
    w = ImageWriter()
    out = {"target": w.partition.info()[4], "capacity": w.capacity()}
    w.begin(len(image))
    out["switch_before_verify"] = error(w.switch)
    feed(w, image, 0, len(image))
    out["finish"] = w.finish()
    out["verify"] = w.verify(digest, len(image))
    out["verify_upper"] = w.verify(digest.upper(), len(image))
    out["verify_wrong_length"] = w.verify(digest, len(image) - 1)
    out["verify_wrong_digest"] = w.verify(sha(image + b"x"), len(image))
    w.verify(digest, len(image))
    w.switch()
    flash = esp32.FLASH[out["target"]]
    out["flash_sha"] = sha(bytes(flash[:len(image)]))
    out["flash_tail_erased"] = all(b == 0xFF for b in flash[len(image):])
    out["running_untouched"] = all(b == 0xFF for b in esp32.FLASH["ota_0"])
    out["boot"] = esp32.Partition(esp32.Partition.BOOT).info()[4]
    out["set_boot"] = esp32.STATE["set_boot"]
    esp32.corrupt(out["target"], len(image) // 2)
    out["verify_corrupted"] = w.verify(digest, len(image))
    return out


def resume(image, digest, cut):
    esp32.partition_table(running="ota_1")
    w = ImageWriter()
    w.begin(len(image))
    feed(w, image, 0, cut)
    out = {"target": w.partition.info()[4], "flushed_at_cut": w.flushed()}
    # power cut: the writer and its unflushed buffer are gone; a new one resumes
    w = ImageWriter()
    out["misaligned"] = error(w.begin, len(image), out["flushed_at_cut"] + 1)
    out["beyond"] = error(w.begin, len(image), len(image) + 4096)
    w.begin(len(image), out["flushed_at_cut"])
    feed(w, image, out["flushed_at_cut"], len(image))
    w.finish()
    out["verify"] = w.verify(digest, len(image))
    out["erases"] = esp32.STATE["erases"]
    return out


def limits(image):
    esp32.partition_table()
    w = ImageWriter()
    cap = w.capacity()
    out = {"oversize": error(w.begin, cap + 1), "exact": error(w.begin, cap),
           "zero": error(w.begin, 0), "write_before_begin": error(ImageWriter().write, b"x")}
    w.begin(10)
    out["too_long"] = error(w.write, b"x" * 11)
    w.write(b"x" * 4)
    out["finish_short"] = error(w.finish)
    out["verify_unflushed"] = error(w.verify, "00" * 32, 4)
    out["running"] = error(ImageWriter, esp32.Partition("ota_0"))
    esp32.partition_table(app_partitions=(("factory", 16),), running="factory")
    out["no_ota"] = error(ImageWriter)
    esp32.partition_table()
    bad = bytearray(image[:5000])
    bad[0] = 0
    w = ImageWriter()
    w.begin(len(bad))
    w.write(bad)
    w.finish()
    w.verify(sha(bad), len(bad))
    out["switch_invalid_image"] = error(w.switch)
    out["boot_after_invalid"] = esp32.STATE["boot"]
    return out


def confirm():
    esp32.partition_table(rollback=True)
    out = {"enabled": ImageWriter.confirm(), "marked": esp32.STATE["marked_valid"]}
    esp32.partition_table(rollback=False)
    out["disabled"] = ImageWriter.confirm()
    return out


class NullPartition:
    """Accepts blocks and keeps nothing: isolates the writer's own heap use."""

    def info(self):
        return (0, 0x11, 0, 64 * 4096, "null", False)

    def ioctl(self, cmd, arg):
        return {4: 64, 5: 4096}.get(cmd)

    def writeblocks(self, block_num, buf):
        pass


def heap_per_write(image):
    """MicroPython: bytes allocated per write() of 1000-byte chunks (None under CPython)."""
    if not hasattr(gc, "mem_alloc"):
        return None
    esp32.partition_table()
    w = ImageWriter(NullPartition())
    w.begin(len(image))
    chunks = [image[i:i + 1000] for i in range(0, len(image) - 1000, 1000)]
    gc.collect()
    gc.disable()
    before = gc.mem_alloc()
    for c in chunks:
        w.write(c)
    used = gc.mem_alloc() - before
    gc.enable()
    return used / len(chunks)


def main():
    lines = sys.stdin.read().split()
    image, digest = unhexlify(lines[0]), lines[1]
    print(json.dumps({"full": full_write(image, digest),
                      "resume": resume(image, digest, 3 * 4096 + 2500),
                      "limits": limits(image), "confirm": confirm(),
                      "heap_per_write": heap_per_write(image)}))


main()
