"""Operator REST API for groups and group commands."""

from fastapi import APIRouter, Depends, HTTPException, Path, Request, Response

from . import audit, groups, idempotency, outcomes, policy, work_size, workq
from .api_devices import refuse_if
from .auth import Principal, principal
from .db import dumps
from .models import (
    ErrorOut,
    GroupIn,
    GroupOut,
    GroupStatus,
    GroupWorkIn,
    GroupWorkOut,
    MembersIn,
)

_ERRORS = {code: {"model": ErrorOut} for code in (401, 403, 404, 409)}
Gid = Path(ge=1, le=2**63 - 1)      # an SQLite INTEGER: larger ids overflowed (500)
router = APIRouter(prefix="/v1/groups", tags=["groups"], responses=_ERRORS,
                   dependencies=[Depends(principal)])


def _group_scope(request, name):
    """404 for a group outside the token's scopes (as for an unknown group)."""
    if not request.state.who.sees_group(name):
        raise HTTPException(404, "unknown group %s" % name)


def _may_change(request, name):
    """A token confined to groups may not change any group (it could add meters outside
    its scope to one of its groups and then reach them); others: 404 as for create."""
    _group_scope(request, name)
    if request.state.who.groups is not None:
        raise HTTPException(403, "a token confined to groups may not change groups")


def _call(fn, *args):
    try:
        return fn(*args)
    except groups.GroupError as e:
        raise HTTPException(e.status, str(e)) from None


@router.get("", response_model=list[GroupOut])
async def list_groups(request: Request):
    who = request.state.who
    return [g for g in groups.all_groups(request.app.state.hub.db) if who.sees_group(g["name"])]


@router.post("", response_model=GroupOut, status_code=201)
async def create_group(body: GroupIn, request: Request):
    audit.note(request, {"members": body.members}, "group:%s" % body.name)
    if request.state.who.groups is not None:
        raise HTTPException(403, "a token confined to groups may not create groups")
    return _call(groups.create, request.app.state.hub.db, body.name, body.members)


@router.get("/{name}", response_model=GroupOut)
async def get_group(name: str, request: Request):
    _group_scope(request, name)
    group = groups.get(request.app.state.hub.db, name)
    if group is None:
        raise HTTPException(404, "unknown group %s" % name)
    return group


@router.delete("/{name}", response_model=GroupOut)
async def delete_group(name: str, request: Request):
    """Delete a group and its command history (409 while a command of it has open work);
    returns the group as it was."""
    _may_change(request, name)
    return _call(groups.delete, request.app.state.hub.db, name)


@router.post("/{name}/members", response_model=GroupOut)
async def add_members(name: str, body: MembersIn, request: Request):
    """Add meters to a group (already members are fine); 404 for an unknown meter."""
    audit.note(request, {"members": body.members})
    _may_change(request, name)
    return _call(groups.add_members, request.app.state.hub.db, name, body.members)


@router.delete("/{name}/members/{device}", response_model=GroupOut)
async def remove_member(name: str, device: str, request: Request):
    """Remove a meter from a group; commands already sent keep its outcome."""
    _may_change(request, name)
    return _call(groups.remove_members, request.app.state.hub.db, name, [device])


@router.post("/{name}/work", response_model=GroupWorkOut, status_code=202,
             responses={400: {"model": ErrorOut}, 413: {"model": ErrorOut},
                        422: {"model": ErrorOut}})
async def group_work(name: str, body: GroupWorkIn, request: Request, response: Response,
                     who: Principal = Depends(principal),
                     idempotency_key: str | None = idempotency.KeyHeader):
    """One command to every member. With `when_available`, each member's item is held until
    its presence is available, active or available_off, and expires at the deadline. An
    `Idempotency-Key` works as for one device's work: a retry returns the same command."""
    hub = request.app.state.hub
    audit.note(request, {"op": body.op, "args": body.args})
    _group_scope(request, name)
    refused = who.may_send(body.op)
    if refused:
        raise HTTPException(403, refused)
    refuse_if(policy.check_group_send, who, body.op)
    key = idempotency.check(idempotency_key)
    fp = idempotency.fingerprint(request, body)
    with hub.tx() as db:
        gid = idempotency.replay(db, who.name, key, fp)
        if gid is not None:
            response.headers[idempotency.REPLAYED] = "true"
            cmd = _call(groups.status, db, name, int(gid))
            return {"gid": cmd["gid"], "group": name, "op": cmd["op"],
                    "expires": cmd["expires"],
                    "work": {m: o["work"] for m, o in cmd["outcomes"].items()}}
        now = hub.now()
        expires = workq.expiry(now, body.expires_in)
        if body.deadline is not None:
            if body.deadline <= now:
                raise HTTPException(400, "deadline is in the past")
            expires = workq.expiry(body.deadline, 0)
        too_large = work_size.refusal(
            work_size.item_bytes(body.op, body.args, who.work_role, who.origin, expires),
            work_size.group_transport(db, name), "a member of %s" % name)
        if too_large:
            raise HTTPException(413, too_large)
        group = groups.get(db, name)
        if group is not None:
            refuse_if(policy.check_group_quota, hub, group["members"], len(dumps(body.args)))
        out = _call(groups.send, hub, name, body.op, body.args, expires, body.when_available,
                    who.origin, who.work_role)
        idempotency.remember(db, who.name, key, fp, str(out["gid"]), now)
        return out


@router.get("/{name}/work/{gid}", response_model=GroupStatus)
async def group_status(name: str, request: Request, gid: int = Gid):
    _group_scope(request, name)
    hub = request.app.state.hub
    with hub.tx():
        outcomes.expire_due(hub, hub.now())
    return _call(groups.status, hub.db, name, gid)


@router.delete("/{name}/work/{gid}", response_model=GroupStatus)
async def group_cancel(name: str, request: Request, gid: int = Gid):
    """Cancel every member's item not delivered yet."""
    _group_scope(request, name)
    hub = request.app.state.hub
    _call(groups.status, hub.db, name, gid)
    with hub.tx():
        now = hub.now()
        for row in groups.queued(hub.db, gid):
            outcomes.cancel(hub, row, now)
    return _call(groups.status, hub.db, name, gid)

