"""Bearer tokens for the operator API; roles `operator`, `utility` and `admin`
(docs/security.md "Roles")."""

from dataclasses import dataclass

from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

_bearer = HTTPBearer(auto_error=False, description="an operator, utility or admin token")

UTILITY_OPS = ("reset_energy",)
REGISTRARS = ("admin", "utility")       # the roles that may register devices


@dataclass
class Principal:
    name: str
    role: str

    @property
    def origin(self):
        return "operator:%s" % self.name

    @property
    def work_role(self):
        """The role work queued by this token carries to the meter, which knows `operator`
        and `utility` only: an admin's work goes as an operator's."""
        return "utility" if self.role == "utility" else "operator"

    def may_send(self, op):
        """None, or why this token may not queue `op`."""
        if op in UTILITY_OPS and self.role != "utility":
            return "%s requires a utility token" % op
        return None


async def principal(request: Request,
                    cred: HTTPAuthorizationCredentials | None = Depends(_bearer)) -> Principal:
    # async: on the event loop. A plain def would run in the threadpool and wait for the
    # database lock the loop takes for every exchange; under load it starved for seconds.
    if cred is None or not cred.credentials:
        raise HTTPException(401, "missing bearer token", headers={"WWW-Authenticate": "Bearer"})
    found = request.app.state.hub.principal(cred.credentials)
    if found is None:
        raise HTTPException(401, "invalid token", headers={"WWW-Authenticate": "Bearer"})
    return Principal(*found)


async def registrar(who: Principal = Depends(principal)) -> Principal:
    """A token that may register devices (admin or utility); 403 for any other."""
    if who.role not in REGISTRARS:
        raise HTTPException(403, "registering devices requires an admin or utility token")
    return who
