"""A per-IP cap on unauthenticated requests: an address whose requests failed
authentication (401) `unauth_per_minute` times in the current minute gets 429 with
Retry-After for every request until that minute is over, before any signature or token is
checked. Guessing tokens, device keys or device ids from one address is slowed to that
rate, and the work each guess costs (an HMAC, a database look-up) is not spent.

A meter or operator that authenticates is never counted; behind a NAT shared with an
attacker it waits out the minute like everyone there (the meter's outbox keeps its data).
A pure ASGI middleware, outermost: the app adds it (TestClient) and server.make_config wraps
the app in it too (under uvicorn the exchange fast path runs outside the app's stack)."""

import time

from starlette.responses import JSONResponse

WINDOW_S = 60
MAX_ADDRESSES = 100000      # addresses remembered at once; the oldest windows go first


class IpGate:
    def __init__(self, app, hub):
        self.app = app
        self.hub = hub
        self.failures = {}       # address -> [window start (monotonic), 401s in it]

    async def __call__(self, scope, receive, send):
        limit = self.hub.settings.unauth_per_minute
        if scope["type"] != "http" or not limit or scope.get("bc_gated"):
            await self.app(scope, receive, send)
            return
        scope["bc_gated"] = True        # the same gate inside the app lets it through
        address = (scope.get("client") or ("?",))[0]
        now = time.monotonic()
        entry = self.failures.get(address)
        if entry is not None and now - entry[0] >= WINDOW_S:
            del self.failures[address]
            entry = None
        if entry is not None and entry[1] >= limit:
            wait = max(1, int(entry[0] + WINDOW_S - now + 0.999))
            response = JSONResponse(
                {"error": "too many failed authentications from %s: try again in %d s"
                          % (address, wait)}, 429, headers={"Retry-After": str(wait)})
            await response(scope, receive, send)
            return

        async def counting_send(message):
            if message["type"] == "http.response.start" and message["status"] == 401:
                self._failed(address, now)
            await send(message)

        await self.app(scope, receive, counting_send)

    def _failed(self, address, now):
        entry = self.failures.get(address)
        if entry is None:
            if len(self.failures) >= MAX_ADDRESSES:
                self._forget(now)
            entry = self.failures[address] = [now, 0]
        entry[1] += 1

    def _forget(self, now):
        for address in [a for a, e in self.failures.items() if now - e[0] >= WINDOW_S]:
            del self.failures[address]
        while len(self.failures) >= MAX_ADDRESSES:          # all recent: drop the oldest
            del self.failures[min(self.failures, key=lambda a: self.failures[a][0])]
