"""Operator REST API: devices, work, readings, events and presence. Bearer tokens; the
201/202 answers go out only after the transaction has committed."""

from fastapi import APIRouter, Depends, HTTPException, Query, Request, Response

from . import (
    audit,
    devices,
    fleet_presence,
    idempotency,
    key_rotation,
    outcomes,
    policy,
    work_size,
    workq,
)
from .auth import Principal, principal, registrar
from .db import dumps, loads
from .meter_time import record_time
from .models import (
    DeviceCreated,
    DeviceIn,
    DeviceOut,
    DevicePatch,
    ErrorOut,
    PresenceEntry,
    PresenceNow,
    RecordOut,
    WorkIn,
    WorkOut,
)

_ERRORS = {code: {"model": ErrorOut} for code in (401, 403, 404, 409)}
router = APIRouter(prefix="/v1", tags=["operator"], responses=_ERRORS,
                   dependencies=[Depends(principal)])
Limit = Query(100, ge=1, le=10000)


def _hub(request):
    return request.app.state.hub


def _device(request, device_id):
    """The device row, or 404: unknown, or outside the token's group scopes (alike)."""
    db = _hub(request).db
    row = devices.get(db, device_id)
    if row is None or not request.state.who.sees(db, device_id):
        raise HTTPException(404, "unknown device %s" % device_id)
    return row


def _visible(request, rows, key="id"):
    who, db = request.state.who, _hub(request).db
    return [r for r in rows if who.sees(db, r[key])]


def device_view(row, open_work=0):
    keys = ("id", "created", "poll", "last_contact", "presence", "presence_note",
            "presence_at", "stated", "transport")
    return dict({k: row[k] for k in keys}, ack=row["ack"] or 0, open_work=open_work,
                firmware=loads(row["firmware"]))


@router.get("/devices", response_model=list[DeviceOut])
async def list_devices(request: Request):
    return [device_view(r, r["open_work"])
            for r in _visible(request, devices.all_devices(_hub(request).db))]


@router.post("/devices", response_model=DeviceCreated, status_code=201,
             dependencies=[Depends(registrar)])
async def add_device(body: DeviceIn, request: Request):
    """Register a meter (admin or utility token). Its id: `[a-z0-9][a-z0-9._-]{0,63}`."""
    hub = _hub(request)
    audit.note(request, {"id": body.id}, "device:%s" % body.id)
    poll = body.poll if body.poll is not None else hub.settings.default_poll
    try:
        key = devices.create(hub.db, body.id, body.key, poll)
    except devices.Conflict as e:
        raise HTTPException(409, str(e)) from None
    except ValueError as e:
        raise HTTPException(400, str(e)) from None
    return {"id": body.id, "key": key, "poll": poll}


@router.get("/devices/{device_id}", response_model=DeviceOut)
async def get_device(device_id: str, request: Request):
    hub = _hub(request)
    row = _device(request, device_id)
    n = hub.db.one("SELECT COUNT(*) AS n FROM work WHERE device = ? AND status IN "
                   "('queued', 'delivered')", device_id)["n"]
    return device_view(row, n)


@router.patch("/devices/{device_id}", response_model=DeviceOut)
async def patch_device(device_id: str, body: DevicePatch, request: Request):
    hub = _hub(request)
    audit.note(request, {"poll": body.poll})
    _device(request, device_id)
    with hub.tx() as db:
        devices.set_poll(db, device_id, body.poll)
    return await get_device(device_id, request)


@router.post("/devices/{device_id}/work", response_model=WorkOut, status_code=202,
             responses={400: {"model": ErrorOut}, 413: {"model": ErrorOut},
                        422: {"model": ErrorOut}})
async def add_work(device_id: str, body: WorkIn, request: Request, response: Response,
                   who: Principal = Depends(principal),
                   idempotency_key: str | None = idempotency.KeyHeader):
    """Queue work. With an `Idempotency-Key`, a retry of the same request returns the work
    the first one queued (header `Idempotent-Replayed: true`); a different request with the
    same key is refused (422)."""
    hub = _hub(request)
    audit.note(request, {"op": body.op, "args": body.args})
    dev = _device(request, device_id)
    refused = who.may_send(body.op)
    if refused:
        raise HTTPException(403, refused)
    expires = workq.expiry(hub.now(), body.expires_in)
    size = work_size.item_bytes(body.op, body.args, who.work_role, who.origin, expires,
                                device_id)
    too_large = work_size.refusal(size, dev["transport"], device_id)
    if too_large:
        raise HTTPException(413, too_large)
    key = idempotency.check(idempotency_key)
    fp = idempotency.fingerprint(request, body)
    with hub.tx() as db:
        work_id = idempotency.replay(db, who.name, key, fp)
        if work_id is None:
            refuse_if(policy.check_operator_send, hub, who, device_id, body.op)
            refuse_if(policy.check_quota, hub, device_id, len(dumps(body.args)))
            work_id = workq.enqueue(hub, device_id, body.op, body.args, who.work_role, who.origin,
                                    expires, body.when_available)
            idempotency.remember(db, who.name, key, fp, work_id, hub.now())
        else:
            response.headers[idempotency.REPLAYED] = "true"
        row = workq.get(db, work_id)
    return workq.view(row, dev["presence"])


@router.post("/devices/{device_id}/rotate-key", response_model=WorkOut, status_code=202,
             responses={403: {"model": ErrorOut}, 409: {"model": ErrorOut}})
async def rotate_key(device_id: str, request: Request, who: Principal = Depends(principal),
                     expires_in: int = Query(key_rotation.EXPIRES_S, ge=10, le=86400)):
    """Rotate the meter's key by ECDH (a utility token; docs/protocol.md "Key rotation"):
    queues the guarded `rotate_key` work item. The old key stops working once the meter
    exchanges under the new one; both work until then."""
    hub = _hub(request)
    audit.note(request, {"op": "rotate_key"})
    dev = _device(request, device_id)
    if who.role != "utility":
        raise HTTPException(403, "rotating a meter's key needs a utility token")
    with hub.tx() as db:
        try:
            work_id = key_rotation.start(hub, devices.get(db, device_id), who.origin, hub.now(),
                                  expires_in)
        except key_rotation.Refused as e:
            raise HTTPException(e.status, e.reason) from None
        row = workq.get(db, work_id)
    return workq.view(row, dev["presence"])


def refuse_if(check, *args):
    """HTTPException for a policy.Refused (429 with Retry-After)."""
    try:
        check(*args)
    except policy.Refused as e:
        headers = {"Retry-After": str(e.retry_after)} if e.retry_after else None
        raise HTTPException(e.status, e.reason, headers=headers) from None


@router.get("/devices/{device_id}/work", response_model=list[WorkOut])
async def list_work(device_id: str, request: Request, limit: int = Limit):
    hub = _hub(request)
    dev = _device(request, device_id)
    rows = hub.db.all("SELECT * FROM work WHERE device = ? ORDER BY num DESC LIMIT ?",
                      device_id, limit)
    return [workq.view(r, dev["presence"]) for r in rows]


def _work(request, work_id):
    hub = _hub(request)
    row = workq.get(hub.db, work_id)
    if row is None or not request.state.who.sees(hub.db, row["device"]):
        raise HTTPException(404, "unknown work %s" % work_id)
    return row


@router.get("/work/{work_id}", response_model=WorkOut)
async def get_work(work_id: str, request: Request):
    hub = _hub(request)
    row = _work(request, work_id)
    return workq.view(row, devices.get(hub.db, row["device"])["presence"])


@router.delete("/work/{work_id}", response_model=WorkOut)
async def cancel_work(work_id: str, request: Request):
    """Cancel work that has not been delivered yet (409 once delivered or finished)."""
    hub = _hub(request)
    device = _work(request, work_id)["device"]
    with hub.tx():
        now = hub.now()
        outcomes.expire_due(hub, now, device)
        refused = outcomes.cancel(hub, _work(request, work_id), now)
    if refused:
        raise HTTPException(409, refused)
    return await get_work(work_id, request)


def _records(request, device_id, kinds, limit):
    hub = _hub(request)
    _device(request, device_id)
    marks = ",".join("?" * len(kinds))
    rows = hub.db.all("SELECT seq, kind, received, body FROM items WHERE device = ? AND kind IN "
                      "(%s) ORDER BY rowid DESC LIMIT ?" % marks, device_id, *kinds, limit)
    out = []
    for r in rows:
        body = loads(r["body"])
        out.append(dict(r, at=record_time(body), body=body))
    return out


@router.get("/devices/{device_id}/readings", response_model=list[RecordOut])
async def readings(device_id: str, request: Request, limit: int = Limit):
    """The newest readings first."""
    return _records(request, device_id, ("reading",), limit)


@router.get("/devices/{device_id}/events", response_model=list[RecordOut])
async def events(device_id: str, request: Request, limit: int = Limit):
    """The newest events (event, event_start) and notices first."""
    return _records(request, device_id, ("event", "event_start", "notice"), limit)


@router.get("/devices/{device_id}/results", response_model=list[RecordOut])
async def results(device_id: str, request: Request, limit: int = Limit):
    return _records(request, device_id, ("result",), limit)


@router.get("/devices/{device_id}/presence", response_model=list[PresenceEntry])
async def presence_history(device_id: str, request: Request, limit: int = Limit):
    """Every presence change, newest first: stated by the meter, derived, or on contact."""
    hub = _hub(request)
    _device(request, device_id)
    return [dict(r) for r in fleet_presence.history(hub.db, device_id, limit)]


@router.get("/presence", response_model=list[PresenceNow])
async def presence_now(request: Request):
    return [{"device": r["id"], "state": r["presence"], "note": r["presence_note"],
             "since": r["presence_at"], "stated": r["stated"], "last_contact": r["last_contact"]}
            for r in _visible(request, devices.all_devices(_hub(request).db))]
