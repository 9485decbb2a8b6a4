"""POST /v1/exchange without FastAPI's routing, dependency solving and exception layers: the
one request every meter makes, up to once a second per thousand meters, so the per-request
framework cost was a large share of the head-end's CPU at scale (docs/scaling.md).

A pure ASGI middleware: it reads the body with the same 413 limit, calls exchange.respond()
(the same core the documented FastAPI route calls) and renders a refusal exactly as the
app's HTTPException handler does: {"error": reason} with its status. Every other request
goes on to the app unchanged. The app adds it as a middleware (so TestClient
tests take it), and server.make_config wraps the whole app in it as well, so under uvicorn
an exchange also skips FastAPI's outer layers (server errors, telemetry)."""

from fastapi import HTTPException
from starlette.responses import JSONResponse

from . import exchange
from .datastore import RETRY_AFTER_S, NulInText, StoreUnavailable

PATH = "/v1/exchange"


class ExchangeFastPath:
    def __init__(self, app, hub):
        self.app = app
        self.hub = hub

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["path"] != PATH or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        signature = length = content_type = None
        for name, value in scope["headers"]:
            if name == b"x-bc-signature":
                signature = value.decode("latin-1")
            elif name == b"content-length":
                length = value
            elif name == b"content-type":
                content_type = value.decode("latin-1")
        try:
            raw = await read_body(length, receive, self.hub.settings.max_body)
            if raw is None:                 # the client went away before its body arrived
                return
            response = await exchange.respond(self.hub, raw, signature, receive, content_type)
        except HTTPException as e:
            response = JSONResponse({"error": str(e.detail)}, e.status_code,
                                    headers=getattr(e, "headers", None))
        except StoreUnavailable:        # nothing was committed, so nothing is acknowledged
            response = unavailable()
        except NulInText as e:          # PostgreSQL: no such device can exist
            response = JSONResponse({"error": str(e)}, 400)
        await response(scope, receive, send)


def unavailable():
    """503 for a database that cannot be reached: the meter backs off and retries."""
    return JSONResponse({"error": "database unavailable, retry later"}, 503,
                        headers={"Retry-After": str(RETRY_AFTER_S)})


async def read_body(length, receive, limit):
    """The request body (bytes), None on disconnect; HTTPException 413 above `limit`."""
    if length is not None and length.isdigit() and int(length) > limit:
        raise HTTPException(413, "body larger than %d bytes" % limit)
    body = bytearray()
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        body += message.get("body", b"")
        if len(body) > limit:
            raise HTTPException(413, "body larger than %d bytes" % limit)
        if not message.get("more_body", False):
            return bytes(body)
