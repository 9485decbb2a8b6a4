"""The dashboard's presence and updates pages: presence counts and the fleet's presence
history (newest first, one meter with ?meter=), and firmware releases with each rollout's
progress per meter (the page reloads while a meter is still downloading or installing)."""

from fastapi import APIRouter, Query, Request

from .. import devices, fleet_presence, release_store, updates
from .pages import current, login_redirect, page, refused

router = APIRouter(prefix="/ui", include_in_schema=False)
HISTORY_ROWS = 200
IN_FLIGHT = ("downloading", "verified", "installing")
REFRESH_S = 5


@router.get("/presence")
async def presence_page(request: Request, meter: str = Query("", max_length=64)):
    s, who = current(request)
    if who is None:
        return login_redirect(request)
    db = request.app.state.hub.db
    cond, args = who.scope_sql("device")
    if meter:
        if devices.get(db, meter) is None or not who.sees(db, meter):
            return refused(request, 404, "unknown meter %s" % meter)
        cond, args = "device = ?", (meter,)
    rows = db.all("SELECT device, state, note, at, source FROM presence WHERE %s "
                  "ORDER BY id DESC LIMIT ?" % cond, *args, HISTORY_ROWS)
    dcond, dargs = who.scope_sql("id")
    counts = {state: 0 for state in fleet_presence.STATES}
    for r in db.all("SELECT presence, COUNT(*) AS n FROM devices WHERE %s GROUP BY presence"
                    % dcond, *dargs):
        counts[r["presence"]] = r["n"]
    return page(request, "presence.html", who=who, csrf=s.csrf, rows=rows, meter=meter,
                counts=[(k, v) for k, v in counts.items() if v or k in fleet_presence.STATES])


@router.get("/updates")
async def updates_page(request: Request):
    s, who = current(request)
    if who is None:
        return login_redirect(request)
    hub = request.app.state.hub
    rollouts = {}
    for u in updates.listing(hub.db):
        if who.sees(hub.db, u["device"]):
            counts = rollouts.setdefault(u["version"], {})
            counts[u["state"]] = counts.get(u["state"], 0) + 1
    versions = release_store.versions(hub.releases)
    return page(request, "updates.html", who=who, csrf=s.csrf, versions=versions,
                rollouts=sorted(rollouts.items(), reverse=True))


@router.get("/updates/{version}")
async def rollout_page(request: Request, version: str):
    s, who = current(request)
    if who is None:
        return login_redirect(request)
    db = request.app.state.hub.db
    rows = [u for u in updates.listing(db, version[:32]) if who.sees(db, u["device"])]
    if not rows and version not in release_store.versions(request.app.state.hub.releases):
        return refused(request, 404, "no release or rollout %s" % version[:32])
    busy = any(u["state"] in IN_FLIGHT for u in rows)
    return page(request, "rollout.html", who=who, csrf=s.csrf, version=version, rows=rows,
                refresh=REFRESH_S if busy else None)
