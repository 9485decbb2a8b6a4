"""Operator REST API for bearer tokens (an admin token for every meter): create one with a
role, an expiry and group scopes, list them (never the tokens themselves), revoke one."""

from typing import Literal

from fastapi import APIRouter, Depends, HTTPException, Request
from pydantic import BaseModel, Field

from . import audit, groups, tokens
from .auth import admin
from .models import ErrorOut

_ERRORS = {code: {"model": ErrorOut} for code in (401, 403, 404)}
router = APIRouter(prefix="/v1/tokens", tags=["tokens"], responses=_ERRORS,
                   dependencies=[Depends(admin)])


class TokenIn(BaseModel):
    name: str = Field(min_length=1, max_length=100)
    role: Literal["operator", "utility", "admin"]
    expires_in: int | None = Field(None, ge=1, le=tokens.MAX_LIFETIME_S,
                                   description="seconds; none: never expires")
    groups: list[str] | None = Field(None, min_length=1, max_length=100,
                                     description="confine it to these groups' meters")


class TokenOut(BaseModel):
    id: str
    name: str
    role: str
    created: float
    expires: float | None
    groups: list[str] | None
    revoked: float | None
    state: Literal["live", "expired", "revoked"]


class TokenCreated(TokenOut):
    token: str = Field(description="shown once; the head-end keeps only its hash")


@router.post("", response_model=TokenCreated, status_code=201)
async def create_token(body: TokenIn, request: Request):
    db = request.app.state.hub.db
    audit.note(request, {"name": body.name, "role": body.role, "expires_in": body.expires_in,
                         "groups": body.groups})
    for name in body.groups or ():
        if len(name) > 64 or groups.get(db, name) is None:
            raise HTTPException(404, "unknown group %s" % name[:64])
    try:
        token = tokens.create(db, body.name, body.role, expires_in=body.expires_in,
                              groups=body.groups)
    except ValueError as e:
        raise HTTPException(400, str(e)) from None
    mine = tokens.id_of(token)
    request.state.audit_target = "token:%s" % mine
    return dict(next(t for t in tokens.listing(db) if t["id"] == mine), token=token)


@router.get("", response_model=list[TokenOut])
async def list_tokens(request: Request):
    return tokens.listing(request.app.state.hub.db)


@router.delete("/{token_id}", response_model=list[TokenOut])
async def revoke_token(token_id: str, request: Request):
    """Revoke a token by its id (or every token of that name). It is refused from then on,
    exactly like an unknown token, and dashboard sessions opened with it end."""
    db = request.app.state.hub.db
    revoked = tokens.revoke(db, token_id[:100])
    if not revoked:
        raise HTTPException(404, "no token %s" % token_id[:100])
    return [t for t in tokens.listing(db) if t["id"] in revoked]
