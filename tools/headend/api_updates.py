"""Operator REST API for firmware updates: the published releases (what `backchannel
update` sends) and the meters' progress reports."""

from fastapi import APIRouter, Depends, HTTPException, Query, Request

from . import release_store, updates
from .auth import principal
from .models import ErrorOut, ReleaseOut, UpdateOut

_ERRORS = {code: {"model": ErrorOut} for code in (401, 404)}
router = APIRouter(prefix="/v1", tags=["updates"], responses=_ERRORS,
                   dependencies=[Depends(principal)])


@router.get("/updates", response_model=list[UpdateOut])
async def list_updates(request: Request, version: str | None = Query(None, max_length=32),
                       device: str | None = Query(None, max_length=64)):
    """The latest `update` state per meter and version (optionally of one version or one
    meter), with the time the head-end received it."""
    db, who = request.app.state.hub.db, request.state.who
    return [u for u in updates.listing(db, version, device) if who.sees(db, u["device"])]


@router.get("/releases", response_model=list[str])
async def list_releases(request: Request):
    """The versions published in the head-end's releases directory, oldest first."""
    return release_store.versions(request.app.state.hub.releases)


@router.get("/releases/{version}", response_model=ReleaseOut)
async def get_release(version: str, request: Request):
    """A published release: its manifest text and signature (the args of work op
    `update`) and its files."""
    release = release_store.load(request.app.state.hub.releases, version)
    if release is None:
        raise HTTPException(404, "no published release %s" % version[:40])
    return release_store.view(release)
