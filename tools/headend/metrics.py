"""Prometheus metrics of the head-end (GET /metrics, docs/headend.md "Metrics").

Counters and histograms are updated where things happen (exchanges, group-commit fsyncs);
fleet, presence, queue and connection figures are read when Prometheus scrapes, from the
database and the hub. No label names a device: a fleet of 10,000 meters would be 10,000
series per metric (labels are only transport, status, presence state, work status).

/metrics needs a bearer token (any role), unless the head-end listens on loopback only
(`backchannel serve --host 127.0.0.1`, or ::1): then whoever can reach it is on the host."""

import ipaddress

from fastapi import APIRouter, Depends, Request, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily

from . import auth
from .fleet_presence import STATES as PRESENCE

WORK_OPEN = ("queued", "delivered")
TRANSPORTS = ("http", "mqtt", "email", "xmpp")
# exchange work is milliseconds; a slow disk's fsync can take a second
LATENCY_BUCKETS = (.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10)
BATCH_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000)


class Metrics:
    """One registry per app (tests build many apps in one process)."""

    def __init__(self, hub, bridge=None):
        self.hub = hub
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.exchanges = Counter(
            "backchannel_exchanges", "Exchanges answered or refused, by transport and status "
            "(200 answered, 4xx refused)", ["transport", "status"], registry=r)
        self.encodings = Counter(
            "backchannel_exchanges_by_encoding", "Exchanges answered, by the encoding of the "
            "request (docs/protocol.md \"Encodings\")", ["encoding"], registry=r)
        self.latency = Histogram(
            "backchannel_exchange_latency_seconds", "An exchange's own work: authenticate, "
            "store and the fsync its answer waits for (a long-poll's hold is not in it)",
            ["transport"], buckets=LATENCY_BUCKETS, registry=r)
        self.batch = Histogram(
            "backchannel_group_commit_batch_size", "Exchanges released by one group-commit "
            "fsync", buckets=BATCH_BUCKETS, registry=r)
        self.fsync = Histogram(
            "backchannel_group_commit_fsync_seconds", "Duration of one group-commit fsync",
            buckets=LATENCY_BUCKETS, registry=r)
        r.register(_Snapshot(hub, bridge))
        hub.group_commit.on_batch = self.on_batch

    def exchanged(self, transport, seconds, encoding="json"):
        self.exchanges.labels(transport, "200").inc()
        self.encodings.labels(encoding).inc()
        self.latency.labels(transport).observe(seconds)

    def refused(self, transport, status):
        self.exchanges.labels(transport, str(status)).inc()

    def on_batch(self, size, seconds):
        self.batch.observe(size)
        self.fsync.observe(seconds)


def exchanged(hub, transport, seconds, encoding="json"):
    m = getattr(hub, "metrics", None)
    if m is not None:
        m.exchanged(transport, seconds, encoding)


def refused(hub, transport, status):
    m = getattr(hub, "metrics", None)
    if m is not None:
        m.refused(transport, status)


class _Snapshot:
    """Figures read at scrape time from the database and the hub."""

    def __init__(self, hub, bridge):
        self.hub = hub
        self.bridge = bridge

    def describe(self):
        return []           # collected at scrape time only

    def collect(self):
        hub = self.hub
        db = hub.db
        presence = GaugeMetricFamily("backchannel_devices", "Registered meters by presence",
                                     labels=["presence"])
        counts = dict.fromkeys(PRESENCE, 0)
        for r in db.all("SELECT presence, COUNT(*) AS n FROM devices GROUP BY presence"):
            state = r["presence"] if r["presence"] in PRESENCE else "unavailable"
            counts[state] += r["n"]
        for state, n in sorted(counts.items()):
            presence.add_metric([state], n)
        yield presence
        via = GaugeMetricFamily("backchannel_devices_by_transport",
                                "Meters by the transport of their last exchange (none: never)",
                                labels=["transport"])
        counts = dict.fromkeys(TRANSPORTS + ("none",), 0)
        for r in db.all("SELECT transport, COUNT(*) AS n FROM devices GROUP BY transport"):
            key = r["transport"] if r["transport"] in TRANSPORTS else "none"
            counts[key] += r["n"]
        for t, n in sorted(counts.items()):
            via.add_metric([t], n)
        yield via
        work = GaugeMetricFamily("backchannel_work_open", "Work items not finished, by status "
                                 "(the queues' depth summed over meters)", labels=["status"])
        counts = dict.fromkeys(WORK_OPEN, 0)
        for r in db.all("SELECT status, COUNT(*) AS n FROM work WHERE status IN (?, ?) "
                        "GROUP BY status", *WORK_OPEN):
            counts[r["status"]] = r["n"]
        for status, n in sorted(counts.items()):
            work.add_metric([status], n)
        yield work
        conns = GaugeMetricFamily("backchannel_connections", "Meters connected now: HTTP "
                                  "long-polls held, MQTT meters online through the bridge",
                                  labels=["transport"])
        conns.add_metric(["http"], sum(len(w) for w in hub.waiters.values()))
        conns.add_metric(["mqtt"], _mqtt_online(self.bridge, db))
        yield conns
        yield GaugeMetricFamily("backchannel_exchanges_in_progress",
                                "Exchanges being handled now (both transports)",
                                value=sum(hub.active.values()))


def _mqtt_online(bridge, db):
    if bridge is None or not bridge.connected:
        return 0
    n = db.one("SELECT COUNT(*) AS n FROM devices WHERE transport = 'mqtt' AND presence "
               "!= 'unavailable'")["n"]
    return max(0, n - len(bridge.offline))


def loopback_only(host):
    """True if a listen address admits only this host's own connections."""
    if host in ("localhost",):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


router = APIRouter(tags=["health"])
_bearer = HTTPBearer(auto_error=False, description="any role's token")


async def _guard(request: Request,
                 cred: HTTPAuthorizationCredentials | None = Depends(_bearer)):
    if not getattr(request.app.state, "loopback_only", False):
        await auth.principal(request, cred)


@router.get("/metrics", dependencies=[Depends(_guard)],
            responses={200: {"content": {"text/plain": {}}}, 401: {}})
async def metrics(request: Request):
    """Prometheus text format. A bearer token is needed unless the head-end listens on
    loopback only."""
    body = generate_latest(request.app.state.hub.metrics.registry)
    return Response(body, media_type=CONTENT_TYPE_LATEST)
