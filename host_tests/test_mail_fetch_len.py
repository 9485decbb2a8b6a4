"""A meter on email asks for 8 KiB firmware chunks (mail_comms.FETCH_LEN); parsing such an
answer holds about twice the heap of a 4 KiB one (docs/email.md). A mail refused for a
MemoryError halves the link's fetch_len, never below the updater's own FETCH_LEN, so a
download on a tight heap goes on in smaller chunks instead of failing on the same chunk
for ever; other refusals leave it."""

import mail_comms
import pytest
from mail_comms import MailComms

from lab import runner

pytestmark = pytest.mark.unit


class Box:
    next_seq = 1


def _link():
    return MailComms("m1", b"k" * 32, "mail.test", "m1@mail.test", "pw", "he@mail.test", Box(),
                     None, None, None, None)


def test_a_memory_error_halves_the_fetch_length(monkeypatch):
    link = _link()
    assert link.fetch_len == mail_comms.FETCH_LEN == 8192
    link.down(b"not a mail")                          # refused as malformed: unchanged
    assert link.fetch_len == 8192 and link.counts["refused"] == 1

    def full(raw):
        raise MemoryError("memory allocation failed, allocating 15049 bytes")

    monkeypatch.setattr(mail_comms.mail_mime, "parse", full)
    link.down(b"x")
    assert link.fetch_len == 4096 and "MemoryError" in link.last_error
    link.down(b"x")
    assert link.fetch_len == runner.import_firmware("updater").FETCH_LEN == 4096
    assert link.counts["refused"] == 3
