"""The meter's exchange, whatever the transport: check size, signature and replay; store the
meter's items; answer with the deliverable work (after a long-poll over HTTP). Refused
requests store nothing.

`handle()` is the one core every transport uses: POST /v1/exchange (below), the MQTT bridge
(mqtt_bridge.py, `bc/<id>/up`) and the mail gateway (mail_meters.py). The answer's side (the
long-poll, the work sent, `push()` for MQTT, XMPP and email) is delivery.py. On PostgreSQL
the statements run off the event loop (hub.off_loop)."""

import asyncio
import time

from fastapi import APIRouter, HTTPException, Request, Response
from pydantic import ValidationError

from . import (
    devices,
    encodings,
    ingest,
    key_rotation,
    metrics,
    release_store,
    signing,
)
from .delivery import PROTOCOL, bind, deliver, first_look, push  # noqa: F401 (.push)
from .models import ErrorOut, ExchangeRequest, ExchangeResponse

router = APIRouter(tags=["exchange"])

TRANSPORTS = ("http", "mqtt", "email", "xmpp")

_DOC = {
    "summary": "The meter's exchange (docs/protocol.md)",
    "description": "Body signed with `X-BC-Signature` (hex HMAC-SHA256 with the meter's key). "
                   "The response is signed the same way. Held up to `wait` seconds (long-poll) "
                   "when no work is queued.",
    "responses": {200: {"model": ExchangeResponse}, 400: {"model": ErrorOut},
                  401: {"model": ErrorOut}, 409: {"model": ErrorOut},
                  413: {"model": ErrorOut}},
    "openapi_extra": {
        "parameters": [{"name": "X-BC-Signature", "in": "header", "required": True,
                        "schema": {"type": "string"}}],
        "requestBody": {"required": True, "content": {"application/json": {
            "schema": {"$ref": "#/components/schemas/ExchangeRequest"}}}},
    },
}


DENIED = "unknown device or bad signature"
MALFORMED = "malformed signature: X-BC-Signature must be 64 hex digits"
_NO_DEVICE_KEY = signing.new_key()     # verified against when the device is unknown


class Promote(Exception):
    """authenticate() on the event loop met a request under a rotation's new key, and
    promoting it means writing the broker's logins and waiting for its nodes to reload
    (seconds when a node is slow): handle() promotes in a thread, then admits again."""

    def __init__(self, device, key, old):
        super().__init__(device)
        self.device, self.key, self.old = device, key, old


class Refused(Exception):
    """A request refused before anything was stored: `status` is the HTTP status that
    names the reason (400, 401, 409, 413). `answer` and `key`: a refusal the meter may act
    on, signed with its key (the time refusal)."""

    def __init__(self, status, reason, answer=None, key=None):
        super().__init__(reason)
        self.status = status
        self.reason = reason
        self.answer = answer
        self.key = key


def authenticate(hub, raw, signature, topic_device=None, encoding="json", promoted=None):
    """(ExchangeRequest, key) or Refused 400/401/409/413. topic_device: the id the request
    arrived for (the MQTT topic's); the body's `device` must be the same. `encoding`: the
    request's (encodings.py); a malformed document of any encoding is a 400. promoted: the
    key to answer a request under a rotation's new key with, once handle() has promoted it
    (Promote)."""
    if len(raw) > hub.settings.max_body:
        raise Refused(413, "body larger than %d bytes" % hub.settings.max_body)
    try:
        obj = encodings.decode_request(encoding, raw)
    except encodings.BadDocument as e:
        raise Refused(400, str(e)) from None
    if not isinstance(obj, dict):
        raise Refused(400, "body must be a JSON object")
    if not isinstance(obj.get("device"), str):
        raise Refused(400, "missing or invalid field: device")
    if obj.get("v") != PROTOCOL or isinstance(obj.get("v"), bool):
        raise Refused(400, "protocol version %s refused: this head-end speaks version %d "
                      "(docs/protocol.md)" % (str(obj.get("v"))[:16], PROTOCOL))
    if topic_device is not None and obj["device"] != topic_device:
        raise Refused(401, "device %r does not match the topic's %r"
                      % (obj["device"][:64], topic_device))
    if not signature:
        raise Refused(401, "missing signature")
    if not signing.well_formed(signature):
        raise Refused(401, MALFORMED)
    row = devices.get(hub.db, obj["device"])
    # an unknown device is answered exactly as a bad signature, after the same HMAC work,
    # so the answer does not tell which device ids exist
    key = row["key"] if row is not None and row["key"] else _NO_DEVICE_KEY
    if not signing.verify(key, raw, signature) or row is None or not row["key"]:
        # a key rotation in flight: the new key too (looked up for an unknown id as well)
        key = key_rotation.next_key(hub.db, obj["device"])
        if row is None or key is None or not signing.verify(key, raw, signature):
            raise Refused(401, DENIED)
        # the meter holds the new key: the old one stops (the answer is under the new one),
        # unless the broker's password could not follow (both kept; the answer under the old)
        if promoted is not None:
            key = promoted
        elif hub.db.executor() is None and key_rotation.login_files(hub.settings):
            raise Promote(obj["device"], key, row["key"])   # on the loop (SQLite)
        else:
            key = key_rotation.promote(hub, obj["device"], key, row["key"])
    try:
        req = ExchangeRequest.model_validate(obj)
    except ValidationError as e:
        first = e.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "body"
        raise Refused(400, "invalid field %s: %s" % (where, first["msg"])) from None
    if abs(hub.now() - req.ts) > hub.settings.replay_window:
        # correctly signed: tell the meter our time, bound to its request (time refusal)
        reason = "ts outside the replay window"
        now_s = hub.now()
        answer = dict(bind(req.device, req.nonce, req.conn), error=reason, time=now_s,
                      time_ms=int(now_s * 1000))
        raise Refused(409, reason, answer, key)
    return req, key


def store(hub, req, transport):
    """One transaction: the nonce (Refused 409 if seen), the items, `done`, the ack, the
    contact and the transport the meter used. Not yet on disk: handle() awaits hub.synced()."""
    with hub.tx(sync=False) as db:
        db.lock_device(req.device)        # the ack and work_seq: one exchange at a time
        now = hub.now()
        if not db.run("INSERT INTO nonces(device, nonce, seen) VALUES (?, ?, ?) "
                      "ON CONFLICT DO NOTHING", req.device, req.nonce.lower(), now).rowcount:
            raise Refused(409, "replay: nonce already seen")
        ingest.ingest(hub, req.device, req, now)
        devices.set_transport(db, req.device, transport)
        if transport in ("mqtt", "email", "xmpp") and req.conn is not None:   # pushes bind to it
            db.write("UPDATE devices SET conn = ? WHERE id = ? AND conn IS DISTINCT FROM ?",
                   req.conn, req.device, req.conn)


def admit(hub, raw, signature, transport, topic_device=None, encoding="json", hold=False,
          promoted=None):
    """authenticate(), store() and delivery.first_look(): (request, key, first), or Refused
    (or Promote). One call, so that on PostgreSQL they run in one trip to a worker thread
    (hub.off_loop). hold: the transport can hold the request (an HTTP long-poll)."""
    req, key = authenticate(hub, raw, signature, topic_device, encoding, promoted)
    store(hub, req, transport)
    wait = req.wait if hold and req.fetch is None else 0
    return req, key, first_look(hub, req, key, wait)


async def handle(hub, raw, signature, transport, topic_device=None, receive=None,
                 encoding="json"):
    """The exchange core for both transports: authenticate, store, then answer with the
    deliverable work, and the `chunk` a `fetch` asks for (answered at once: no long-poll).
    Returns (request, key, response dict); the response is None if the meter hung up
    during the long-poll (nothing was delivered). Over MQTT (no `receive`) there is no
    long-poll: the answer is immediate. Raises Refused."""
    assert transport in TRANSPORTS
    started = time.perf_counter()
    since = hub.notifications
    promoted = None
    while True:
        try:
            req, key, first = await hub.off_loop(admit, hub, raw, signature, transport,
                                                 topic_device, encoding, receive is not None,
                                                 promoted)
            break
        except Promote as p:
            promoted = await asyncio.to_thread(key_rotation.promote, hub, p.device, p.key,
                                               p.old)
        except Refused as e:
            metrics.refused(hub, transport, e.status)
            raise
    hub.active[req.device] += 1
    try:
        wait = req.wait if receive is not None and req.fetch is None else 0
        held = time.perf_counter()
        answer = await deliver(hub, req, key, wait, receive, first, since)
        held = time.perf_counter() - held if wait else 0.0     # the long-poll's hold
        if answer is not None:      # the meter follows `time` only as well as its transit allows
            answer["held_ms"] = int((time.perf_counter() - started) * 1000)
        if answer is not None and req.fetch is not None:
            answer["chunk"] = release_store.chunk(hub.releases, req.fetch)
        await hub.synced()          # group commit: nothing is answered before it is on disk
        metrics.exchanged(hub, transport, time.perf_counter() - started - held, encoding)
        return req, key, answer
    except Refused as e:
        metrics.refused(hub, transport, e.status)
        raise
    finally:
        hub.active[req.device] -= 1
        if hub.active[req.device] <= 0:
            del hub.active[req.device]


def signed(key, answer, encoding="json"):
    """(body bytes, signature) of a response dict in an encoding (encodings.py): the
    signature covers the bytes as sent."""
    body = encodings.encode_response(encoding, answer)
    return body, signing.sign(key, body)


async def read_body(request, limit):
    length = request.headers.get("content-length", "")
    if length.isdigit() and int(length) > limit:
        raise HTTPException(413, "body larger than %d bytes" % limit)
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise HTTPException(413, "body larger than %d bytes" % limit)
    return bytes(body)


@router.post("/v1/exchange", **_DOC)
async def exchange(request: Request):
    """Documents the endpoint and serves it under a bare ASGI host; under the app, requests
    take fastpath.ExchangeFastPath to respond() without FastAPI's routing."""
    hub = request.app.state.hub
    raw = await read_body(request, hub.settings.max_body)
    return await respond(hub, raw, request.headers.get("x-bc-signature"), request.receive,
                         request.headers.get("content-type"))


async def respond(hub, raw, signature, receive, content_type=None):
    """The HTTP response to one exchange body, in the encoding its Content-Type names;
    HTTPException when refused (a SOAP fault or an XML <error> for those encodings)."""
    try:
        encoding = encodings.of(content_type)
    except encodings.Unsupported as e:
        metrics.refused(hub, "http", 415)
        raise HTTPException(415, str(e)) from None
    media = encodings.MEDIA[encoding]
    try:
        req, key, answer = await handle(hub, raw, signature, "http", receive=receive,
                                        encoding=encoding)
    except Refused as e:
        if e.answer is not None:
            body, sig = signed(e.key, e.answer, encoding)
            return Response(body, status_code=e.status, media_type=media,
                            headers={"X-BC-Signature": sig})
        if encoding in ("xml", "soap"):
            body, media = encodings.error_body(encoding, e.reason)
            return Response(body, status_code=e.status, media_type=media)
        raise HTTPException(e.status, e.reason) from None
    if answer is None:          # the meter hung up while waiting: nothing was delivered
        return Response(status_code=499)
    body, sig = signed(key, answer, encoding)
    return Response(body, media_type=media, headers={"X-BC-Signature": sig})


