"""Bearer tokens for the operator API; roles `operator`, `utility` and `admin`
(docs/security.md "Roles")."""

from dataclasses import dataclass

from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from .policy import GUARDED_OPS, UTILITY_OPS

_bearer = HTTPBearer(auto_error=False, description="an operator, utility or admin token")


REGISTRARS = ("admin", "utility")       # the roles that may register devices


@dataclass
class Principal:
    name: str
    role: str
    groups: tuple | None = None      # the groups it is confined to; None: every meter

    def sees(self, db, device_id):
        """May this token see and act on meter `device_id`? A scoped token sees the members
        of its groups only; to it every other meter does not exist (404, as unknown)."""
        if self.groups is None:
            return True
        marks = ",".join("?" * len(self.groups))
        return db.one("SELECT 1 FROM group_members WHERE device = ? AND name IN (%s)" % marks,
                      device_id, *self.groups) is not None

    def scope_sql(self, column):
        """(SQL condition, args) true for the meters `column` this token sees."""
        if self.groups is None:
            return "1 = 1", ()
        marks = ",".join("?" * len(self.groups))
        return ("%s IN (SELECT device FROM group_members WHERE name IN (%s))" % (column, marks),
                tuple(self.groups))

    def sees_group(self, name):
        return self.groups is None or name in self.groups

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
        if op in GUARDED_OPS:
            return ("%s is a guarded op: POST /v1/devices/{id}/rotate-key (a utility "
                    "token) starts it" % op)
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
    request.state.who = who = Principal(*found)
    return who


async def registrar(who: Principal = Depends(principal)) -> Principal:
    """A token that may register devices (admin or utility); 403 for any other."""
    if who.role not in REGISTRARS:
        raise HTTPException(403, "registering devices requires an admin or utility token")
    return who


async def admin(who: Principal = Depends(principal)) -> Principal:
    """A token that manages tokens: an admin token not confined to groups; 403 otherwise."""
    if who.role != "admin" or who.groups is not None:
        raise HTTPException(403, "managing tokens requires an admin token for every meter")
    return who
