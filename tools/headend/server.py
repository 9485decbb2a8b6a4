"""Run the app under uvicorn; on SIGINT/SIGTERM held long-polls answer at once, so the
server stops promptly instead of waiting out up to 25 s requests.

uvicorn's h11 protocol has no deadline for a request's headers: a client that connects and
sends its headers slowly (slow-loris), or sends nothing, held its connection for ever.
GuardedH11 closes a connection whose request headers are not complete `header_timeout`
seconds after it opened or after its previous response (docs/security.md).

Every meter in long-poll holds a socket: run() raises the soft RLIMIT_NOFILE (often 1024) to
the hard limit, and the listen backlog is 4096 so a crowd of meters reconnecting at once
(after a restart) is not refused (docs/scaling.md)."""

import resource

import h11
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

HEADER_TIMEOUT = 10.0
BACKLOG = 4096


def raise_nofile():
    """Soft RLIMIT_NOFILE up to the hard limit; returns the soft limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ValueError, OSError):
            pass
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


class GuardedH11(H11Protocol):
    header_timeout = HEADER_TIMEOUT
    _header_timer = None

    def connection_made(self, transport):
        super().connection_made(transport)
        self._arm_header_timer()

    def on_response_complete(self):
        super().on_response_complete()
        self._arm_header_timer()

    def connection_lost(self, exc):
        self._cancel_header_timer()
        super().connection_lost(exc)

    def _arm_header_timer(self):
        self._cancel_header_timer()
        if not self.transport.is_closing():
            self._header_timer = self.loop.call_later(self.header_timeout, self._header_deadline)

    def _cancel_header_timer(self):
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _header_deadline(self):
        self._header_timer = None
        # IDLE: the client has not completed a request's headers since the timer was armed
        if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
            self.transport.close()


class _Server(uvicorn.Server):
    def __init__(self, config, hub):
        super().__init__(config)
        self.hub = hub

    def handle_exit(self, sig, frame):
        if self.hub.loop is not None:
            self.hub.loop.call_soon_threadsafe(self.hub.close)
        super().handle_exit(sig, frame)


def make_config(app, host="127.0.0.1", port=0, certfile=None, keyfile=None, log_level="info",
                header_timeout=HEADER_TIMEOUT, **kw):
    protocol = type("GuardedH11", (GuardedH11,), {"header_timeout": header_timeout})
    return uvicorn.Config(app, host=host, port=port, ssl_certfile=certfile,
                          ssl_keyfile=keyfile, log_level=log_level, http=protocol,
                          timeout_graceful_shutdown=kw.pop("timeout_graceful_shutdown", 5),
                          backlog=kw.pop("backlog", BACKLOG),
                          # every idle exchange would carry them; the protocol needs neither
                          server_header=False, date_header=False, **kw)


def run(app, host, port, certfile=None, keyfile=None, log_level="info"):
    raise_nofile()
    _Server(make_config(app, host, port, certfile, keyfile, log_level), app.state.hub).run()
