"""/v1/peer-rules: the utility's peer allow rules (tools/headend/peer_rules.py). Reading
them takes a utility or admin token; adding and removing one a utility token for every
meter (a token confined to groups would reach beyond them). Every change is in the audit
log (the middleware records each authenticated write with its outcome)."""

from fastapi import APIRouter, Depends, HTTPException, Request
from pydantic import BaseModel, Field

from . import audit, peer_rules
from .auth import Principal, principal
from .models import ErrorOut

router = APIRouter(prefix="/v1/peer-rules", tags=["peers"],
                   responses={code: {"model": ErrorOut} for code in (401, 403, 404)})


class RuleIn(BaseModel):
    # the checks (a group or *, peer ops only, never relay, ...) are peer_rules.parse's,
    # so the API and the CLI refuse with the same reason
    from_: str = Field(alias="from", min_length=1, max_length=64,
                       description="the senders: a group, or * for every meter")
    to: str = Field(min_length=1, max_length=64, description="the targets: a group, or *")
    ops: list[str] = Field(min_length=1, max_length=16)


class RuleOut(BaseModel):
    id: int
    from_: str = Field(alias="from")
    to: str
    ops: list[str]
    created: float
    by: str


def _reader(who: Principal = Depends(principal)):
    if who.role not in ("utility", "admin"):
        raise HTTPException(403, "reading peer rules requires a utility or admin token")
    return who


def _writer(who: Principal = Depends(principal)):
    if who.role != "utility" or who.groups is not None:
        raise HTTPException(403, "peer rules are set by a utility token for every meter")
    return who


@router.get("", response_model=list[RuleOut], response_model_by_alias=True)
async def list_peer_rules(request: Request, who: Principal = Depends(_reader)):
    return peer_rules.listing(request.app.state.hub.db)


@router.post("", response_model=RuleOut, response_model_by_alias=True, status_code=201,
             responses={400: {"model": ErrorOut}})
async def add_peer_rule(body: RuleIn, request: Request, who: Principal = Depends(_writer)):
    rule = {"from": body.from_, "to": body.to, "ops": body.ops}
    audit.note(request, rule)
    try:
        made = peer_rules.add(request.app.state.hub.db, rule, who.origin)
    except peer_rules.RuleError as e:
        raise HTTPException(e.status, str(e)) from None
    request.state.audit_target = "peer_rule:%d" % made["id"]
    return made


@router.delete("/{rule_id}", response_model=RuleOut, response_model_by_alias=True)
async def remove_peer_rule(rule_id: int, request: Request, who: Principal = Depends(_writer)):
    request.state.audit_target = "peer_rule:%d" % rule_id
    if not 0 < rule_id < 2 ** 62:
        raise HTTPException(404, "no peer rule %d" % rule_id)
    gone = peer_rules.remove(request.app.state.hub.db, rule_id)
    if gone is None:
        raise HTTPException(404, "no peer rule %d" % rule_id)
    return gone
