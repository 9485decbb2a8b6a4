"""Waveform captures over the operator API (waveforms.py): the captures a meter uploaded,
and one capture's raw counts with what turns them into volts and amps."""

from fastapi import APIRouter, Depends, HTTPException, Request

from . import devices, waveforms
from .auth import principal
from .models import ErrorOut

router = APIRouter(prefix="/v1", tags=["operator"],
                   responses={code: {"model": ErrorOut} for code in (401, 404, 409)},
                   dependencies=[Depends(principal)])


def _device(request, device_id):
    hub = request.app.state.hub
    if devices.get(hub.db, device_id) is None or not request.state.who.sees(hub.db, device_id):
        raise HTTPException(404, "unknown device %s" % device_id)
    return hub


@router.get("/devices/{device_id}/waveforms")
async def list_waveforms(device_id: str, request: Request) -> list[dict]:
    """Captures by event (`event` is the event's start, `start_s.start_ms`), with how many
    of their chunks have arrived."""
    return waveforms.captures(_device(request, device_id).db, device_id)


@router.get("/devices/{device_id}/waveforms/{event}")
async def get_waveform(device_id: str, event: str, request: Request) -> dict:
    """One capture: rate [num, den], gains, mid points, `pre` samples before the trigger,
    and the raw counts `v` and `i` (409 while chunks are missing)."""
    hub = _device(request, device_id)
    try:
        return waveforms.assemble(hub.db, device_id, event)
    except waveforms.WaveformError as e:
        code = 409 if "incomplete" in str(e) else 404
        raise HTTPException(code, str(e)) from None
