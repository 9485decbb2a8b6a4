# Whole-image firmware update for ESP32 builds with OTA partitions (docs/ota.md), through
# MicroPython's esp32.Partition block device. Import it as `boards.esp32_ota`.
#
#   w = ImageWriter()                 # the next OTA partition after the running one
#   w.begin(length, offset=0)         # offset: a block-aligned resume point (w.flushed())
#   w.write(chunk) ...                # sequential; full 4096-byte blocks go to flash
#   w.finish()                        # flushes the last partial block (padded with 0xFF)
#   w.verify(sha256_hex, length)      # reads the image back from flash and hashes it
#   w.switch()                        # set_boot: the new image runs after the next reset
#   ImageWriter.confirm()             # on the new image, after its first healthy exchange
#
# Only whole blocks reach the flash, so after a power cut the image is intact up to the last
# flushed() offset: record it with the download state and resume there. Until confirm(), the
# ESP-IDF bootloader rolls back to the previous image at the next reset.

import hashlib
from binascii import hexlify

import esp32

IOCTL_BLOCK_COUNT = 4
IOCTL_BLOCK_SIZE = 5


def next_update_partition():
    """The OTA partition to write; OSError with a clear message on builds without OTA."""
    try:
        return esp32.Partition(esp32.Partition.RUNNING).get_next_update()
    except OSError as e:
        raise OSError("no OTA update partition: this build has no OTA partition table "
                      "(whole-image updates need one; error %s)" % (e.args[0] if e.args else e))


def _label(partition):
    return partition.info()[4]


class ImageWriter:
    def __init__(self, partition=None):
        if partition is None:
            partition = next_update_partition()
        running = esp32.Partition(esp32.Partition.RUNNING)
        if partition.info() == running.info():
            raise ValueError("refusing to write the running partition %r" % _label(running))
        self.partition = partition
        self.block_size = partition.ioctl(IOCTL_BLOCK_SIZE, 0)
        self.blocks = partition.ioctl(IOCTL_BLOCK_COUNT, 0)
        self.buf = bytearray(self.block_size)
        self.length = None   # announced image size, set by begin()
        self.block = 0       # next block number to write
        self.fill = 0        # bytes waiting in buf
        self.verified = False

    def capacity(self):
        return self.blocks * self.block_size

    def flushed(self):
        """Bytes of the image durably in flash: the resume offset after a power cut."""
        return self.block * self.block_size

    def received(self):
        return self.flushed() + self.fill

    def begin(self, length, offset=0):
        if not isinstance(length, int) or length <= 0:
            raise ValueError("image length must be a positive integer, got %r" % (length,))
        if length > self.capacity():
            raise ValueError("image of %d bytes does not fit partition %r (%d bytes)"
                             % (length, _label(self.partition), self.capacity()))
        if not isinstance(offset, int) or offset < 0 or offset > length \
                or offset % self.block_size:
            raise ValueError("resume offset %r must be a multiple of %d within the image "
                             "(%d bytes)" % (offset, self.block_size, length))
        self.length = length
        self.block = offset // self.block_size
        self.fill = 0
        self.verified = False

    def write(self, data):
        """Append `data` (any buffer) to the image; whole blocks are written to flash."""
        if self.length is None:
            raise ValueError("begin() first")
        n = len(data)
        if self.received() + n > self.length:
            raise ValueError("image longer than announced: %d + %d > %d bytes"
                             % (self.received(), n, self.length))
        self.verified = False
        src = memoryview(data)
        buf, size, pos = self.buf, self.block_size, 0
        while pos < n:
            if self.fill == 0 and n - pos >= size:  # whole block straight from the input
                self.partition.writeblocks(self.block, src[pos:pos + size])
                self.block += 1
                pos += size
                continue
            take = min(size - self.fill, n - pos)
            buf[self.fill:self.fill + take] = src[pos:pos + take]
            self.fill += take
            pos += take
            if self.fill == size:
                self._flush()

    def _flush(self):
        self.partition.writeblocks(self.block, self.buf)  # erases the block, then writes
        self.block += 1
        self.fill = 0

    def finish(self):
        """Flush the last partial block (padded with erased-flash 0xFF); returns the length."""
        if self.length is None:
            raise ValueError("begin() first")
        if self.received() != self.length:
            raise ValueError("image incomplete: %d of %d bytes" % (self.received(), self.length))
        if self.fill:
            buf = self.buf
            for i in range(self.fill, self.block_size):
                buf[i] = 0xFF
            self._flush()
        return self.length

    def verify(self, sha256_hex, length):
        """True when the first `length` bytes of the partition hash to `sha256_hex`."""
        if self.fill:
            raise ValueError("finish() before verify(): %d bytes not flushed" % self.fill)
        self.verified = False
        if not isinstance(length, int) or length <= 0 or length > self.capacity():
            return False
        h = hashlib.sha256()
        buf, size = self.buf, self.block_size
        view = memoryview(buf)
        block, left = 0, length
        while left > 0:
            self.partition.readblocks(block, buf)
            h.update(view[:left] if left < size else view)
            left -= size
            block += 1
        self.verified = hexlify(h.digest()).decode() == str(sha256_hex).lower()
        return self.verified

    def switch(self):
        """Boot the new image at the next reset (after a successful verify())."""
        if not self.verified:
            raise ValueError("verify() the image before switching to it")
        try:
            self.partition.set_boot()
        except OSError as e:  # the ESP-IDF checks the image header and checksum first
            raise OSError("set_boot refused partition %r (not a valid app image?): error %s"
                          % (_label(self.partition), e.args[0] if e.args else e))

    @staticmethod
    def confirm():
        """Mark the running image valid (no rollback); False when the build has no rollback."""
        try:
            esp32.Partition.mark_app_valid_cancel_rollback()
        except OSError:
            return False
        return True
