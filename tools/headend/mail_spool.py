"""The mail gateway's durable outbox (docs/email.md "When the mail server restarts"): one
file per mail not yet accepted by the SMTP server, in a directory next to the database
(`mail-outbox`, or settings.mail_outbox), written to a temporary name, fsynced and renamed,
so a head-end that stops (crash, kill -9, restart) sends them when it starts again. A mail
is deleted only once the server accepted it: a crash between the two sends it twice, which
the receiver's dedupe absorbs (a meter's inbox and nonce binding, an operator's eyes).

Files are `<ns>-<rand>.mail`: the first line is the recipient, the rest the mail's bytes.
A file that cannot be read as that is moved to `bad/` with a logged reason, never retried
for ever."""

import json
import logging
import os
import re
import time

log = logging.getLogger("backchannel.mail")

NAME = re.compile(r"^\d{19,20}-[0-9a-f]{8}\.mail$")


def directory(settings):
    """settings.mail_outbox, or `mail-outbox` next to the database file (datastore.beside)."""
    if getattr(settings, "mail_outbox", None):
        return settings.mail_outbox
    from .datastore import beside
    return beside(settings, "mail-outbox")


class Spool:
    def __init__(self, path):
        self.path = path
        os.makedirs(path, mode=0o700, exist_ok=True)
        for name in os.listdir(path):       # a write the crash cut short: never renamed
            if name.endswith(".tmp"):
                os.unlink(os.path.join(path, name))

    def put(self, to, raw):
        """Keep one mail for `to` (an address) on disk; returns its name."""
        if "\n" in to or "\r" in to:
            raise ValueError("recipient with a line break")
        name = "%020d-%s.mail" % (time.time_ns(), os.urandom(4).hex())
        tmp = os.path.join(self.path, name + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, to.encode() + b"\n" + raw)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.rename(tmp, os.path.join(self.path, name))
        self._sync_dir()
        return name

    def names(self):
        return sorted(n for n in os.listdir(self.path) if NAME.match(n))

    def __len__(self):
        return len(self.names())

    def read(self, name):
        """(recipient, raw bytes), or None for a file that is not a spooled mail (moved
        aside)."""
        try:
            with open(os.path.join(self.path, name), "rb") as f:
                data = f.read()
        except FileNotFoundError:
            return None
        to, sep, raw = data.partition(b"\n")
        try:
            to = to.decode("ascii")
        except UnicodeError:
            sep = b""
        if not sep or "@" not in to or not raw:
            self.set_aside(name, "not a spooled mail")
            return None
        return to, raw

    def done(self, name):
        try:
            os.unlink(os.path.join(self.path, name))
        except FileNotFoundError:
            pass
        self._sync_dir()

    def set_aside(self, name, reason):
        bad = os.path.join(self.path, "bad")
        os.makedirs(bad, mode=0o700, exist_ok=True)
        os.replace(os.path.join(self.path, name), os.path.join(bad, name))
        log.error("mail outbox: %s moved to %s: %s", name, bad, reason)

    def _sync_dir(self):
        fd = os.open(self.path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


class Pending:
    """Work queued by a mail command whose result is still to be mailed: {num: (address,
    subject, message id)} in one JSON file, replaced atomically on every change, so a
    restart still mails the result."""

    def __init__(self, path):
        self.path = path
        try:
            with open(path) as f:
                self.items = {int(k): tuple(v) for k, v in json.load(f).items()}
        except FileNotFoundError:
            self.items = {}
        except (ValueError, TypeError, AttributeError) as e:
            log.error("mail: %s unreadable (%s); results of earlier mail commands will not "
                      "be mailed", path, e)
            self.items = {}

    def __setitem__(self, num, value):
        self.items[num] = tuple(value)
        self._save()

    def __delitem__(self, num):
        del self.items[num]
        self._save()

    def __len__(self):
        return len(self.items)

    def snapshot(self):
        return list(self.items.items())

    def _save(self):
        tmp = self.path + ".tmp"
        with open(tmp, "w") as f:
            json.dump({str(k): list(v) for k, v in self.items.items()}, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)
