#!/usr/bin/env python3
"""`make sim`: run the firmware on the MicroPython unix port with the simulated board,
connected to a local head-end, and show live readings, power-quality events and the
head-end's view until Ctrl-C."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections import deque
from pathlib import Path

import click
import httpx
from rich.console import Group
from rich.live import Live
from rich.table import Table

from headend import exposure
from lab import pki, runner
from sim import METER_MAIN, METERING_MAIN, SCENARIOS

ROOT = runner.ROOT
HEADEND = [sys.executable, "-m", "headend"]     # tools/backchannel, under this interpreter


def _when(t):
    """Meter time: wall-clock time of day when it is Unix time, else seconds of signal."""
    if t > 1e9:
        return time.strftime("%H:%M:%S", time.localtime(t)) + ("%.3f" % (t % 1))[1:]
    return "%.3f s" % t


def _fmt(value, digits):
    return "-" if value is None else "%.*f" % (digits, value)


def reading_table(r):
    t = Table(title="meter at %s" % _when(r["t"]), min_width=60)
    t.add_column("quantity")
    t.add_column("value", justify="right")
    t.add_column("min / max (200 ms)", justify="right")
    rows = [
        ("Vrms (V)", r["vrms"], 2, r.get("vmin"), r.get("vmax")),
        ("Irms (A)", r["irms"], 3, r.get("imin"), r.get("imax")),
        ("P (W)", r["p"], 1, r.get("pmin"), r.get("pmax")),
        ("Q (var)", r["q"], 1, None, None),
        ("S (VA)", r["s"], 1, None, None),
        ("PF", r["pf"], 3, None, None),
        ("f (Hz)", r["f"], 3, None, None),
    ]
    for name, value, digits, low, high in rows:
        span = "" if low is None else "%s / %s" % (_fmt(low, digits), _fmt(high, digits))
        t.add_row(name, _fmt(value, digits), span)
    for key in ("import_wh", "export_wh", "import_varh", "export_varh"):
        t.add_row(key.replace("_", " "), "%.3f" % r[key], "")
    t.add_row("15-min demand (W)", _fmt(r.get("demand_w"), 1), "")
    return t


def events_table(events):
    t = Table(title="power-quality events (IEC 61000-4-30)", min_width=60)
    for col in ("kind", "start", "duration (ms)", "residual/max (V)", "% declared", "IEEE 1159"):
        t.add_column(col)
    for e in events:
        if e["type"] == "event_start":
            t.add_row(e["kind"], _when(e["start_s"]), "in progress", "", "", "")
        else:
            t.add_row(e["kind"], _when(e["start_s"]), "%.0f" % e["duration_ms"],
                      "%.1f" % e["residual_v"], "%.1f" % e["extreme_pct"], e["category"])
    return t


STATE = ROOT / ".sim"
DEVICE = "sim-meter-1"


def backchannel(*args):
    p = subprocess.run([*HEADEND, *args],
                       capture_output=True, text=True)
    if p.returncode:
        raise click.ClickException("backchannel %s failed: %s" % (args[0], p.stderr.strip()))
    return p.stdout.strip()


def free_port(preferred):
    for port in (preferred, 0):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
                return s.getsockname()[1]
            except OSError:
                continue
    raise click.ClickException("no free TCP port on 127.0.0.1")


def site_setup():
    """A local head-end database with one meter and one operator token (made once)."""
    STATE.mkdir(exist_ok=True)
    info_path = STATE / "sim.json"
    if info_path.exists():
        return json.loads(info_path.read_text())
    db = str(STATE / "hub.db")
    info = {"key": backchannel("add-device", DEVICE, "--db", db).split()[-1],
            "token": backchannel("add-token", "sim-operator", "--role", "operator", "--db", db)
            .split()[-1]}
    exposure.write_private(info_path, json.dumps(info))     # the meter's key and a token
    return info


def local_ca():
    """A local CA and a certificate for 127.0.0.1 (made once): the meter pins the CA."""
    pki.init(str(STATE / "pki"), ips=["127.0.0.1"])
    return {k: str(v) for k, v in pki.paths(str(STATE / "pki")).items()}


def start_headend(port, log, certs, extra=()):
    cmd = [*HEADEND, "serve", "--db",
           str(STATE / "hub.db"), "--host", "127.0.0.1", "--port", str(port),
           "--certfile", certs["server_pem"], "--keyfile", certs["server_key"], *extra]
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    url = "https://127.0.0.1:%d" % port
    for _ in range(200):
        if proc.poll() is not None:
            raise click.ClickException("the head-end stopped; see %s" % log.name)
        try:
            if httpx.get(url + "/v1/health", timeout=1,
                         verify=certs["ca_pem"]).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            time.sleep(0.1)
    proc.terminate()
    raise click.ClickException("the head-end did not answer; see %s" % log.name)


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


def start_broker(certs):
    """The broker for this site: loopback listener for the head-end's bridge, TLS listener
    (local CA) for the meter, per-meter credentials and ACLs from the head-end database."""
    from headend import broker
    from headend.db import Database

    ensure_mosquitto()
    d = STATE / "broker"
    plain, tls = free_port(8583), free_port(8883)
    broker.write(Database(str(STATE / "hub.db")), str(d), port=plain, tls_port=tls,
                 certfile=certs["server_pem"], keyfile=certs["server_key"],
                 cafile=certs["ca_pem"], reload=False)
    return broker.start(str(d)), tls


@click.command()
@click.argument("scenario", type=click.Path(dir_okay=False), default=str(SCENARIOS / "normal.json"))
@click.option("--seconds", type=float, default=None, help="Stop after this much signal.")
@click.option("--offline", is_flag=True, help="Metering only: no head-end, no back channel.")
@click.option("--port", type=int, default=8580, show_default=True, help="Head-end port.")
@click.option("--transport", type=click.Choice(["http", "mqtt"]), default="http",
              show_default=True, help="How the meter reaches the head-end.")
def main(scenario, seconds, offline, port, transport):
    """Run the firmware on the MicroPython unix port with the simulated board (SCENARIO, a
    JSON file in tools/sim/scenarios/), connected to a local head-end, and show it live."""
    # a closed terminal or `kill` stops everything this started, like Ctrl-C
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _interrupt)
    if not Path(scenario).is_file():
        raise click.UsageError("no such scenario file: %s (see tools/sim/scenarios/)" % scenario)
    try:
        json.loads(Path(scenario).read_text())
    except ValueError as exc:
        raise click.UsageError("scenario %s is not valid JSON: %s" % (scenario, exc)) from None
    if offline:
        args = [scenario, "--realtime"] + (["--seconds", str(seconds)] if seconds else [])
        cmd, env = runner.command("micropython", METERING_MAIN, *args)
        return show(subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, text=True), None)
    info = site_setup()
    certs = local_ca()
    log = open(STATE / "headend.log", "ab")
    meter_cfg = {"device_id": DEVICE, "device_key": info["key"], "report_s": 5,
                 "ca_file": certs["ca_der"]}
    broker_proc = None
    extra = []
    if transport == "mqtt":
        broker_proc, tls_port = start_broker(certs)
        extra = ["--mqtt-dir", str(STATE / "broker")]
        meter_cfg.update(transport="mqtt", mqtt_host="127.0.0.1", mqtt_port=tls_port,
                         mqtt_tls=True, ha_discovery=True)
    headend, url = start_headend(free_port(port), log, certs, extra)
    if transport == "http":
        meter_cfg["server_url"] = url
    (STATE / "meter.json").write_text(json.dumps(meter_cfg))
    cmd, env = runner.command("micropython", METER_MAIN, str(STATE / "meter.json"),
                                   str(STATE / "meter-state"), scenario, "--print")
    meter = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, text=True)
    api = httpx.Client(base_url=url, headers={"Authorization": "Bearer " + info["token"]},
                       timeout=5, verify=certs["ca_pem"])
    try:
        show(meter, lambda: headend_table(api, url, info["token"], certs["ca_pem"]), seconds)
    finally:
        headend.terminate()
        headend.wait()
        if broker_proc is not None:
            broker_proc.terminate()
            broker_proc.wait()


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def show(proc, extra, seconds=None):
    events = deque(maxlen=8)
    last = None
    live = sys.stdout.isatty()
    started = time.monotonic()
    try:
        with Live(auto_refresh=False, transient=False) if live else _NoLive() as screen:
            for line in proc.stdout:
                if seconds and time.monotonic() - started > seconds:
                    break
                try:
                    record = json.loads(line)
                except ValueError:  # MicroPython prints tracebacks on stdout
                    sys.stderr.write(line)
                    continue
                if not live:
                    print(line, end="", flush=True)
                    continue
                kind = record.get("type")
                if kind == "reading":
                    last = record
                elif kind == "event":
                    for e in [e for e in events if e["type"] == "event_start"]:
                        events.remove(e)
                    events.append(record)
                elif kind == "event_start":
                    events.append(record)
                else:
                    continue
                parts = ([reading_table(last)] if last else []) + [events_table(events)]
                if extra is not None and kind == "reading":
                    parts.append(extra())
                screen.update(Group(*parts), refresh=True)
    except (KeyboardInterrupt, BrokenPipeError):
        pass
    except OSError as exc:  # the terminal went away (EIO): nobody to tell
        if exc.errno != 5:
            raise
    finally:
        proc.terminate()
        proc.wait()


class _NoLive:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


if __name__ == "__main__":
    main()
