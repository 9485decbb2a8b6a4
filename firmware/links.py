# The meter's link to the head-end, made from its configuration; only what that configuration
# uses is imported (a board's heap: docs/performance.md, "Memory budget"): comms and httpc
# for HTTP, the MQTT modules (and umqtt) for MQTT, the mail modules (mail_comms: SMTP, and
# IMAP or POP3 as mail_pickup says) for email, the XMPP ones for XMPP, nothing without a
# transport; the updater (with the manifest, P-256 and file modules) only when an update
# is in flight at start or an `update` op arrives (App.updater).

import os


def make_meter(cfg, board):
    """(meter, reporter) for cfg's wiring: a polyphase or multi-circuit meter imports its
    code only then (polyphase.py)."""
    if cfg["wiring"] == "1p2w":
        import metering
        import reading

        meter = metering.Meter(cfg, board)
        return meter, reading.Reporter(meter, cfg["demand_block_s"])
    import poly_reading
    import polyphase

    meter = polyphase.PolyMeter(cfg, board)
    return meter, poly_reading.PolyReporter(meter, cfg["demand_block_s"])


def block_reader(board, meter, cfg, block):
    """(vb, ib, read_feed): read_feed() reads a block from the board into preallocated
    buffers and feeds it to the meter, returning the samples read (no allocation per call);
    vb, ib are the (first) voltage and current channels, for waveform capture."""
    from array import array

    if cfg["wiring"] == "1p2w":
        vb = array("H", [0] * block)
        ib = array("H", [0] * block)

        def read_feed():
            n = board.read(vb, ib)
            if n:
                meter.feed(vb, ib, n)
            return n

        return vb, ib, read_feed
    bufs = [array("H", [0] * block) for _ in range(meter.channels)]

    def read_poly():
        n = board.read(bufs)
        if n:
            meter.feed(bufs, n)
        return n

    return bufs[0], bufs[meter.nv], read_poly


def make_comms(app, cfg, key):
    """The App's Comms or MqttComms for cfg, or None when no transport is configured."""
    if cfg["transport"] == "mqtt" and cfg["mqtt_host"]:
        from httpc import tls_context
        from mqtt_comms import MqttComms

        ctx = None
        if cfg["mqtt_tls"]:
            try:
                ctx = tls_context(cfg["ca_file"])
            except OSError:
                raise ValueError("ca_file %r cannot be read: mqtt_tls needs the broker's "
                                 "CA to pin" % (cfg["ca_file"],))
        return MqttComms(cfg["device_id"], key, cfg["mqtt_host"], cfg["mqtt_port"],
                         app.outbox, app.inbox, app.dispatcher, app.clock,
                         ssl=ctx, keepalive=cfg["mqtt_keepalive"],
                         presence=app.presence, reading=app.latest_reading,
                         state_s=cfg["report_s"], ha_discovery=cfg["ha_discovery"])
    if cfg["transport"] == "email" and cfg["mail_host"]:
        return _mail_comms(app, cfg, key)
    if cfg["transport"] == "xmpp" and cfg["xmpp_host"]:
        return _xmpp(app, cfg, key)
    if cfg["transport"] == "http" and cfg["server_url"]:
        from comms import Comms
        from httpc import HttpClient, tls_context

        ctx = None
        if cfg["server_url"].startswith("https"):
            try:
                ctx = tls_context(cfg["ca_file"])
            except OSError:
                raise ValueError("ca_file %r cannot be read: an https server_url needs "
                                 "the head-end's CA to pin" % (cfg["ca_file"],))
        http = HttpClient(cfg["server_url"], ctx, proxy_url=cfg["proxy_url"])
        return Comms(cfg["device_id"], key, http, app.outbox, app.inbox, app.dispatcher,
                     app.clock, encoding=cfg["encoding"])
    return None


def _mail_comms(app, cfg, key):
    from httpc import tls_context
    from mail_comms import MailComms

    try:
        ctx = tls_context(cfg["ca_file"])
    except OSError:
        raise ValueError("ca_file %r cannot be read: email is direct TLS only, with the "
                         "mail server's CA pinned" % (cfg["ca_file"],))
    for name in ("mail_user", "mail_password", "mail_to"):
        if not cfg[name]:
            raise ValueError("transport email needs %s" % name)
    return MailComms(cfg["device_id"], key, cfg["mail_host"], cfg["mail_user"],
                     cfg["mail_password"], cfg["mail_to"], app.outbox, app.inbox,
                     app.dispatcher, app.clock, ctx, smtp_port=cfg["mail_smtp_port"],
                     pickup=cfg["mail_pickup"], imap_port=cfg["mail_imap_port"],
                     pop3_port=cfg["mail_pop3_port"], poll_every_s=cfg["mail_poll_s"],
                     send_every_s=cfg["mail_send_s"])


def make_trial(app, state_dir):
    """A guarded change with fallback (trial.py): the App's config with the value on trial,
    the watcher that ends the trial past its time, a notice when one ended at start."""
    from trial import Trial

    trial = Trial(state_dir + "/trial")
    trial.app = app
    trial.main_inbox = app.inbox.path
    app.cfg = trial.apply(app.cfg)
    if trial.record is None and trial.settle(app.inbox):   # a move cut short by a power cut
        app.inbox = app.dispatcher.inbox = type(app.inbox)(trial.main_inbox)
    path = trial.inbox_path(app.inbox.path)
    if path != app.inbox.path:          # a head-end on trial numbers its work from 1
        app.inbox = app.dispatcher.inbox = type(app.inbox)(path)
    if trial.reverted:
        app.outbox.offer("notice", {"what": trial.reverted, "count": 1})
    if trial.record is not None:
        app.watchers.append(trial)
    return trial


def make_rekey(app, state_dir, key):
    """Key rotation (rekey.py): its record, and the commit that saves the new key in
    config.json (console-only, so not through set_config) and starts using it."""
    from binascii import hexlify

    from config import save
    from rekey import Rekey

    def commit(new):
        cfg = dict(app.cfg)
        cfg["device_key"] = hexlify(new).decode()
        if app.config_path:
            save(app.config_path, cfg)
        app.cfg = cfg
        app.dispatcher.key = new
        if app.comms is not None:
            app.comms.key = new

    rk = Rekey(state_dir + "/rekey", app.cfg["device_id"], commit)
    rk.settled(key)
    app.dispatcher.rekey = rk
    if app.comms is not None:
        app.comms.rekey = rk
    return rk


def make_pulses(app, cfg, state_dir):
    """The pulse counter (pulses.py) for cfg's pulse_pins, with the board's pulse inputs
    (boards/pulse_input.py, or the board's own pulse_inputs(), e.g. a simulated one)."""
    from pulses import PulseCounter

    make = getattr(app.board, "pulse_inputs", None)
    if make is None:
        from boards.pulse_input import make_inputs as make
    return PulseCounter(make(cfg["pulse_pins"], cfg["pulse_debounce_ms"] * 1000), cfg,
                        state_dir + "/pulses")


def make_capture(app, cfg):
    """The waveform capture (capture.py) for cfg, checked against RAM; an App watcher."""
    from capture import Capture

    spc = app.board.sample_rate / cfg["frequency"]
    capture = Capture(cfg, app.board, spc, (app.rate_num, app.rate_den))
    app.watchers.append(capture)
    return capture


def _xmpp(app, cfg, key):
    from httpc import tls_context
    from xmpp_comms import XmppComms

    for name in ("xmpp_domain", "xmpp_component", "xmpp_scram"):
        if not cfg[name]:
            raise ValueError("transport xmpp needs %s (docs/xmpp.md)" % name)
    try:
        ctx = tls_context(cfg["ca_file"])   # Direct TLS only: never in clear
    except OSError:
        raise ValueError("ca_file %r cannot be read: XMPP needs the server's CA to pin"
                         % (cfg["ca_file"],))
    return XmppComms(cfg["device_id"], key, cfg["xmpp_host"], cfg["xmpp_port"],
                     cfg["xmpp_domain"], cfg["xmpp_component"], cfg["xmpp_scram"],
                     app.outbox, app.inbox, app.dispatcher, app.clock, ssl=ctx,
                     presence=app.presence)


def exists(path):
    try:
        os.stat(path)
        return True
    except OSError:
        return False


def update_in_flight(base, state_dir):
    """Whether the updater has work at start: a firmware other than the factory one chosen
    by fwboot (probation, rollback, a pointer error), a pointer, or an update job on flash."""
    import fwboot

    sel = fwboot.selected
    if sel and (sel["version"] or sel["error"] or sel["rolled_back"]):
        return True
    return exists(state_dir + "/update.json") or exists(fwboot.pointer_path(base))


def parent_dir(path):
    """The flash root above the state directory ("" for "state", as on a board)."""
    k = path.rstrip("/").rfind("/")
    return "" if k < 0 else (path[:k] or "/")
