"""The dashboard's pages under /ui: login and logout, the fleet, a meter (live values over
server-sent events, uPlot history, events, work, a send form), a work item's outcome.

Every page goes through the same tokens and roles as the REST API: a session holds a token,
the token is looked up on every request, and work is queued by the API's own handler (role
checks included). Templates autoescape everything (a meter's notes, ids, event fields), and
the Content-Security-Policy allows scripts from the head-end only (no inline script)."""

import asyncio
import json
import os
import time
from urllib.parse import parse_qs, quote

from fastapi import APIRouter, HTTPException, Request, Response
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse, StreamingResponse
from jinja2 import Environment, FileSystemLoader, select_autoescape
from pydantic import ValidationError

from .. import api_devices, devices, escalation, render, workq
from ..auth import Principal
from ..db import loads
from ..models import WorkIn
from . import assets
from .session import COOKIE, LOGIN_COOKIE, Sessions, cookie_args, new_csrf, same

HERE = os.path.dirname(os.path.abspath(__file__))
STATIC = {"app.js": "text/javascript", "style.css": "text/css"}
PAGE = 100                     # meters per fleet page
FINAL = ("done", "rejected", "unknown_op", "expired", "cancelled")
OPS = ("read", "get_config", "get_events", "set_presence", "relay", "reboot",
       "reset_energy")
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; "
                               "img-src 'self' data:; connect-src 'self'; form-action 'self'; "
                               "frame-ancestors 'none'; base-uri 'none'",
    "X-Frame-Options": "DENY", "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer", "Cache-Control": "no-store"}
SSE_POLL_S = 0.5
REPLAY = 100                   # readings a reconnecting stream may catch up on
MAX_BODY = 16 * 1024

router = APIRouter(prefix="/ui", include_in_schema=False)
templates = Environment(loader=FileSystemLoader(os.path.join(HERE, "templates")),
                        autoescape=select_autoescape(default=True, default_for_string=True))
templates.filters["when"] = lambda t: render.when(t) if t else "-"
templates.filters["utc"] = lambda t: time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(t))
templates.filters["firmware"] = lambda f: render.firmware(f) or "-"


class Refused(Exception):
    """A page refused: status and a one-line reason, shown on an error page."""

    def __init__(self, status, reason):
        super().__init__(reason)
        self.status, self.reason = status, reason


def sessions(request):
    app = request.app
    if not hasattr(app.state, "sessions"):
        app.state.sessions = Sessions()
    return app.state.sessions


def page(request, name, code=200, **values):
    who = values.get("who")
    if who is not None:     # the header's alarm count
        values.setdefault("open_alarms", escalation.open_count(request.app.state.hub.db,
                                                               who.groups))
    html = templates.get_template(name).render(request=request, plots=_plots(request),
                                               **values)
    return HTMLResponse(html, code, headers=SECURITY_HEADERS)


def _plots(request):
    app = request.app
    if not hasattr(app.state, "assets"):
        app.state.assets = assets.verified()
    return app.state.assets


def refused(request, status, reason):
    return page(request, "error.html", status, status=status, reason=reason,
                who=None, csrf=None)


def current(request):
    """(session, Principal) of a logged-in request, or (None, None)."""
    s = sessions(request).get(request.cookies.get(COOKIE))
    if s is None:
        return None, None
    found = request.app.state.hub.principal(s.token)
    if found is None:                  # the token was removed: the session ends with it
        sessions(request).drop(request.cookies.get(COOKIE))
        return None, None
    request.state.who = who = Principal(*found)     # as auth.principal does for the API
    return s, who


async def form(request):
    """The fields of an urlencoded form body (first value each)."""
    body = await request.body()
    if len(body) > MAX_BODY:
        raise Refused(413, "form too large")
    try:
        fields = parse_qs(body.decode("utf-8"), keep_blank_values=True, strict_parsing=False)
    except (UnicodeDecodeError, ValueError):
        raise Refused(400, "malformed form") from None
    return {k: v[0] for k, v in fields.items()}


async def checked_form(request):
    """(session, Principal, fields) of a form posted by a logged-in session with its own
    CSRF value; Refused (401, 403: shown as an error page) otherwise."""
    s, who = current(request)
    f = await form(request)
    if who is None:
        raise Refused(401, "your session has ended: log in again")
    if not same(f.get("csrf"), s.csrf):
        raise Refused(403, "the form's CSRF token is missing or wrong")
    return s, who, f


def login_redirect(request):
    return RedirectResponse("/ui/login?next=%s" % quote(request.url.path, safe="/"), 303)


def _next(value):
    # only a path of the dashboard itself: never an open redirect
    if isinstance(value, str) and value.startswith("/ui/") and not value.startswith("/ui//"):
        return value
    return "/ui/"


@router.get("/login")
async def login_page(request: Request, next: str = "/ui/"):
    s, who = current(request)
    if who is not None:
        return RedirectResponse(_next(next), 303)
    csrf = new_csrf()
    r = page(request, "login.html", csrf=csrf, next=_next(next), who=None, error=None)
    r.set_cookie(LOGIN_COOKIE, csrf, **cookie_args(request, 600))
    return r


@router.post("/login")
async def login(request: Request):
    f = await form(request)
    if not same(f.get("csrf"), request.cookies.get(LOGIN_COOKIE)):
        return refused(request, 403, "the form's CSRF token is missing or wrong: reload the "
                                     "login page")
    token = f.get("token", "").strip()
    if not token or request.app.state.hub.principal(token) is None:
        csrf = new_csrf()
        r = page(request, "login.html", 401, csrf=csrf, next=_next(f.get("next")), who=None,
                 error="invalid token")
        r.set_cookie(LOGIN_COOKIE, csrf, **cookie_args(request, 600))
        return r
    sid = sessions(request).create(token)
    r = RedirectResponse(_next(f.get("next")), 303)
    r.set_cookie(COOKIE, sid, **cookie_args(request, sessions(request).ttl))
    r.delete_cookie(LOGIN_COOKIE, path="/ui")
    return r


@router.post("/logout")
async def logout(request: Request):
    s, who = current(request)
    f = await form(request)
    if s is None:
        return login_redirect(request)
    if not same(f.get("csrf"), s.csrf):
        return refused(request, 403, "the form's CSRF token is missing or wrong")
    sessions(request).drop(request.cookies.get(COOKIE))
    r = RedirectResponse("/ui/login", 303)
    r.delete_cookie(COOKIE, path="/ui")
    return r


@router.get("/")
async def fleet(request: Request, q: str = "", page_no: int = 1):
    s, who = current(request)
    if who is None:
        return login_redirect(request)
    db = request.app.state.hub.db
    q = q.strip()[:64]
    page_no = max(1, page_no)
    like = "%" + q.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
    scope, scope_args = who.scope_sql("id")
    total = db.one("SELECT COUNT(*) AS n FROM devices WHERE id LIKE ? ESCAPE '\\' AND " + scope,
                   like, *scope_args)["n"]
    rows = db.all("SELECT d.*, (SELECT COUNT(*) FROM work w WHERE w.device = d.id AND "
                  "w.status IN ('queued', 'delivered')) AS open_work FROM devices d "
                  "WHERE d.id LIKE ? ESCAPE '\\' AND " + who.scope_sql("d.id")[0]
                  + " ORDER BY d.id LIMIT ? OFFSET ?", like, *scope_args, PAGE,
                  (page_no - 1) * PAGE)
    meters = [api_devices.device_view(r, r["open_work"]) for r in rows]
    return page(request, "fleet.html", who=who, csrf=s.csrf, meters=meters, q=q,
                page_no=page_no, pages=max(1, -(-total // PAGE)), total=total)


def _device_or_404(request, device_id):
    db = request.app.state.hub.db
    row = devices.get(db, device_id)
    if row is None or not request.state.who.sees(db, device_id):
        raise HTTPException(404, "unknown device %s" % device_id)
    return row


def allowed_ops(who):
    return [op for op in OPS if who.may_send(op) is None]


@router.get("/meters/{device_id}")
async def meter(request: Request, device_id: str):
    s, who = current(request)
    if who is None:
        return login_redirect(request)
    hub = request.app.state.hub
    row = devices.get(hub.db, device_id)
    if row is None or not who.sees(hub.db, device_id):
        return refused(request, 404, "unknown device %s" % device_id)
    # rowid, not seq: a meter's seq restarts with each outbox epoch (docs/protocol.md)
    latest = hub.db.one("SELECT seq, body FROM items WHERE device = ? AND kind = 'reading' "
                        "ORDER BY rowid DESC LIMIT 1", device_id)
    events = [dict(r, body=loads(r["body"])) for r in hub.db.all(
        "SELECT seq, kind, received, body FROM items WHERE device = ? AND kind IN "
        "('event', 'event_start', 'notice') ORDER BY rowid DESC LIMIT 50", device_id)]
    work = [workq.view(r, row["presence"]) for r in hub.db.all(
        "SELECT * FROM work WHERE device = ? ORDER BY num DESC LIMIT 20", device_id)]
    return page(request, "meter.html", who=who, csrf=s.csrf, m=api_devices.device_view(row),
                latest=loads(latest["body"]) if latest else None, events=events, work=work,
                ops=allowed_ops(who))


def _reading_row(r):
    # "seq" here is the storage order (rowid): the page's cursor, across outbox epochs
    b = loads(r["body"])
    return {"seq": r["seq"], "t": b.get("t"), "vrms": b.get("vrms"), "irms": b.get("irms"),
            "p": b.get("p"), "pf": b.get("pf"), "f": b.get("f"),
            "kwh": b["import_wh"] / 1000.0 if isinstance(b.get("import_wh"), int | float)
            else None}


@router.get("/meters/{device_id}/readings.json")
async def readings_json(request: Request, device_id: str, hours: float = 1.0):
    s, who = current(request)
    if who is None:
        raise HTTPException(401, "log in first")
    _device_or_404(request, device_id)
    hub = request.app.state.hub
    hours = min(max(hours, 0.01), 24 * 31)
    rows = hub.db.all("SELECT rowid AS seq, body FROM items WHERE device = ? AND "
                      "kind = 'reading' AND received >= ? ORDER BY rowid DESC LIMIT 20000",
                      device_id,
                      hub.now() - hours * 3600)
    return Response(json.dumps([_reading_row(r) for r in reversed(rows)]),
                    media_type="application/json", headers=SECURITY_HEADERS)


@router.get("/meters/{device_id}/stream")
async def stream(request: Request, device_id: str, after: int = 0):
    """Server-sent events: each new reading as it is stored (`reading`), JSON."""
    s, who = current(request)
    if who is None:
        raise HTTPException(401, "log in first")
    _device_or_404(request, device_id)
    hub = request.app.state.hub

    newest = hub.db.one("SELECT MAX(rowid) AS n FROM items WHERE device = ? AND "
                        "kind = 'reading'", device_id)["n"] or 0
    # new readings only: a page that has none (after=0) or reconnects after a long while
    # gets the last few, never the whole history
    start = max(after, newest - REPLAY) if after > 0 else newest

    async def events():
        last = start
        yield "retry: 2000\n\n"
        while not hub.closing:
            rows = hub.db.all("SELECT rowid AS seq, body FROM items WHERE device = ? AND "
                              "kind = 'reading' AND rowid > ? ORDER BY rowid LIMIT 100",
                              device_id, last)
            for r in rows:
                last = r["seq"]
                yield "event: reading\ndata: %s\n\n" % json.dumps(_reading_row(r))
            if not rows:
                yield ": idle\n\n"
            if sessions(request).get(request.cookies.get(COOKIE)) is None:
                return                      # logged out: the stream ends too
            await asyncio.sleep(SSE_POLL_S)

    return StreamingResponse(events(), media_type="text/event-stream",
                             headers=dict(SECURITY_HEADERS, **{"X-Accel-Buffering": "no"}))


@router.post("/meters/{device_id}/work")
async def send_work(request: Request, device_id: str):
    s, who, f = await checked_form(request)
    try:
        args = json.loads(f.get("args") or "{}")
        body = WorkIn(op=f.get("op", ""), args=args, expires_in=600)
    except (ValueError, ValidationError) as e:
        return refused(request, 400, "bad work: %s" % str(e).splitlines()[0])
    try:    # the REST API's own handler: the same role checks and queueing
        work = await api_devices.add_work(device_id, body, request, Response(), who=who,
                                          idempotency_key=None)
    except HTTPException as e:
        return refused(request, e.status_code, str(e.detail))
    return RedirectResponse("/ui/work/%s" % work["id"], 303)


@router.get("/work/{work_id}")
async def work_page(request: Request, work_id: str):
    s, who = current(request)
    if who is None:
        return login_redirect(request)
    hub = request.app.state.hub
    row = workq.get(hub.db, work_id)
    if row is None or not who.sees(hub.db, row["device"]):
        return refused(request, 404, "unknown work %s" % work_id)
    w = workq.view(row, devices.get(hub.db, row["device"])["presence"])
    result = render.flatten(w["result"]) if w.get("result") is not None else []
    return page(request, "work.html", who=who, csrf=s.csrf, w=w, result=result,
                final=w["status"] in FINAL)


@router.get("/static/{name}")
async def static(name: str):
    if name not in STATIC:
        raise HTTPException(404, "not found")
    return FileResponse(os.path.join(HERE, "static", name), media_type=STATIC[name])


@router.get("/vendor/{name}")
async def vendor(request: Request, name: str):
    path = _plots(request).get(name)
    if path is None:
        raise HTTPException(404, "not installed (make venv)")
    kind = "text/javascript" if name.endswith(".js") else (
        "text/css" if name.endswith(".css") else "text/plain")
    return FileResponse(path, media_type=kind, headers={"Cache-Control": "max-age=86400"})
