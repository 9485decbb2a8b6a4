"""Operator commands by email (docs/email.md): parsing a received mail strictly, proving
the sender, and what each command does.

A From address proves nothing: any SMTP client can write any From, and many servers on
the way do not check it. So an operator mapped by address (settings.mail_operators) must
also put a line `token: SECRET` in the body; the secret's SHA-256 is stored, and compared in
constant time. A mail from an unmapped address, or without the right secret, gets no answer
at all (an answer would go to whoever was forged as the sender: backscatter).

Commands, one a line (quoted `>` lines and the signature after `-- ` are ignored):
`presence METER`, `presence GROUP`, `read METER`, `ack ALARM-ID`, `help`. They go through
the same queue, roles, policy and audit as the REST API (operator_actions.py, channel
"email")."""

import email
import email.policy
import email.utils
import hashlib
import hmac
import re

from . import devices, groups, operator_actions, workq
from .xmpp_chat import ack_alarm, presence_line, result_text

MAX_MAIL = 64 * 1024            # bytes of a whole mail; larger ones are not parsed
MAX_BODY = 4000                 # characters of its text
MAX_COMMANDS = 5
ADDRESS = re.compile(r"^[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]{1,64}@[A-Za-z0-9.-]{1,253}$")
TOKEN_LINE = re.compile(r"^token:\s*(\S+)\s*$", re.IGNORECASE)
HELP = ("commands (one a line, with your `token: SECRET` line): presence METER | "
        "presence GROUP | read METER | ack ALARM-ID | help")


class Rejected(Exception):
    """A mail that has no effect; the reason is logged, never answered."""


def is_address(text):
    return bool(ADDRESS.match(text or "")) and ".." not in text


def hash_secret(secret):
    return "sha256:" + hashlib.sha256(secret.encode()).hexdigest()


def secret_ok(stored, given):
    """Constant time in the secret: both sides are hashed to the same length first."""
    if not stored or given is None:
        return False
    return hmac.compare_digest(hash_secret(given).encode(), str(stored).encode())


class Mail:
    def __init__(self, sender, message_id, subject, text):
        self.sender, self.message_id, self.subject, self.text = (sender, message_id, subject,
                                                                 text)


def parse(raw):
    """A Mail from raw bytes, or Rejected: too large, malformed MIME, no single sender, no
    Message-ID, no text part."""
    if len(raw) > MAX_MAIL:
        raise Rejected("too large: %d bytes (at most %d)" % (len(raw), MAX_MAIL))
    try:
        msg = email.message_from_bytes(raw, policy=email.policy.default)
        if msg.defects:
            raise Rejected("malformed MIME: %s" % type(msg.defects[0]).__name__)
        senders = email.utils.getaddresses(msg.get_all("From", []))
        message_id = (msg.get("Message-ID") or "").strip()
        subject = str(msg.get("Subject") or "")[:200]
        part = msg.get_body(preferencelist=("plain",))
        text = part.get_content() if part is not None else None
    except Rejected:
        raise
    except Exception as e:      # the email package raises many kinds on hostile input
        raise Rejected("malformed MIME: %s" % type(e).__name__) from None
    if len(senders) != 1 or not is_address(senders[0][1]):
        raise Rejected("not one sender address in From")
    if not message_id or len(message_id) > 250:
        raise Rejected("no Message-ID")
    if not isinstance(text, str):
        raise Rejected("no text/plain part")
    if len(text) > MAX_BODY:
        raise Rejected("text too long: %d characters (at most %d)" % (len(text), MAX_BODY))
    return Mail(senders[0][1].lower(), message_id, subject, text)


def lines_of(text):
    """(secret or None, command lines): quoted lines and the signature are skipped."""
    secret, commands = None, []
    for line in text.splitlines():
        if line.rstrip() == "--":
            break
        line = line.strip()
        if not line or line.startswith(">"):
            continue
        m = TOKEN_LINE.match(line)
        if m:
            secret = m.group(1)
        else:
            commands.append(line)
    return secret, commands


def authenticate(hub, operators, mail):
    """The Principal the mail speaks for, or Rejected (never answered)."""
    entry = operators.get(mail.sender)
    if not isinstance(entry, dict):
        raise Rejected("unknown sender %s" % mail.sender)
    secret, _ = lines_of(mail.text)
    if secret is None:
        raise Rejected("no token line from %s" % mail.sender)
    if not secret_ok(entry.get("secret"), secret):
        raise Rejected("wrong secret from %s" % mail.sender)
    who = operator_actions.principal_named(hub.db, entry.get("token"))
    if who is None:
        raise Rejected("token %r of %s is revoked, expired or unknown"
                       % (entry.get("token"), mail.sender))
    return who


def handle(hub, who, text):
    """([reply paragraphs], [queued work rows]) for the commands in `text`."""
    _, commands = lines_of(text)
    if not commands:
        return [HELP], []
    replies, rows = [], []
    for line in commands[:MAX_COMMANDS]:
        reply, row = command(hub, who, line)
        replies.append("> %s\n%s" % (line[:80], reply))
        if row is not None:
            rows.append(row)
    if len(commands) > MAX_COMMANDS:
        replies.append("only the first %d commands were read" % MAX_COMMANDS)
    return replies, rows


def command(hub, who, line):
    words = line.lower().split()
    cmd, args = words[0], words[1:]
    if cmd == "help" and not args:
        return HELP, None
    if cmd == "ack" and len(args) == 1 and args[0].isdigit():
        return ack_alarm(hub, who, int(args[0]), "email"), None
    if cmd == "presence" and len(args) == 1:
        return _presence_of(hub, who, args[0]), None
    if cmd == "read" and len(args) == 1:
        try:
            row = operator_actions.queue(hub, who, args[0], "read", {}, "email")
        except operator_actions.ActionRefused as e:
            return "refused (%d): %s" % (e.status, e.reason), None
        return "queued read as %s; the answer follows by mail" % workq.wid(row["num"]), row
    return "unknown command %r; %s" % (line[:40], HELP), None


def _presence_of(hub, who, name):
    if devices.get(hub.db, name) is not None and who.sees(hub.db, name):
        return presence_line(hub, name)
    group = groups.get(hub.db, name)
    if group is not None and who.sees_group(name):
        return "\n".join(presence_line(hub, m) for m in group["members"]) or "%s: no meters" % name
    return "refused: no meter or group %s" % name


def result_mail(row):
    return result_text(row)
