"""Run the app under uvicorn; on SIGINT/SIGTERM held long-polls answer at once, so the
server stops promptly instead of waiting out up to 25 s requests.

uvicorn's HTTP protocols have no deadline for a request's headers or body: a client that
connects and sends its headers slowly (slow-loris), or sends nothing, or declares a large
body and trickles it, held its connection for ever. GuardedHttpTools (httptools, the C
parser, used when installed) and GuardedH11 (pure Python) close a connection whose request
headers are not complete `header_timeout` seconds, or whose body is not complete
`body_timeout` seconds, after it opened or after its previous response (docs/security.md).

Every meter in long-poll holds a socket: run() raises the soft RLIMIT_NOFILE (often 1024) to
the hard limit, and the listen backlog is 4096 so a crowd of meters reconnecting at once
(after a restart) is not refused (docs/scaling.md)."""

import gc
import resource

import h11
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

try:
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
except ImportError:               # httptools missing: the pure-Python h11 parser only
    HttpToolsProtocol = None

from .fastpath import ExchangeFastPath
from .ipgate import IpGate

HEADER_TIMEOUT = 10.0
BODY_TIMEOUT = 30.0                 # the whole request, headers and body (max_body 256 KiB)
MAX_HEADER_BYTES = 16 * 1024        # h11's default max_incomplete_event_size
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


class _RequestDeadline:
    """Mixin for a uvicorn HTTP protocol: close a connection whose request headers are not
    complete `header_timeout` seconds, or whose whole request (headers and body) is not
    complete `body_timeout` seconds, after it opened or after its previous response. Both
    hold before any authentication: a client that declares a large Content-Length and
    trickles its body a byte at a time is cut at the body deadline. A long-poll is not
    affected: its request is complete when it starts to wait."""
    header_timeout = HEADER_TIMEOUT
    body_timeout = BODY_TIMEOUT
    _header_timer = None
    _request_start = 0.0

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
            self._request_start = self.loop.time()
            self._header_timer = self.loop.call_later(self.header_timeout, self._header_deadline)

    def _cancel_header_timer(self):
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _header_deadline(self):
        self._header_timer = None
        if self.transport.is_closing():
            return
        if self._awaiting_headers():
            self.transport.close()
        elif self._awaiting_body():
            left = self._request_start + max(self.body_timeout, self.header_timeout) - \
                self.loop.time()
            if left <= 0:
                self.transport.close()      # the app's receive() then gets http.disconnect
            else:
                self._header_timer = self.loop.call_later(left, self._header_deadline)


class GuardedH11(_RequestDeadline, H11Protocol):
    def _awaiting_headers(self):
        # IDLE: the client has not completed a request's headers since the timer was armed
        return self.conn.their_state is h11.IDLE

    def _awaiting_body(self):
        return self.conn.their_state is h11.SEND_BODY


class HeadersTooLarge(Exception):
    pass


if HttpToolsProtocol is not None:
    class GuardedHttpTools(_RequestDeadline, HttpToolsProtocol):
        """The same guard over uvicorn's httptools (C) parser, which costs less CPU per
        request than h11 (docs/scaling.md). httptools sets no limit on the request line and
        headers: above MAX_HEADER_BYTES (h11's own limit) the request is refused with 400
        and the connection closed, as h11 does."""
        _header_bytes = 0

        def _awaiting_headers(self):
            return self.cycle is None or self.cycle.response_complete

        def _awaiting_body(self):
            return self.cycle.more_body and not self.cycle.response_complete

        def on_message_begin(self):
            self._header_bytes = 0
            super().on_message_begin()

        def on_url(self, url):
            self._count_header_bytes(len(url))
            super().on_url(url)

        def on_header(self, name, value):
            self._count_header_bytes(len(name) + len(value) + 4)
            super().on_header(name, value)

        def _count_header_bytes(self, n):
            self._header_bytes += n
            if self._header_bytes > MAX_HEADER_BYTES:
                raise HeadersTooLarge()   # httptools: HttpParserCallbackError, uvicorn: 400
else:
    GuardedHttpTools = None


def protocol_class(name="auto"):
    """"h11", "httptools", or "auto" (httptools when installed)."""
    if name == "h11" or (name == "auto" and GuardedHttpTools is None):
        return GuardedH11
    if GuardedHttpTools is None:
        raise ValueError("httptools is not installed")
    return GuardedHttpTools


class _Server(uvicorn.Server):
    def __init__(self, config, hub):
        super().__init__(config)
        self.hub = hub

    def handle_exit(self, sig, frame):
        if self.hub.loop is not None:
            self.hub.loop.call_soon_threadsafe(self.hub.close)
        super().handle_exit(sig, frame)


def make_config(app, host="127.0.0.1", port=0, certfile=None, keyfile=None, log_level="info",
                header_timeout=HEADER_TIMEOUT, body_timeout=BODY_TIMEOUT, http="auto", **kw):
    base = protocol_class(http)
    protocol = type(base.__name__, (base,), {"header_timeout": header_timeout,
                                             "body_timeout": body_timeout})
    hub = getattr(getattr(app, "state", None), "hub", None)
    if hub is not None:     # the exchange's fast path outside FastAPI's middleware too
        app = IpGate(ExchangeFastPath(app, hub), hub)
    return uvicorn.Config(app, host=host, port=port, ssl_certfile=certfile,
                          ssl_keyfile=keyfile, log_level=log_level, http=protocol,
                          timeout_graceful_shutdown=kw.pop("timeout_graceful_shutdown", 5),
                          backlog=kw.pop("backlog", BACKLOG),
                          # every idle exchange would carry them; the protocol needs neither
                          server_header=False, date_header=False, **kw)


def tune_gc():
    """The cyclic GC's default thresholds (700, 10, 10) cost about 12 % of the head-end's
    CPU at 5,000 meters: full collections walk every object, and each meter's connection,
    protocol and waiting coroutine are thousands of them. Objects made at start (modules,
    the app) are frozen out of collections; young ones are collected every 10,000
    allocations instead of 700, and full collections are 10 times rarer."""
    gc.freeze()
    gc.set_threshold(10000, 50, 100)


def run(app, host, port, certfile=None, keyfile=None, log_level="info"):
    raise_nofile()
    tune_gc()
    _Server(make_config(app, host, port, certfile, keyfile, log_level), app.state.hub).run()
