"""The dashboard's group pages: groups, one group (members, its commands, a send form
within the role through the REST API's own handler), and one group command whose
per-meter outcomes fill in (the page refreshes until every member's work has ended)."""

import json

from fastapi import APIRouter, HTTPException, Request, Response
from fastapi.responses import RedirectResponse
from pydantic import ValidationError

from .. import api_groups, groups, outcomes, render
from ..models import GroupWorkIn
from .pages import FINAL, allowed_ops, checked_form, current, login_redirect, page, refused

router = APIRouter(prefix="/ui/groups", include_in_schema=False)


@router.get("")
async def group_list(request: Request):
    s, who = current(request)
    if who is None:
        return login_redirect(request)
    return page(request, "groups.html", who=who, csrf=s.csrf,
                groups=[g for g in groups.all_groups(request.app.state.hub.db)
                        if who.sees_group(g["name"])])


@router.get("/{name}")
async def group_page(request: Request, name: str):
    s, who = current(request)
    if who is None:
        return login_redirect(request)
    db = request.app.state.hub.db
    group = groups.get(db, name) if who.sees_group(name) else None
    if group is None:
        return refused(request, 404, "unknown group %s" % name)
    commands = db.all("SELECT gid, op, created, expires FROM group_work WHERE name = ? "
                      "ORDER BY gid DESC LIMIT 20", name)
    return page(request, "group.html", who=who, csrf=s.csrf, g=group, commands=commands,
                ops=allowed_ops(who))


@router.post("/{name}/work")
async def group_send(request: Request, name: str):
    s, who, f = await checked_form(request)
    try:
        body = GroupWorkIn(op=f.get("op", ""), args=json.loads(f.get("args") or "{}"),
                           expires_in=3600, when_available=f.get("when_available") == "on")
    except (ValueError, ValidationError) as e:
        return refused(request, 400, "bad work: %s" % str(e).splitlines()[0])
    try:    # the REST API's own handler: the same role checks
        out = await api_groups.group_work(name, body, request, Response(), who=who,
                                          idempotency_key=None)
    except HTTPException as e:
        return refused(request, e.status_code, str(e.detail))
    return RedirectResponse("/ui/groups/%s/commands/%d" % (name, out["gid"]), 303)


@router.get("/{name}/commands/{gid}")
async def command_page(request: Request, name: str, gid: int):
    s, who = current(request)
    if who is None:
        return login_redirect(request)
    hub = request.app.state.hub
    if not who.sees_group(name):
        return refused(request, 404, "unknown group %s" % name)
    with hub.tx():
        outcomes.expire_due(hub, hub.now())
    try:
        cmd = groups.status(hub.db, name, gid)
    except groups.GroupError as e:
        return refused(request, e.status, str(e))
    rows = [(device, o["work"], o["status"], o["reason"],
             render.compact(o["result"], 120) if o["result"] is not None else "")
            for device, o in sorted(cmd["outcomes"].items())]
    final = all(o["status"] in FINAL for o in cmd["outcomes"].values())
    return page(request, "group_command.html", who=who, csrf=s.csrf, cmd=cmd, rows=rows,
                final=final, counts=sorted(cmd["counts"].items()))
