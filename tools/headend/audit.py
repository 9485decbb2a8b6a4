"""The append-only audit log: every operator action (who, role, what, target, when, outcome)
through the API, the dashboard and the database CLI commands. SQLite triggers refuse any
UPDATE or DELETE of a row, so not even a bug in the head-end rewrites history.

`Recorder` is a pure ASGI middleware: for every authenticated POST, PATCH, PUT or DELETE
under /v1/ (not the meters' exchange) and /ui/, it appends a row, fsync'd, before the answer
leaves, so an acknowledged action is always in the log; a refused one is logged with its
status and reason. Reads are not logged. The table: db.AUDIT."""

import getpass
import json
import time

from .db import dumps

WRITES = ("POST", "PATCH", "PUT", "DELETE")
MAX_DETAIL = 500
# path parameter -> how the target is written
TARGETS = (("device_id", "device:%s"), ("work_id", "work:%s"), ("name", "group:%s"),
           ("token_id", "token:%s"), ("alarm_id", "alarm:%s"), ("operator", "operator:%s"))


def record(db, who, role, action, target, outcome, detail=None, now=None):
    if detail is not None and not isinstance(detail, str):
        detail = dumps(detail)
    if detail is not None and len(detail) > MAX_DETAIL:
        detail = detail[:MAX_DETAIL - 3] + "..."
    db.run("INSERT INTO audit(at, who, role, action, target, outcome, detail) "
           "VALUES (?, ?, ?, ?, ?, ?, ?)", time.time() if now is None else now,
           *(_spelled(v) for v in (who, role, action, target, outcome, detail)))


def _spelled(text):
    """A NUL spelled out as \\x00: a refused request may carry one (a path, an echoed
    error), PostgreSQL's text cannot hold it, and the row must still be written."""
    return text.replace("\x00", "\\x00") if isinstance(text, str) else text


def cli_record(db, action, target, outcome="ok", detail=None):
    """An action taken with the database CLI (no token): who is the local user."""
    try:
        user = getpass.getuser()
    except Exception:       # no name for this uid (a container): the uid will do
        import os
        user = str(os.getuid())
    record(db, "cli:%s" % user, "console", action, target, outcome, detail)


def listing(db, limit=100, target=None, who=None, since=None):
    where, args = [], []
    for column, value in (("target", target), ("who", who)):
        if value is not None:
            where.append("%s = ?" % column)
            args.append(value)
    if since is not None:
        where.append("at >= ?")
        args.append(since)
    sql = "SELECT * FROM audit" + (" WHERE " + " AND ".join(where) if where else "")
    return [dict(r) for r in db.all(sql + " ORDER BY id DESC LIMIT ?", *args, limit)]


def note(request, detail, target=None):
    """What a handler adds to its audit row (e.g. the op and args of queued work), and its
    target when no path parameter names it (a new device, a new token)."""
    request.state.audit_detail = detail
    if target is not None:
        request.state.audit_target = target


class Recorder:
    def __init__(self, app, hub):
        self.app = app
        self.hub = hub

    async def __call__(self, scope, receive, send):
        path = scope.get("path", "")
        if (scope["type"] != "http" or scope["method"] not in WRITES or path == "/v1/exchange"
                or not (path.startswith("/v1/") or path.startswith("/ui/"))):
            await self.app(scope, receive, send)
            return
        held = []

        async def logged_send(message):
            if message["type"] == "http.response.start":
                held.append(message)
                return
            if message["type"] == "http.response.body" and held:
                held.append(message)
                status = held[0]["status"]
                if status < 400 or not message.get("more_body", False):
                    self._write(scope, status, b"".join(
                        m.get("body", b"") for m in held[1:]) if status >= 400 else b"")
                    for m in held:
                        await send(m)
                    held.clear()
                return
            await send(message)

        await self.app(scope, receive, logged_send)

    def _write(self, scope, status, error_body):
        state = scope.get("state") or {}
        who = state.get("who")
        if who is None:
            return          # not authenticated: nothing was done in anyone's name
        endpoint = scope.get("endpoint")
        action = getattr(endpoint, "__name__", None) or "%s %s" % (scope["method"],
                                                                   scope["path"])
        params = scope.get("path_params") or {}
        target = state.get("audit_target") or next(
            (fmt % params[k] for k, fmt in TARGETS if k in params), None)
        outcome = "ok" if status < 400 else "%d: %s" % (status, _reason(error_body))
        record(self.hub.db, who.name, who.role, action, target, outcome,
               state.get("audit_detail"))


def _reason(body):
    try:
        return str(json.loads(body)["error"])[:200]
    except (ValueError, KeyError, TypeError):
        return "refused"


def reader(who):
    """None, or why `who` may not read the audit log (admin or utility, every meter)."""
    if who.role not in ("admin", "utility") or who.groups is not None:
        return "reading the audit log requires an admin or utility token for every meter"
    return None
