"""POST /v1/exchange: check size, signature and replay; store the meter's items; long-poll
for work; answer with a signed body. Errors are {"error": reason} and store nothing."""

import asyncio
import json

from fastapi import APIRouter, HTTPException, Request, Response
from pydantic import ValidationError

from . import devices, ingest, outcomes, signing, workq
from .models import ErrorOut, ExchangeRequest, ExchangeResponse

router = APIRouter(tags=["exchange"])

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


def authenticate(hub, raw, signature):
    """(ExchangeRequest, key) or HTTPException 400/401/409."""
    try:
        obj = json.loads(raw)
    except (UnicodeDecodeError, ValueError):
        raise HTTPException(400, "malformed JSON") from None
    if not isinstance(obj, dict):
        raise HTTPException(400, "body must be a JSON object")
    if not isinstance(obj.get("device"), str):
        raise HTTPException(400, "missing or invalid field: device")
    row = devices.get(hub.db, obj["device"])
    if row is None:
        raise HTTPException(401, "unknown device")
    if not signature:
        raise HTTPException(401, "missing signature")
    if not signing.verify(row["key"], raw, signature):
        raise HTTPException(401, "bad signature")
    try:
        req = ExchangeRequest.model_validate(obj)
    except ValidationError as e:
        first = e.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "body"
        raise HTTPException(400, "invalid field %s: %s" % (where, first["msg"])) from None
    if abs(hub.now() - req.ts) > hub.settings.replay_window:
        raise HTTPException(409, "ts outside the replay window")
    return req, row["key"]


@router.post("/v1/exchange", **_DOC)
async def exchange(request: Request):
    hub = request.app.state.hub
    raw = await read_body(request, hub.settings.max_body)
    req, key = authenticate(hub, raw, request.headers.get("x-bc-signature"))
    hub.active[req.device] += 1
    try:
        now = hub.now()
        with hub.tx() as db:
            if db.one("SELECT 1 FROM nonces WHERE device = ? AND nonce = ?",
                      req.device, req.nonce.lower()):
                raise HTTPException(409, "replay: nonce already seen")
            db.run("INSERT INTO nonces(device, nonce, seen) VALUES (?, ?, ?)",
                   req.device, req.nonce.lower(), now)
            ingest.ingest(hub, req.device, req, now)
        answer = await deliver(hub, req, key, request.receive)
        if answer is None:          # the meter hung up while waiting: nothing was delivered
            return Response(status_code=499)
    finally:
        hub.active[req.device] -= 1
        if hub.active[req.device] <= 0:
            del hub.active[req.device]
    body = signing.canonical(answer).encode()
    return Response(body, media_type="application/json", headers={"X-BC-Signature":
                                                                  signing.sign(key, body)})


async def _hangup(receive):
    """Returns when the client disconnects (the request body has been read already)."""
    while (await receive())["type"] != "http.disconnect":
        pass


async def deliver(hub, req, key, receive):
    """Wait (up to `wait`, capped) until work is deliverable; mark it delivered; answer.
    None if the meter disconnected while waiting."""
    loop = asyncio.get_running_loop()
    end = loop.time() + min(req.wait, hub.settings.max_wait)
    gone = None
    try:
        while True:
            event = hub.listen(req.device)
            try:
                with hub.tx() as db:
                    now = hub.now()
                    outcomes.expire_due(hub, now, req.device)
                    rows = workq.deliverable(db, req.device, now)
                    left = end - loop.time()
                    if rows or left <= 0 or hub.closing:
                        return _answer(hub, db, req, key, rows, now)
                gone = gone or asyncio.ensure_future(_hangup(receive))
                woken = asyncio.ensure_future(event.wait())
                await asyncio.wait((woken, gone), timeout=left,
                                   return_when=asyncio.FIRST_COMPLETED)
                woken.cancel()
                if gone.done():
                    return None
            finally:
                hub.unlisten(req.device, event)
    finally:
        if gone is not None:
            gone.cancel()


def _answer(hub, db, req, key, rows, now):
    sent = rows[:req.room]
    workq.mark_delivered(db, sent, now)
    devices.touch(db, req.device, now)
    dev = devices.get(db, req.device)
    return {"ack": dev["ack"] or 0, "work": [workq.wire(r, key) for r in sent],
            "more": len(rows) > req.room, "next": dev["poll"], "time": hub.now()}
