# An image release's one file (docs/ota.md), written through the board's image writer
# (boards/esp32_ota.py ImageWriter: capacity, begin, write, finish, verify, switch, confirm).
# The writer keeps a partial flash block in RAM: only `durable` bytes survive a reset, so
# that is the offset the job records, while `received` is where the next fetch starts.
# Writer errors (OSError, ValueError) become Refused with the reason to report.

from fw_manifest import Refused


def _writer(board):
    make = getattr(board, "image_writer", None)
    if make is None:
        raise Refused("bad manifest: this board takes no whole image")
    try:
        return make()
    except (OSError, ValueError) as exc:
        raise Refused("bad manifest: no image partition (%s)" % (exc,))


class ImageSink:
    def __init__(self, board):
        self.board = board
        self.w = None
        self.received = None  # bytes written this boot (None: nothing yet, resume at durable)
        self.verified = False

    def _open(self):
        if self.w is None:
            self.w = _writer(self.board)
        return self.w

    def capacity(self):
        return self._open().capacity()

    def have(self, durable):
        return durable if self.received is None else self.received

    def write(self, length, durable, data):
        """Append data; returns the new durable offset (a flash block boundary or length)."""
        try:
            w = self._open()
            if self.received is None:
                w.begin(length, durable)
                self.received = durable
            w.write(data)
            self.received += len(data)
            if self.received == length:
                w.finish()
                return length
            flushed = w.flushed() if hasattr(w, "flushed") else self.received
            return min(flushed, length)
        except (OSError, ValueError) as exc:
            raise Refused("image write failed: %s" % (exc,))

    def verify(self, sha256_hex, length):
        try:
            self.verified = bool(self._open().verify(sha256_hex, length))
        except (OSError, ValueError) as exc:
            raise Refused("image write failed: %s" % (exc,))
        return self.verified

    def switch(self, sha256_hex, length):
        """Set the image to boot (verified again first after a reset)."""
        if not self.verified and not self.verify(sha256_hex, length):
            raise Refused("hash mismatch: firmware.bin")
        try:
            self._open().switch()
        except (OSError, ValueError) as exc:
            raise Refused("image switch refused: %s" % (exc,))

    def confirm(self):
        try:
            self._open().confirm()
        except (OSError, ValueError, Refused):  # a build without rollback: nothing to cancel
            pass
