"""GET /v1/audit: the append-only audit log, newest first (admin or utility token for
every meter)."""

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from pydantic import BaseModel

from . import audit
from .auth import Principal, principal
from .models import ErrorOut

router = APIRouter(prefix="/v1", tags=["audit"],
                   responses={code: {"model": ErrorOut} for code in (401, 403)})


class AuditOut(BaseModel):
    id: int
    at: float
    who: str
    role: str
    action: str
    target: str | None
    outcome: str
    detail: str | None


@router.get("/audit", response_model=list[AuditOut])
async def audit_log(request: Request, who: Principal = Depends(principal),
                    limit: int = Query(100, ge=1, le=10000),
                    target: str | None = Query(None, max_length=100,
                                               description="e.g. device:meter-a"),
                    by: str | None = Query(None, max_length=100, description="who acted"),
                    since: float | None = Query(None, ge=0, le=2**40)):
    refused = audit.reader(who)
    if refused:
        raise HTTPException(403, refused)
    return audit.listing(request.app.state.hub.db, limit, target, by, since)
