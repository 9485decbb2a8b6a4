"""Billing over the operator API: set a meter's time-of-use tariff from its local-time form
(the head-end compiles it to UTC switch times, tariff.py, and queues the utility-only op
`tariff`), and export its billing snapshots as CSV or JSON."""

import json
import math
import time

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.responses import Response
from pydantic import BaseModel, Field

from . import billing_export, devices, operator_actions, tariff_renew, workq
from . import tariff as tariffs
from .auth import Principal, principal
from .models import ErrorOut, WorkOut

router = APIRouter(prefix="/v1", tags=["operator"],
                   responses={code: {"model": ErrorOut} for code in (400, 401, 403, 404)},
                   dependencies=[Depends(principal)])


class TariffIn(BaseModel):
    tariff: dict = Field(description="the local-time tariff (docs/billing.md)")
    days: int = Field(tariffs.DEFAULT_DAYS, ge=1, le=tariffs.MAX_DAYS,
                      description="days of UTC switch times to send from start")
    start: int | None = Field(None, description="unix seconds (default: now)")
    expires_in: int = Field(3600, ge=1, le=30 * 86400)


@router.post("/devices/{device_id}/tariff", response_model=WorkOut, status_code=202)
async def set_tariff(device_id: str, body: TariffIn, request: Request,
                     who: Principal = Depends(principal)):
    """Compile a local-time tariff to UTC switch times and queue op `tariff` (utility)."""
    hub = request.app.state.hub
    start = body.start if body.start is not None else int(time.time())
    try:
        args = tariffs.compile_tariff(body.tariff, start, body.days)
    except tariffs.TariffError as e:
        raise HTTPException(400, "tariff refused: %s" % e) from None
    try:
        row = operator_actions.queue(hub, who, device_id, "tariff", args, "api",
                                     body.expires_in)
    except operator_actions.ActionRefused as e:
        raise HTTPException(e.status, e.reason) from None
    with hub.tx() as db:                  # the head-end renews its horizon (tariff_renew.py)
        tariff_renew.remember(db, device_id, body.tariff, body.days, args, who, row["num"])
    dev = devices.get(hub.db, device_id)
    return workq.view(row, dev["presence"])


@router.get("/devices/{device_id}/billing/export",
            responses={200: {"content": {"text/csv": {}, "application/json": {}}}})
async def export_billing(device_id: str, request: Request,
                         format: str = Query("csv", pattern="^(csv|json)$"),
                         since: float | None = Query(None, description="unix seconds"),
                         until: float | None = Query(None, description="unix seconds")):
    """Billing snapshots, one per id: CSV one row per rate plus a total (exact Wh), or
    JSON as the meter sent them."""
    hub = request.app.state.hub
    if devices.get(hub.db, device_id) is None or not request.state.who.sees(hub.db, device_id):
        raise HTTPException(404, "unknown device %s" % device_id)
    for name, v in (("since", since), ("until", until)):
        if v is not None and not math.isfinite(v):
            raise HTTPException(400, "%s must be a finite number of unix seconds" % name)
    snaps = list(billing_export.snapshots(hub.db, device_id, since, until))
    name = "%s-billing.%s" % (device_id, format)
    headers = {"Content-Disposition": 'attachment; filename="%s"' % name}
    if format == "csv":
        return Response(billing_export.csv_text(snaps), media_type="text/csv; charset=utf-8",
                        headers=headers)
    return Response(json.dumps(snaps, separators=(",", ":")) + "\n",
                    media_type="application/json", headers=headers)
