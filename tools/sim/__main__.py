#!/usr/bin/env python3
"""`make sim`: run the firmware on the MicroPython unix port with the simulated board,
connected to a local head-end, and show live readings, power-quality events and the
head-end's view until Ctrl-C.

It keeps to itself (sim/guard.py): one copy per state directory, the same head-end port on
every run, and the head-end, broker and meter it started end with it, whether by Ctrl-C,
SIGTERM, a closed terminal, or one of them dying (then it says so and exits 1)."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import click
import httpx
from rich.table import Table

from headend import exposure
from lab import pki, runner
from sim import METER_MAIN, METERING_MAIN, SCENARIOS, guard, screen

ROOT = runner.ROOT
HEADEND = [sys.executable, "-m", "headend"]     # tools/backchannel, under this interpreter
STATE = ROOT / ".sim"
DEVICE = "sim-meter-1"
GROUP = "sim"                                   # the README's `update sim --version ...`
PORT = 8580


def backchannel(state, *args):
    p = subprocess.run([*HEADEND, *args, "--db", str(state / "hub.db")],
                       capture_output=True, text=True)
    if p.returncode:
        raise click.ClickException("backchannel %s failed: %s" % (args[0], p.stderr.strip()))
    return p.stdout.strip()


def site_setup(state, update_key=None):
    """A local head-end database with one meter and one operator token (made once), and the
    release public key the meter verifies updates with (kept until another is given)."""
    info_path = state / "sim.json"
    if info_path.exists():
        info = json.loads(info_path.read_text())
    else:
        info = {"key": backchannel(state, "add-device", DEVICE).split()[-1],
                "token": backchannel(state, "add-token", "sim-operator", "--role",
                                     "operator").split()[-1]}
    if update_key is not None:
        info["update_key"] = read_update_key(update_key)
    exposure.write_private(info_path, json.dumps(info))     # the meter's key and a token
    return info


def utility_token(state, info):
    """A utility token for the sim's own tariff (made once, kept in sim.json)."""
    if "utility_token" not in info:
        info["utility_token"] = backchannel(state, "add-token", "sim-utility", "--role",
                                            "utility").split()[-1]
        exposure.write_private(state / "sim.json", json.dumps(info))
    return info["utility_token"]


def read_update_key(path):
    """The 130-hex public key of `release keygen`'s release-key.pub, checked here so that a
    wrong file is a clear error, not a meter that refuses to start."""
    try:
        text = Path(path).read_text().strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise click.UsageError("UPDATE_KEY %s: %s" % (
            path, getattr(exc, "strerror", None) or exc)) from None
    if len(text) != 130 or not text.startswith("04") or any(
            c not in "0123456789abcdefABCDEF" for c in text):
        raise click.UsageError("UPDATE_KEY %s is not a release public key (130 hex digits "
                               "starting 04: the release-key.pub of `backchannel release "
                               "keygen`)" % path)
    return text.lower()


def local_ca(state):
    """A local CA and a certificate for 127.0.0.1 (made once): the meter pins the CA."""
    pki.init(str(state / "pki"), ips=["127.0.0.1"])
    return {k: str(v) for k, v in pki.paths(str(state / "pki")).items()}


def meter_config(info, certs, scenario):
    """The meter's config.json, rewritten on every start: the scenario's `config` (e.g. 120 V
    / 60 Hz for swell.json) as `--offline` applies it, and the release key if one was given."""
    cfg = dict(scenario.get("config") or {})
    cfg.update(device_id=DEVICE, device_key=info["key"], report_s=5, ca_file=certs["ca_der"])
    if info.get("update_key"):
        cfg["update_key"] = info["update_key"]
    return cfg


def start_headend(children, state, port, certs, extra=()):
    log_path = state / "headend.log"
    cmd = [*HEADEND, "serve", "--db", str(state / "hub.db"), "--host", "127.0.0.1",
           "--port", str(port), "--certfile", certs["server_pem"],
           "--keyfile", certs["server_key"], *extra]
    with open(log_path, "ab") as log:
        proc = children.start("head-end", cmd, signal.SIGTERM, log=log_path, stdout=log,
                              stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    url = "https://127.0.0.1:%d" % port
    for _ in range(300):
        if proc.poll() is not None:
            raise click.ClickException("the head-end stopped; see %s" % log_path)
        try:
            if httpx.get(url + "/v1/health", timeout=1,
                         verify=certs["ca_pem"]).status_code == 200:
                return url
        except httpx.HTTPError:
            time.sleep(0.1)
    raise click.ClickException("the head-end did not answer; see %s" % log_path)


def ensure_group(api):
    """Group `sim` holds the sim meter, so `backchannel update sim ...` works as printed."""
    if api.get("/v1/groups/%s" % GROUP).status_code == 404:
        api.post("/v1/groups", json={"name": GROUP, "members": [DEVICE]})


def write_env(state, url, token, ca):
    """STATE/env: `. .sim/env` points the CLI at this head-end (mode 0600: the token)."""
    path = state / "env"
    exposure.write_private(path, "export BACKCHANNEL_URL=%s\nexport BACKCHANNEL_TOKEN=%s\n"
                           "export BACKCHANNEL_CACERT=%s\n" % (url, token, ca))
    return path


def headend_table(api, url, token, ca):
    t = Table(title="head-end %s" % url, min_width=60)
    t.add_column("what")
    t.add_column("value")
    try:
        pres = {p["device"]: p for p in api.get("/v1/presence").json()}.get(DEVICE, {})
        stored = len(api.get("/v1/devices/%s/readings?limit=1000" % DEVICE).json())
        work = api.get("/v1/devices/%s/work?limit=3" % DEVICE).json()
    except (httpx.HTTPError, ValueError) as exc:
        t.add_row("error", str(exc))
        return t
    t.add_row("presence", "%s %s" % (pres.get("state", "?"), pres.get("note") or ""))
    t.add_row("readings stored", str(stored))
    for w in work:
        t.add_row("work %s" % w["id"], "%s -> %s" % (w["op"], w["status"]))
    t.add_row("try", try_command(url, token, ca))
    t.add_row("dashboard", "%s/ui/ (log in with the token above)" % url)
    return t


def try_command(url, token, ca, device=DEVICE):
    """The command `make sim` offers: it works pasted into any new shell in the repository
    (tools/backchannel runs under .venv itself; host_tests/test_sim_command.py)."""
    return ("BACKCHANNEL_URL=%s BACKCHANNEL_TOKEN=%s BACKCHANNEL_CACERT=%s "
            "tools/backchannel send %s read --wait" % (url, token, ca, device))


def ensure_mosquitto():
    """Debian's mosquitto, installed on first use when running as root."""
    from headend import broker

    try:
        return broker.find("mosquitto")
    except Exception:
        pass
    if os.geteuid() != 0:
        raise click.ClickException("TRANSPORT=mqtt needs Debian's mosquitto: "
                                   "sudo apt-get install mosquitto")
    click.echo("installing mosquitto (apt-get) ...", err=True)
    for cmd in (["apt-get", "update", "-q"],
                ["apt-get", "install", "-y", "-q", "--no-install-recommends", "mosquitto"]):
        if subprocess.run(cmd, stdout=subprocess.DEVNULL).returncode:
            raise click.ClickException("could not install mosquitto: %s failed" % " ".join(cmd))
    subprocess.run(["pkill", "-x", "mosquitto"], stderr=subprocess.DEVNULL)  # the distro's own
    return broker.find("mosquitto")


def start_broker(children, state, certs):
    """The broker for this site: loopback listener for the head-end's bridge, TLS listener
    (local CA) for the meter, per-meter credentials and ACLs from the head-end database.
    Started here rather than by broker.start, so that it is one of `children`."""
    from headend import broker
    from headend.db import Database

    mosquitto = ensure_mosquitto()
    d = state / "broker"
    plain, tls = _any_port(8583), _any_port(8883)   # private to the sim: any port will do
    broker.write(Database(str(state / "hub.db")), str(d), port=plain, tls_port=tls,
                 certfile=certs["server_pem"], keyfile=certs["server_key"],
                 cafile=certs["ca_pem"], reload=False)
    log_path = d / "mosquitto.log"
    with open(log_path, "ab") as log:
        proc = children.start("broker", broker.command(str(d), mosquitto), signal.SIGTERM,
                              log=log_path, stdout=log, stderr=subprocess.STDOUT,
                              stdin=subprocess.DEVNULL)
    for _ in range(200):
        if proc.poll() is not None:
            raise click.ClickException("mosquitto stopped; see %s" % log_path)
        try:
            socket.create_connection(("127.0.0.1", plain), timeout=0.5).close()
            return tls
        except OSError:
            time.sleep(0.05)
    raise click.ClickException("mosquitto did not listen; see %s" % log_path)


def _any_port(preferred):
    """A port private to the sim (the meter's config follows it): the preferred one, else
    any free one."""
    for port in (preferred, 0):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
                return s.getsockname()[1]
            except OSError:
                continue
    raise click.ClickException("no free TCP port on 127.0.0.1")


def load_scenario(path):
    if not Path(path).is_file():
        raise click.UsageError("no such scenario file: %s (see tools/sim/scenarios/)" % path)
    try:
        doc = json.loads(Path(path).read_text())
    except (ValueError, UnicodeDecodeError) as exc:
        raise click.UsageError("scenario %s is not valid JSON: %s" % (path, exc)) from None
    if not isinstance(doc, dict) or not isinstance(doc.get("config", {}), dict):
        raise click.UsageError("scenario %s: expected a JSON object (with an optional "
                               "`config` object)" % path)
    return doc


@click.command()
@click.argument("scenario", type=click.Path(dir_okay=False), default=str(SCENARIOS / "normal.json"))
@click.option("--seconds", type=click.FloatRange(0, min_open=True), default=None,
              help="Stop after this much signal.")
@click.option("--offline", is_flag=True, help="Metering only: no head-end, no back channel.")
@click.option("--port", type=click.IntRange(1, 65535), default=PORT, show_default=True,
              help="Head-end port (`make sim SIM_PORT=...`); never silently another one.")
@click.option("--transport", type=click.Choice(["http", "mqtt", "email", "xmpp"]), default="http",
              show_default=True, help="How the meter reaches the head-end.")
@click.option("--state", "state_dir", type=click.Path(file_okay=False), default=str(STATE),
              show_default=True, help="Where the database, the meter's flash, the CA and the "
                                      "logs live (one running copy per directory).")
@click.option("--update-key", type=click.Path(dir_okay=False),
              help="release-key.pub: the meter takes signed updates by this key from now on "
                   "(`make sim UPDATE_KEY=...`; kept across restarts).")
def main(scenario, seconds, offline, port, transport, state_dir, update_key):
    """Run the firmware on the MicroPython unix port with the simulated board (SCENARIO, a
    JSON file in tools/sim/scenarios/), connected to a local head-end, and show it live."""
    guard.stop_signals(_interrupt)
    doc = load_scenario(scenario)
    children = guard.Children()
    lock = None
    try:
        if offline:
            args = [scenario, "--realtime"] + (["--seconds", str(seconds)] if seconds else [])
            cmd, env = runner.command("micropython", METERING_MAIN, *args)
            proc = children.start("meter", cmd, signal.SIGINT, env=env,
                                  stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True)
            return screen.show(proc, None, children=children)
        state = Path(state_dir).resolve()
        state.mkdir(parents=True, exist_ok=True)
        lock = guard.Lock(state).acquire()
        guard.check_port(port)
        run_site(children, state, doc, scenario, seconds, port, transport, update_key)
    except KeyboardInterrupt:
        pass
    finally:
        guard.ignore_signals()
        children.stop_all()
        if lock is not None:
            lock.release()


def run_site(children, state, doc, scenario, seconds, port, transport, update_key):
    info = site_setup(state, update_key)
    certs = local_ca(state)
    meter_cfg = meter_config(info, certs, doc)
    extra = []
    if transport == "mqtt":
        tls_port = start_broker(children, state, certs)
        extra = ["--mqtt-dir", str(state / "broker")]
        meter_cfg.update(transport="mqtt", mqtt_host="127.0.0.1", mqtt_port=tls_port,
                         mqtt_tls=True, ha_discovery=True)
    if transport == "email":
        from sim import mail_site

        extra, mail_cfg = mail_site.start(children, state, certs, DEVICE, _any_port)
        meter_cfg.update(mail_cfg)
    if transport == "xmpp":
        from sim import im_site

        xmpp_cfg, headend_cfg = im_site.start_im(children, state, DEVICE, _any_port)
        meter_cfg.update(xmpp_cfg)
        extra = ["--config", str(headend_cfg)]
    url = start_headend(children, state, port, certs, extra)
    if transport == "http":
        meter_cfg["server_url"] = url
    api = httpx.Client(base_url=url, headers={"Authorization": "Bearer " + info["token"]},
                       timeout=5, verify=certs["ca_pem"])
    ensure_group(api)
    env_path = write_env(state, url, info["token"], certs["ca_pem"])
    exposure.write_private(state / "meter.json", json.dumps(meter_cfg))   # the device key
    cmd, env = runner.command("micropython", METER_MAIN, str(state / "meter.json"),
                              str(state / "meter-state"), scenario, "--print")
    # its stderr to a log, its stdin from nowhere: a closed terminal must not stop the meter
    # (EIO on a write) before `make sim` can stop it cleanly
    log_path = state / "meter.log"
    with open(log_path, "ab") as log:
        meter = children.start("meter", cmd, signal.SIGINT, log=log_path, env=env,
                               stdout=subprocess.PIPE, stderr=log, stdin=subprocess.DEVNULL,
                               text=True)
    if doc.get("tariff_demo"):   # tariff_day.json: a utility token sets the day's tariff
        from sim import tariff_demo

        util = httpx.Client(base_url=url, timeout=5, verify=certs["ca_pem"], headers={
            "Authorization": "Bearer " + utility_token(state, info)})
        tariff_demo.send(util, DEVICE)
    click.echo("make sim: head-end %s (log %s), meter %s, update key %s; for the CLI: . %s"
               % (url, state / "headend.log", DEVICE,
                  "set" if info.get("update_key") else "none (UPDATE_KEY=...)",
                  _short(env_path)), err=True)
    screen.show(meter, lambda: headend_table(api, url, info["token"], certs["ca_pem"]),
                seconds, children)


def _short(path):
    rel = os.path.relpath(path)
    return str(path) if rel.startswith("..") else rel


def _interrupt(signum, frame):
    raise KeyboardInterrupt


if __name__ == "__main__":
    main()
