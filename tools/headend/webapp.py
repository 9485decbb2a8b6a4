"""The FastAPI app: routers, {"error": ...} error bodies, the OpenAPI extras, the
background task that expires work, derives presence and forgets old nonces, and the MQTT
bridge when one is configured (started and stopped with the app)."""

import asyncio
import logging
import math
from contextlib import asynccontextmanager, suppress

from fastapi import Depends, FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse
from pydantic.json_schema import models_json_schema
from starlette.exceptions import HTTPException as StarletteHTTPException

from . import (
    api_alarms,
    api_audit,
    api_billing,
    api_devices,
    api_export,
    api_groups,
    api_peer_rules,
    api_schemas,
    api_tokens,
    api_updates,
    api_waveforms,
    audit,
    datastore,
    escalation,
    exchange,
    fastpath,
    fleet_presence,
    ipgate,
    leader,
    metrics,
    mqtt_bridge,
    outcomes,
    policy,
    retention,
    shared_routes,
    singleton,
    tariff_renew,
)
from . import settings as settings_mod
from .auth import Principal, principal
from .hub import Hub
from .models import ExchangeRequest

log = logging.getLogger("backchannel")


def sweep(hub):
    """One pass of the background task: every process saves its long-polls' contacts; the
    leader (leader.py: one process per database) runs the fleet-wide timers."""
    # nothing here is acknowledged to anyone: no fsync of its own on the event loop (the next
    # exchange's or API call's fsync covers it; lost in a power cut, it is derived again)
    with hub.tx(sync=False):
        hub.flush_contacts()          # first: derive() must see every long-poll's contact
    if not hub.leadership.lead():
        return False
    now = hub.now()
    with hub.tx(sync=False) as db:
        hub.leadership.fence(db)      # a stale leader writes nothing (NotLeader)
        outcomes.expire_due(hub, now)
        fleet_presence.derive(hub, now)
        escalation.tick(hub, now)
        tariff_renew.tick(hub, now)
        db.run("DELETE FROM nonces WHERE seen < ?", now - 2 * hub.settings.replay_window)
    return True


async def sweeper(hub):
    while True:
        try:
            if sweep(hub):
                # retention.py: one batch of readings folded, in a fenced transaction of its own
                await hub.retention.tick(hub, hub.now())
        except leader.NotLeader:
            pass                      # logged by leader.py; the next tick tries again
        except Exception:
            log.exception("background sweep failed")
        await asyncio.sleep(hub.settings.sweep_interval)


# the API's routers, in the order the app serves them (the dashboard adds its own)
API_ROUTERS = (exchange.router, api_alarms.router, api_audit.router, api_billing.router,
               api_schemas.router, api_devices.router, api_export.router, api_groups.router,
               api_peer_rules.router, api_tokens.router, api_updates.router,
               api_waveforms.router, metrics.router)


def create_app(settings=None, transform=None):
    """The head-end app. transform: a callable overriding settings.transform."""
    settings = settings or settings_mod.Settings()
    if transform is None and settings.transform:
        transform = settings_mod.load_transform(settings.transform)
    policy.check_rules(settings.peer_rules)      # a bad rule: refuse to start, say why
    tokens = settings_mod.load_token_file(settings.token_file) if settings.token_file else ()
    hub = Hub(settings, _open_store(settings), transform, tokens)
    hub.leadership = leader.for_store(hub.db, "sweep", settings.leader_lease_s)
    hub.retention = retention.Retention(settings)
    bridge = mqtt_bridge.MqttBridge(hub, settings) if mqtt_bridge.enabled(settings) else None
    xmpp = None
    if settings.xmpp_component and settings.xmpp_secret:
        from . import xmpp_gateway  # slixmpp only for a head-end with an XMPP component

        xmpp = xmpp_gateway.XmppGateway(hub, settings)
    mail = None
    if settings.mail_address and settings.mail_password:
        from . import mail_gateway  # aioimaplib and aiosmtplib only for a mail gateway

        mail = mail_gateway.MailGateway(hub, settings)

    @asynccontextmanager
    async def lifespan(app):
        hub.loop = asyncio.get_running_loop()
        checkpointer = app.state.checkpointer = hub.db.checkpointer()   # SQLite: off the loop
        if checkpointer is not None:
            checkpointer.start()
        task = asyncio.create_task(sweeper(hub))
        listener = hub.db.listener(hub)      # work queued by other processes (PostgreSQL)
        if listener is not None:
            listener.start()
        app.state.listener = listener
        # once per fleet: on PostgreSQL the process holding the `gateways` lease runs them
        # ... except a bridge on a NATS cluster: every process runs one (a queue group)
        shared = bridge if bridge is not None and bridge.link.shared else None
        gateways = singleton.Gateways(hub, [None if shared else bridge, xmpp, mail],
                                      settings.leader_lease_s)
        try:
            if shared is not None:
                await shared.start()
            await gateways.start()
            yield
        finally:
            await gateways.stop()
            if shared is not None:
                await shared.stop()
            task.cancel()
            with suppress(asyncio.CancelledError):
                await task
            if listener is not None:
                await asyncio.to_thread(listener.stop)
            hub.flush_contacts()
            if checkpointer is not None:
                checkpointer.stop()
            hub.leadership.close()
            hub.retention.close()

    app = FastAPI(title="backchannel head-end", version="1.0", lifespan=lifespan,
                  description="Exchange endpoint for meters and the operator API "
                              "(docs/protocol.md, docs/headend.md).")
    app.state.hub = hub
    hub.metrics = metrics.Metrics(hub, bridge)
    app.state.bridge = bridge
    app.state.xmpp = xmpp
    app.state.mail = mail
    shared_routes.add(app, *API_ROUTERS)
    from . import dashboard
    dashboard.install(app)
    app.add_middleware(audit.Recorder, hub=hub)
    app.add_middleware(fastpath.ExchangeFastPath, hub=hub)
    app.add_middleware(ipgate.IpGate, hub=hub)          # outermost: before any auth work

    @app.get("/v1/health", tags=["health"])
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/v1/mqtt", tags=["operator"], dependencies=[Depends(principal)])
    async def mqtt_status() -> dict:
        """The MQTT bridge: broker, connected, messages handled and refused (by reason)."""
        return bridge.status() if bridge is not None else {"enabled": False}

    @app.get("/v1/mail", tags=["operator"], dependencies=[Depends(principal)])
    async def mail_status() -> dict:
        """The mail gateway: connected, mails handled and refused, the outbox on disk, and
        the meters' exchanges by mail (answered, pushed, refused)."""
        return mail.status() if mail is not None else {"enabled": False}

    @app.get("/v1/xmpp", tags=["operator"], dependencies=[Depends(principal)])
    async def xmpp_status() -> dict:
        """The XMPP component: connected, operators, meters online and refused (by reason)."""
        return xmpp.status() if xmpp is not None else {"enabled": False}

    @app.post("/v1/devices/{device_id}/probe", tags=["operator"])
    async def probe(device_id: str, who: Principal = Depends(principal)) -> dict:
        """Probe a meter's presence now (docs/xmpp.md "Presence probes"): an XEP-0199 ping
        through its XMPP session. An answer is a contact; none records it unavailable."""
        if hub.db.one("SELECT id FROM devices WHERE id = ?", device_id) is None \
                or not who.sees(hub.db, device_id):
            raise StarletteHTTPException(404, "unknown device %s" % device_id)
        if xmpp is None or xmpp.prober is None:
            raise StarletteHTTPException(409, "no meters on XMPP here (xmpp_domain unset)")
        return await xmpp.prober.probe(device_id)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException):
        return JSONResponse({"error": str(exc.detail)}, exc.status_code,
                            headers=getattr(exc, "headers", None))

    @app.exception_handler(datastore.StoreUnavailable)
    async def store_down(request: Request, exc: datastore.StoreUnavailable):
        return fastpath.unavailable()

    @app.exception_handler(datastore.NulInText)
    async def nul_in_text(request: Request, exc: datastore.NulInText):
        return JSONResponse({"error": str(exc)}, 400)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError):
        # NaN and Infinity (Python's json reads them) would make the echoed input unencodable
        errors = jsonable_encoder(exc.errors(), custom_encoder={float: _finite_or_text})
        parts = ["%s: %s" % (".".join(str(p) for p in e.get("loc", ())), e.get("msg"))
                 for e in errors[:3]]
        return JSONResponse({"error": "invalid request: " + "; ".join(parts), "detail": errors},
                            422)

    app.openapi = lambda: _openapi(app)
    return app


def _open_store(settings):
    if datastore.is_postgres(settings.db) and not settings.db_key:
        raise ValueError("db_key: a head-end on PostgreSQL needs the device-key file "
                         "(--db-key; every head-end process on the database uses the same)")
    return datastore.open_store(settings.db, settings.db_key)


def _finite_or_text(x):
    return x if math.isfinite(x) else str(x)


def _openapi(app):
    """The generated spec plus the exchange request schema (the endpoint reads raw bytes to
    check the signature, so FastAPI cannot see its body model)."""
    if app.openapi_schema is None:
        spec = get_openapi(title=app.title, version=app.version, description=app.description,
                           routes=app.routes)
        _, defs = models_json_schema([(ExchangeRequest, "validation")],
                                     ref_template="#/components/schemas/{model}")
        spec.setdefault("components", {}).setdefault("schemas", {}).update(defs["$defs"])
        app.openapi_schema = spec
    return app.openapi_schema
