"""Exports of one meter's readings and events (CSV or JSON) over a time range, streamed a
batch at a time; same bearer tokens as the rest of the operator API."""

import math

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.responses import StreamingResponse

from . import devices, export
from .auth import principal
from .models import ErrorOut

router = APIRouter(prefix="/v1", tags=["operator"],
                   responses={code: {"model": ErrorOut} for code in (400, 401, 404)},
                   dependencies=[Depends(principal)])
MEDIA = {"csv": "text/csv; charset=utf-8", "json": "application/json"}
Format = Query("csv", pattern="^(csv|json)$", description="csv or json")
Since = Query(None, description="unix seconds, inclusive (the meter's clock)")
Until = Query(None, description="unix seconds, exclusive")


def _range(since, until):
    for name, v in (("since", since), ("until", until)):
        if v is not None and not math.isfinite(v):
            raise HTTPException(400, "%s must be a finite number of unix seconds" % name)
    if since is not None and until is not None and until < since:
        raise HTTPException(400, "until is before since")


async def _aiter(gen):
    # an async generator on the event loop, as every other database read here (a
    # threadpool thread would wait for the lock the loop holds during exchanges)
    for piece in gen:
        yield piece


def _export(request, device_id, what, fmt, since, until):
    hub = request.app.state.hub
    if devices.get(hub.db, device_id) is None or not request.state.who.sees(hub.db, device_id):
        raise HTTPException(404, "unknown device %s" % device_id)
    _range(since, until)
    records = export.rows(hub.db, device_id, what, since, until)
    body = export.stream_csv(what, records) if fmt == "csv" else export.stream_json(records)
    name = "%s-%s.%s" % (device_id, what, fmt)
    return StreamingResponse(_aiter(body), media_type=MEDIA[fmt],
                             headers={"Content-Disposition": 'attachment; filename="%s"' % name})


@router.get("/devices/{device_id}/readings/export",
            responses={200: {"content": {"text/csv": {}, "application/json": {}}}})
async def export_readings(device_id: str, request: Request, format: str = Format,
                          since: float | None = Since, until: float | None = Until):
    """Readings in seq order; CSV columns as in docs/headend.md ("Exports")."""
    return _export(request, device_id, "readings", format, since, until)


@router.get("/devices/{device_id}/events/export",
            responses={200: {"content": {"text/csv": {}, "application/json": {}}}})
async def export_events(device_id: str, request: Request, format: str = Format,
                        since: float | None = Since, until: float | None = Until):
    """Events (event, event_start) and notices in seq order."""
    return _export(request, device_id, "events", format, since, until)
