"""A NATS cluster with JetStream and its MQTT gateway, for the MQTT transport at scale (issue
19, item 3; docs/scaling.md "A NATS cluster"): the nodes' configs, users and permissions
generated from the head-end's device registry, as broker.py does for mosquitto.

`write(db, directory, nodes=...)` produces, in `directory`:

    node<i>.conf  one per node: its name, client port (the bridges' nats://), cluster port
                  (routes to every other node), MQTT listener (meters; TLS with a cert and
                  key), JetStream in node<i>/ (MQTT sessions, QoS 1 messages and retained
                  messages are JetStream streams with 3 replicas: one node can die), pid file
    users.conf    (0600, included by every node) the account `BC`: every meter (user = its
                  id, password = hex(HMAC-SHA256(key, "mqtt-password")), as for mosquitto)
                  with the protocol's ACL as NATS permissions, MQTT connections only, and
                  the bridge's user
    nats.json     (0600) what `serve --nats-dir` connects with: the nodes' nats:// URLs,
                  user and the bridge's random password (kept when written again), and
                  each node's MQTT address

MQTT topics become NATS subjects with `/` -> `.` (bc/<id>/up is bc.<id>.up). NATS refuses
a `.` inside an MQTT topic level, so a device id with a `.` cannot use the cluster: it is
left out of users.conf and reported in the summary. Run `write` again after adding meters;
it sends SIGHUP to the running nodes of that directory (their pid files), which reread
users.conf. A key rotation (key_rotation.py) rewrites users.conf alone (rewrite_users) when
it switches a meter's key, and waits until every running node has reloaded it; both hold
users_lock, so neither writes over the other's password."""

import json
import os
import re
import signal
import time
import urllib.request
from datetime import datetime
from pathlib import Path

from . import broker, devices, signing
from .exposure import is_loopback, write_private
from .ids import check_device_id

ACCOUNT = "BC"
USERS, INFO = "users.conf", "nats.json"
DEFAULT_PORTS = {"client": 4222, "cluster": 6222, "mqtt": 1883, "http": 8222}
# NATS needs these for a meter's QoS 1 subscription: the server delivers the session's
# JetStream consumer on $MQTT.sub.<random>; MQTT clients cannot name $MQTT topics themselves
MQTT_DELIVERY = "$MQTT.sub.>"
RELOAD_WAIT_S = 10.0    # how long a key rotation waits for every running node to reload


class ReloadError(RuntimeError):
    """A running node did not take the new users.conf in time (one line)."""


def node_conf(name):
    return "%s.conf" % name


def plan(hosts, ports=None):
    """[{"name", "host", "client", "cluster", "mqtt", "http"}] for nodes on `hosts` (one
    per entry). ports: base ports by kind (DEFAULT_PORTS), or for each kind a list with one
    port per node; nodes sharing a host get consecutive ports from a base port."""
    ports = dict(DEFAULT_PORTS, **{k: v for k, v in (ports or {}).items() if v})
    base = {k: v for k, v in ports.items() if not isinstance(v, list)}
    given = {k: v for k, v in ports.items() if isinstance(v, list)}
    for kind, values in given.items():
        if len(values) != len(hosts):
            raise ValueError("%d %s ports for %d nodes" % (len(values), kind, len(hosts)))
    seen = {}
    out = []
    for i, host in enumerate(hosts):
        k = seen.get(host, 0)
        seen[host] = k + 1
        node = {p: base[p] + k for p in base}
        node.update({p: values[i] for p, values in given.items()})
        out.append(dict(node, name="node%d" % (i + 1), host=host))
    return out


def _q(text):
    return json.dumps(text)       # a quoted NATS config string (JSON's escapes are NATS's)


def meter_permissions(device):
    """docs/protocol.md "ACL" as NATS subjects (bc/<id>/up -> bc.<id>.up)."""
    return {"publish": {"allow": ["bc.%s.up" % device, "bc.%s.presence" % device,
                                  "bc.%s.state" % device,
                                  "homeassistant.sensor.%s.>" % device]},
            "subscribe": {"allow": ["bc.%s.down" % device, "homeassistant.status",
                                    MQTT_DELIVERY]}}


def users_text(meters, bridge_user, bridge_password):
    """users.conf: meters is [(id, password)]."""
    users = ["    {user: %s, password: %s}" % (_q(bridge_user), _q(bridge_password))]
    for device, password in meters:
        # MQTT only: a meter's login cannot be used on a node's NATS client port
        users.append("    {user: %s, password: %s, allowed_connection_types: [\"MQTT\"], "
                     "permissions: %s}" % (_q(device), _q(password),
                                           json.dumps(meter_permissions(device))))
    return "\n".join([
        "# backchannel NATS users, written by `backchannel nats-config` from the head-end's",
        "# devices (docs/scaling.md). Regenerate, do not edit.",
        "accounts {",
        "  %s {" % ACCOUNT,
        "    jetstream: enabled",
        "    users: [",
        ",\n".join(users),
        "    ]",
        "  }",
        "}",
    ]) + "\n"


def node_text(directory, node, nodes, certfile=None, keyfile=None, store_max="1G"):
    d = Path(directory).resolve()
    routes = ", ".join("nats-route://%s:%d" % (n["host"], n["cluster"]) for n in nodes
                       if n["name"] != node["name"])
    mqtt = ["mqtt {", "  listen: %s" % _q("%s:%d" % (node["host"], node["mqtt"])),
            # sessions, QoS 1 messages and retained messages: 3 copies (one node can die)
            "  stream_replicas: %d" % min(3, len(nodes))]
    if certfile:
        mqtt += ["  tls {", "    cert_file: %s" % _q(str(Path(certfile).resolve())),
                 "    key_file: %s" % _q(str(Path(keyfile).resolve())), "  }"]
    mqtt.append("}")
    return "\n".join([
        "# backchannel NATS node, written by `backchannel nats-config`. Run it with",
        "#   nats-server -c %s   (or `backchannel nats --dir %s --node %s`)"
        % (d / node_conf(node["name"]), d, node["name"]),
        "server_name: %s" % _q(node["name"]),
        "listen: %s" % _q("%s:%d" % (node["host"], node["client"])),
        "http: %s" % _q("%s:%d" % (node["host"], node["http"])),     # /healthz
        "pid_file: %s" % _q(str(d / ("%s.pid" % node["name"]))),
        "jetstream {",
        "  store_dir: %s" % _q(str(d / node["name"])),
        "  max_memory_store: 256M",
        "  max_file_store: %s" % store_max,
        "}",
        "cluster {",
        "  name: backchannel",
        "  listen: %s" % _q("%s:%d" % (node["host"], node["cluster"])),
        "  routes: [%s]" % routes,
        "}",
        *mqtt,
        "include ./%s" % USERS,
    ]) + "\n"


def info(directory):
    """{"servers", "user", "password", "mqtt"} from DIR/nats.json."""
    path = Path(directory) / INFO
    try:
        data = json.loads(path.read_text())
    except OSError as e:
        raise ValueError("%s: %s (run `backchannel nats-config` first)"
                         % (path, e.strerror or e)) from None
    except ValueError as e:
        raise ValueError("%s: not valid JSON: %s" % (path, e)) from None
    if not (isinstance(data, dict) and isinstance(data.get("servers"), list)
            and data["servers"] and isinstance(data.get("user"), str)
            and isinstance(data.get("password"), str)):
        raise ValueError("%s: needs servers, user and password" % path)
    return data


def write(db, directory, hosts=("127.0.0.1",) * 3, ports=None, certfile=None, keyfile=None,
          bridge_user=broker.BRIDGE_USER, insecure_plain=False, reload=True):
    """Write the cluster's files for every registered device; returns a summary dict."""
    hosts = list(hosts)
    if len(hosts) < 3:
        raise ValueError("a JetStream cluster needs 3 nodes or more (with 2, one node's "
                         "death loses the quorum), got %d" % len(hosts))
    if bool(certfile) != bool(keyfile):
        raise ValueError("a TLS listener needs both a certfile and a keyfile")
    for path in (certfile, keyfile):
        if path and not os.path.isfile(path):
            raise ValueError("%s: no such file" % path)
    if not certfile and not insecure_plain and not all(is_loopback(h) for h in hosts):
        raise ValueError("plain MQTT (passwords in clear) on a non-loopback address: give "
                         "--certfile/--keyfile, or --insecure-plain on a closed network")
    nodes = plan(hosts, ports)
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    os.chmod(d, 0o700)
    try:
        old = info(d)
    except ValueError:
        old = {}
    password = old.get("password") if old.get("user") == bridge_user else None
    password = password or signing.new_token()
    with users_lock(d):
        meters, skipped = _meters(db, bridge_user)
        write_private(d / USERS, users_text(meters, bridge_user, password))
    for node in nodes:
        (d / node["name"]).mkdir(exist_ok=True)
        (d / node_conf(node["name"])).write_text(node_text(d, node, nodes, certfile, keyfile))
    write_private(d / INFO, json.dumps({
        "servers": ["nats://%s:%d" % (n["host"], n["client"]) for n in nodes],
        "user": bridge_user, "password": password,
        "nodes": nodes, "mqtt": [[n["host"], n["mqtt"]] for n in nodes],
        "tls": bool(certfile)}, indent=1) + "\n")
    reloaded = reload_running(d, nodes) if reload else []
    return {"dir": str(d.resolve()), "nodes": [n["name"] for n in nodes],
            "meters": len(meters), "skipped": skipped, "bridge_user": bridge_user,
            "servers": ["nats://%s:%d" % (n["host"], n["client"]) for n in nodes],
            "reloaded": reloaded}


def _meters(db, bridge_user, keys=None):
    """([(id, password)], [ids left out]) from the registry; `keys` ({device: key hex})
    in place of those devices' stored keys."""
    keys = keys or {}
    meters, skipped = [], []
    for r in db.all("SELECT id, key FROM devices ORDER BY id"):
        try:
            check_device_id(r["id"])
        except ValueError as e:
            raise ValueError("registered device refused for the cluster: %s" % e) from None
        if r["id"] == bridge_user:
            raise ValueError("a device is named %s, the bridge's user name" % bridge_user)
        if "." in r["id"]:      # NATS: '.' is not allowed in an MQTT topic level
            skipped.append(r["id"])
            continue
        meters.append((r["id"], broker.meter_password(keys.get(r["id"])
                                                      or devices.key_of(db, r))))
    return meters, skipped


def users_lock(directory):
    """Held while DIR/users.conf is written from the registry (write), and by a key rotation
    from the password it writes until its key change has committed, so a `nats-config` run
    in between cannot put the old key's password back (the same lock file as broker.py's)."""
    return broker.passwd_lock(directory)


def rewrite_users(db, directory, keys=None, wait=RELOAD_WAIT_S):
    """Write DIR/users.conf again from the registry, with `keys` ({device: key hex}) in
    place of those devices' stored keys, SIGHUP the directory's running nodes and wait until
    each has reloaded it (a node that is down reads it when it starts). The caller holds
    users_lock. The bridge keeps its password (nats.json). ValueError or ReloadError if it
    cannot; the pids reloaded."""
    d = Path(directory)
    cfg = info(d)
    if not isinstance(cfg.get("nodes"), list):
        raise ValueError("%s: no nodes (run `backchannel nats-config` again)" % (d / INFO))
    meters, _ = _meters(db, cfg["user"], keys)
    written = time.time()
    write_private(d / USERS, users_text(meters, cfg["user"], cfg["password"]))
    return reload_running(d, cfg["nodes"], wait=wait, since=written)


def running_pid(directory, name):
    """The pid of a nats-server running with this node's pid file, or None."""
    try:
        pid = int((Path(directory) / ("%s.pid" % name)).read_text().strip())
        comm = Path("/proc/%d/comm" % pid).read_text().strip()
    except (OSError, ValueError):
        return None
    return pid if comm == "nats-server" else None


def reload_running(directory, nodes, wait=None, since=None):
    """SIGHUP the directory's running nodes (they reread users.conf); their pids. With
    `wait` (seconds): until each running node says (its /varz config_load_time) that it
    loaded its config at `since` (a Unix time) or later, else ReloadError."""
    pids = {}
    for node in nodes:
        pid = running_pid(directory, node["name"])
        if pid is not None:
            os.kill(pid, signal.SIGHUP)
            pids[node["name"]] = (pid, node)
    if wait is not None:
        deadline = time.monotonic() + wait
        for name, (pid, node) in pids.items():
            while not _loaded_since(node, since):
                if running_pid(directory, name) != pid:
                    break       # it stopped: it reads the file when it starts again
                if time.monotonic() > deadline:
                    raise ReloadError("nats-server %s (pid %d) did not reload %s within %g s "
                                      "(its log says why)" % (name, pid, USERS, wait))
                time.sleep(0.05)
    return [pid for pid, _ in pids.values()]


def _loaded_since(node, since):
    """The node's config was (re)loaded at `since` or later, by its monitoring port."""
    url = "http://%s:%d/varz" % (node["host"], node["http"])
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            loaded = load_time(json.loads(r.read()).get("config_load_time", ""))
    except (OSError, ValueError, AttributeError):
        return False
    return loaded is not None and loaded >= since


def load_time(text):
    """A Unix time from nats-server's RFC 3339 time (nanoseconds, Z or an offset), or None."""
    m = re.fullmatch(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(\.\d+)?(Z|[+-]\d\d:\d\d)", text)
    if not m:
        return None
    zone = "+00:00" if m.group(3) == "Z" else m.group(3)
    t = datetime.fromisoformat(m.group(1) + zone).timestamp()
    return t + float("0" + m.group(2)) if m.group(2) else t
