"""Meters that exchange by mail (docs/email.md "The meter's mail transport"), in the mail
gateway: a meter's mail carries its signed request (`<sig> <json>`, base64 in a part of
type application/x-backchannel-exchange, firmware/mail_mime.py) and goes through
exchange.handle(), exactly the checks and storage of POST /v1/exchange and MQTT; the
signed answer is mailed back to the meter's address, `<device>@<the head-end's domain>`.

- The mail's From must be that address and its X-BC-Device the body's `device`; the MAC
  over the decoded bytes is what proves the meter (a From proves nothing). A replayed mail
  is refused by the request's nonce; a refusal stores nothing and answers nothing, except
  the signed time refusal, which the meter acts on.
- Push: when work is queued for a meter whose last exchange was by mail, the response
  carrying it is mailed at once (bound to the meter's run nonce `conn`, as over MQTT); the
  meter's IMAP IDLE sees it within a second."""

import base64
import binascii
import email
import email.parser
import email.policy
import email.utils
import logging
from email.utils import formatdate, make_msgid

from . import devices, exchange

log = logging.getLogger("backchannel.mail")

TYPE = "application/x-backchannel-exchange"
MAX_MAIL = 64 * 1024        # firmware/mail_mime.py MAX_MAIL
MAX_PAYLOAD = 44 * 1024     # firmware/mail_mime.py MAX_PAYLOAD


class Refused(Exception):
    """A meter's mail with no effect; the reason is logged."""


def is_meter_mail(raw):
    """Whether a mail says it is a meter's exchange (X-BC-Device), from its headers only."""
    try:
        head = email.parser.BytesHeaderParser(policy=email.policy.compat32).parsebytes(raw)
        return head.get("X-BC-Device") is not None
    except Exception:
        return False


def compose(sender, to, device, payload):
    """The mail (bytes) carrying a signed answer to a meter; the layout the meter's parser
    takes (single part, base64 at 76 characters a line)."""
    head = ("From: %s\r\nTo: %s\r\nSubject: bc answer %s\r\nDate: %s\r\nMessage-ID: %s\r\n"
            "X-BC-Device: %s\r\nAuto-Submitted: auto-replied\r\nMIME-Version: 1.0\r\n"
            "Content-Type: %s\r\nContent-Transfer-Encoding: base64\r\n\r\n"
            % (sender, to, device, formatdate(usegmt=True),
               make_msgid(domain=sender.split("@")[1]), device, TYPE))
    return head.encode() + base64.encodebytes(payload).replace(b"\n", b"\r\n")


def parse(raw, domain):
    """(device, signature, signed bytes) of a meter's mail, or Refused saying why."""
    if len(raw) > MAX_MAIL:
        raise Refused("too large: %d bytes (at most %d)" % (len(raw), MAX_MAIL))
    try:
        msg = email.message_from_bytes(raw, policy=email.policy.default)
        if msg.defects:
            raise Refused("malformed MIME: %s" % type(msg.defects[0]).__name__)
        device = str(msg.get("X-BC-Device") or "").strip()
        senders = email.utils.getaddresses(msg.get_all("From", []))
        part = _part(msg)
        cte = str(part.get("Content-Transfer-Encoding", "")).strip().lower()
        text = part.get_payload(decode=False)
    except Refused:
        raise
    except Exception as e:      # the email package raises many kinds on hostile input
        raise Refused("malformed MIME: %s" % type(e).__name__) from None
    if not device or len(device) > 64:
        raise Refused("no X-BC-Device")
    want = "%s@%s" % (device.lower(), domain.lower())
    if len(senders) != 1 or senders[0][1].lower() != want:
        raise Refused("From %r is not meter %s's address %s" % (
            ",".join(a for _, a in senders)[:80], device, want))
    if cte != "base64" or not isinstance(text, str):
        raise Refused("the exchange part is not base64")
    text = "".join(text.split())
    if len(text) > (MAX_PAYLOAD + 2) // 3 * 4:
        raise Refused("payload over %d bytes" % MAX_PAYLOAD)
    try:
        payload = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise Refused("the exchange part is not base64") from None
    sig, sep, body = payload.partition(b" ")
    if not sep or len(sig) != 64:
        raise Refused("payload is not '<signature> <body>'")
    return device, sig.decode("latin-1"), body


def _part(msg):
    if msg.get_content_type() == TYPE:
        return msg
    if msg.get_content_type() == "multipart/mixed":
        for part in list(msg.iter_parts())[:8]:
            if part.get_content_type() == TYPE:
                return part
    raise Refused("no %s part" % TYPE)


class MeterMail:
    """The meter side of a MailGateway: `gateway.send_raw(to, bytes)` queues a mail."""

    def __init__(self, gateway):
        self.gw = gateway
        self.hub = gateway.hub
        self.address = gateway.s.mail_address
        self.domain = self.address.split("@")[1]
        self.loop = None
        self.scheduled = set()
        self.counts = {"answered": 0, "pushed": 0, "refused": 0}

    def address_of(self, device):
        return "%s@%s" % (device, self.domain)

    async def handle(self, raw):
        """Exchange one meter's mail; Refused (logged by the caller) when it has no effect."""
        device, sig, body = parse(raw, self.domain)
        try:
            _, key, answer = await exchange.handle(self.hub, body, sig, "email",
                                                   topic_device=device)
        except exchange.Refused as e:
            if e.answer is not None:        # the signed time refusal: the meter retries
                self.reply(device, e.key, e.answer)
            self.counts["refused"] += 1
            raise Refused("exchange refused: %s" % e.reason) from None
        self.reply(device, key, answer)
        self.counts["answered"] += 1

    def reply(self, device, key, answer):
        body, sig = exchange.signed(key, answer)
        self.gw.send_raw(self.address_of(device),
                         compose(self.address, self.address_of(device), device,
                                 sig.encode() + b" " + body))

    # --- push (hub.wake_hooks, any thread) ---
    def start(self, loop):
        self.loop = loop
        self.hub.wake_hooks.append(self.on_wake)

    def stop(self):
        if self.on_wake in self.hub.wake_hooks:
            self.hub.wake_hooks.remove(self.on_wake)

    def on_wake(self, device):
        try:
            self.loop.call_soon_threadsafe(self._schedule, device)
        except RuntimeError:        # the loop is closed: shutting down
            pass

    def _schedule(self, device):
        if device not in self.scheduled:
            self.scheduled.add(device)
            self.loop.call_soon(self._push, device)

    def _push(self, device):
        self.scheduled.discard(device)
        row = devices.get(self.hub.db, device)
        if row is None or row["transport"] != "email":
            return
        answer = exchange.push(self.hub, device)
        if answer is not None:
            self.reply(device, row["key"], answer)
            self.counts["pushed"] += 1
