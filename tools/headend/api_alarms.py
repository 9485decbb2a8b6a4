"""Alarms and escalation over REST (escalation.py, docs/alarms.md): list, show with every
step, ack (any role that sees the group), raise a drill; the utility's per-group lists and
the operators' on-duty schedules (utility or admin)."""

from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request
from pydantic import BaseModel, Field

from . import devices, duty, escalation, ids
from .auth import Principal, principal
from .models import ErrorOut

router = APIRouter(prefix="/v1", tags=["alarms"], dependencies=[Depends(principal)],
                   responses={code: {"model": ErrorOut} for code in (400, 401, 403, 404, 409)})
MANAGERS = ("utility", "admin")
Aid = Path(ge=1, le=2**63 - 1)


def _name():    # a fresh Path per parameter: FastAPI keeps the first parameter's name in it
    return Path(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9_.@:-]+$")


class AlarmIn(BaseModel):
    device: str = Field(pattern="^%s$" % ids.PATTERN)
    kind: str = Field("drill", min_length=1, max_length=40, pattern=r"^[a-z_]+$")
    note: str = Field("", max_length=500)


class AckIn(BaseModel):
    channel: str = Field("api", min_length=1, max_length=20, pattern=r"^[a-z]+$")


class ListIn(BaseModel):
    operators: list[str] = Field(min_length=1, max_length=escalation.MAX_OPERATORS)
    timeout_s: float = Field(escalation.DEFAULT_TIMEOUT_S, ge=10, le=86400)
    kinds: list[str] = Field(list(escalation.DEFAULT_KINDS), min_length=1, max_length=20)


class DutyIn(BaseModel):
    windows: list[str] = Field(min_length=1, max_length=duty.MAX_WINDOWS,
                               description="e.g. ['mon-fri 08:00-17:00'] (UTC) or ['always']")


def _call(fn, *args):
    try:
        return fn(*args)
    except escalation.EscalationError as e:
        raise HTTPException(e.status, str(e)) from None
    except duty.DutyError as e:
        raise HTTPException(400, str(e)) from None


def _manager(who):
    if who.role not in MANAGERS:
        raise HTTPException(403, "escalation lists and duty schedules need a utility or "
                                 "admin token")


def _visible(request, alarm_id):
    alarm = escalation.get(request.app.state.hub.db, alarm_id, steps=True)
    if alarm is None or not request.state.who.sees_group(alarm["grp"]):
        raise HTTPException(404, "unknown alarm %s" % alarm_id)
    return alarm


@router.get("/alarms")
async def list_alarms(request: Request,
                      state: str | None = Query(None, pattern="^(open|acked|unacknowledged)$"),
                      limit: int = Query(100, ge=1, le=1000)) -> list[dict]:
    who = request.state.who
    return escalation.listing(request.app.state.hub.db, state, who.groups, limit)


@router.get("/alarms/{alarm_id}")
async def show_alarm(request: Request, alarm_id: int = Aid) -> dict:
    return _visible(request, alarm_id)


@router.post("/alarms/{alarm_id}/ack")
async def ack_alarm(request: Request, body: AckIn | None = None, alarm_id: int = Aid) -> dict:
    _visible(request, alarm_id)
    hub = request.app.state.hub
    return _call(escalation.ack, hub, alarm_id, request.state.who.name,
                 (body or AckIn()).channel, hub.now())


@router.post("/alarms", status_code=201)
async def raise_drill(body: AlarmIn, request: Request) -> list[dict]:
    """A drill (or a manual alarm) for a meter: one alarm per group of it with a list."""
    who: Principal = request.state.who
    _manager(who)
    hub = request.app.state.hub
    if devices.get(hub.db, body.device) is None or not who.sees(hub.db, body.device):
        raise HTTPException(404, "unknown device %s" % body.device)
    groups = [r["grp"] for r in hub.db.all(
        "SELECT e.grp FROM escalation_lists e JOIN group_members m ON m.name = e.grp "
        "WHERE m.device = ? ORDER BY e.grp", body.device) if who.sees_group(r["grp"])]
    if not groups:
        raise HTTPException(409, "%s is in no group with an escalation list" % body.device)
    detail = {"kind": body.kind, "note": body.note, "raised_by": who.name}
    ids = [escalation.raise_alarm(hub, body.device, g, body.kind, detail, hub.now())
           for g in groups]
    return [escalation.get(hub.db, i, steps=True) for i in ids]


@router.get("/escalation/{name}")
async def get_list(request: Request, name: str = _name()) -> dict:
    esc = escalation.get_list(request.app.state.hub.db, name)
    if esc is None or not request.state.who.sees_group(name):
        raise HTTPException(404, "no escalation list for group %s" % name)
    return esc


@router.put("/escalation/{name}")
async def put_list(body: ListIn, request: Request, name: str = _name()) -> dict:
    who = request.state.who
    _manager(who)
    if not who.sees_group(name):
        raise HTTPException(404, "unknown group %s" % name)
    return _call(escalation.set_list, request.app.state.hub.db, name, body.operators,
                 body.timeout_s, body.kinds)


@router.delete("/escalation/{name}", status_code=204)
async def delete_list(request: Request, name: str = _name()) -> None:
    _manager(request.state.who)
    if not escalation.delete_list(request.app.state.hub.db, name):
        raise HTTPException(404, "no escalation list for group %s" % name)


@router.get("/operators/{operator}/duty")
async def get_duty(request: Request, operator: str = _name()) -> dict:
    who = request.state.who
    if who.name != operator:
        _manager(who)
    hub = request.app.state.hub
    return {"operator": operator, "windows": duty.get_schedule(hub.db, operator) or [],
            "available": escalation.available(hub, operator, hub.now())}


@router.put("/operators/{operator}/duty")
async def put_duty(body: DutyIn, request: Request, operator: str = _name()) -> dict:
    _manager(request.state.who)
    hub = request.app.state.hub
    _call(duty.set_schedule, hub.db, operator, body.windows)
    return {"operator": operator, "windows": body.windows,
            "available": escalation.available(hub, operator, hub.now())}


@router.delete("/operators/{operator}/duty", status_code=204)
async def delete_duty(request: Request, operator: str = _name()) -> None:
    _manager(request.state.who)
    if not duty.clear_schedule(request.app.state.hub.db, operator):
        raise HTTPException(404, "no duty schedule for %s" % operator)
