"""Mosquitto for the MQTT transport (docs/protocol.md "MQTT transport"): the broker's
config, password file and ACL generated from the head-end's device registry, the
head-end bridge's own credentials, and starting the broker.

`write(db, directory, ...)` produces, in `directory`:

    mosquitto.conf   a loopback listener (and a TLS listener with cert/key), no anonymous
                     clients, the password file and ACL below, persistence in data/ so QoS 1
                     sessions survive a broker restart, and the user name as the client id
                     (use_username_as_clientid): a meter's login cannot take over another
                     meter's session by connecting with its client id
    passwd           hashed by `mosquitto_passwd -U`: every meter (user name = its id,
                     password = hex(HMAC-SHA256(key, "mqtt-password"))) and the bridge user
    acl              per meter: write bc/<id>/up, bc/<id>/presence, bc/<id>/state,
                     homeassistant/sensor/<id>/#; read bc/<id>/down, homeassistant/status.
                     The bridge user: readwrite bc/#, read homeassistant/#
    bridge.json      (0600) what `serve --mqtt-dir` connects with: host, port, user and
                     the bridge's random password (kept when the files are written again)

Run `write` again (`backchannel broker-config`) after adding meters; it sends SIGHUP to a
running broker of that directory (its pid file), which rereads passwd and acl. A key rotation
(key_rotation.py) rewrites passwd alone (rewrite_passwd) when it switches a meter's key."""

import fcntl
import getpass
import json
import os
import shutil
import signal
import subprocess
import tempfile
from contextlib import contextmanager, suppress
from pathlib import Path

from . import daemon, devices, signing
from .exposure import is_loopback, write_private
from .ids import check_device_id

BRIDGE_USER = "backchannel-headend"
CONF, PASSWD, ACL, BRIDGE, PIDFILE, DATA = ("mosquitto.conf", "passwd", "acl", "bridge.json",
                                             "mosquitto.pid", "data")
LOCK = ".passwd.lock"


class BrokerError(RuntimeError):
    pass


def meter_password(key_hex):
    """A meter's broker password: hex(HMAC-SHA256(key, "mqtt-password")), so the meter
    needs no second secret."""
    return signing.sign(key_hex, b"mqtt-password")


def find(program, extra=("/usr/sbin", "/usr/local/sbin")):
    """Path of a mosquitto program (sbin is often not on a user's PATH)."""
    found = shutil.which(program)
    if found:
        return found
    for d in extra:
        path = os.path.join(d, program)
        if os.access(path, os.X_OK):
            return path
    raise BrokerError("%s not found (Debian: apt-get install mosquitto mosquitto-clients)"
                      % program)


def acl_text(meters, bridge_user=BRIDGE_USER):
    lines = ["# backchannel broker ACL, written by `backchannel broker-config` from the",
             "# head-end's devices (docs/protocol.md \"ACL\"). Regenerate, do not edit.",
             "", "user %s" % bridge_user, "topic readwrite bc/#", "topic read homeassistant/#"]
    for m in meters:
        lines += ["", "user %s" % m,
                  "topic write bc/%s/up" % m,
                  "topic write bc/%s/presence" % m,
                  "topic write bc/%s/state" % m,
                  "topic write homeassistant/sensor/%s/#" % m,
                  "topic read bc/%s/down" % m,
                  "topic read homeassistant/status"]
    return "\n".join(lines) + "\n"


def conf_text(directory, port=1883, bind="127.0.0.1", tls_port=None, tls_bind=None,
              certfile=None, keyfile=None, cafile=None, run_as=None):
    d = Path(directory).resolve()
    lines = [
        "# backchannel broker, written by `backchannel broker-config`. Run it with",
        "#   mosquitto -c %s   (or `backchannel broker --dir %s`)" % (d / CONF, d),
        "per_listener_settings false",
        "allow_anonymous false",
        "password_file %s" % (d / PASSWD),
        "acl_file %s" % (d / ACL),
        "persistence true",
        "persistence_location %s/" % (d / DATA),
        "autosave_interval 60",
        "set_tcp_nodelay true",  # else each small packet can wait ~40 ms for a delayed ACK
        "pid_file %s" % (d / PIDFILE),
        "log_dest stderr",
        "log_timestamp_format %Y-%m-%dT%H:%M:%S",
    ]
    if run_as:
        lines.append("user %s" % run_as)
    # Every listener: the session is the login's, whatever client id the client sends
    # (without it, meter-b logging in with client id "meter-a" cut meter-a off and, with a
    # clean session, threw away the work queued for it). A listener option: written before
    # any `listener` line it would open mosquitto's default listener, port 1883 on every
    # address.
    own_ids = "use_username_as_clientid true"
    lines += ["", "listener %d %s" % (port, bind), own_ids]
    if tls_port:
        lines += ["", "listener %d%s" % (tls_port, " %s" % tls_bind if tls_bind else ""),
                  own_ids,
                  "certfile %s" % Path(certfile).resolve(),
                  "keyfile %s" % Path(keyfile).resolve(),
                  "tls_version tlsv1.2"]
        if cafile:
            lines.append("cafile %s" % Path(cafile).resolve())
        lines.append("require_certificate false")
    return "\n".join(lines) + "\n"


def bridge_credentials(directory):
    """{"host", "port", "user", "password"} from DIR/bridge.json."""
    path = Path(directory) / BRIDGE
    try:
        data = json.loads(path.read_text())
    except OSError as e:
        raise ValueError("%s: %s (run `backchannel broker-config` first)"
                         % (path, e.strerror or e)) from None
    except ValueError as e:
        raise ValueError("%s: not valid JSON: %s" % (path, e)) from None
    if not (isinstance(data, dict) and all(isinstance(data.get(k), str) for k in
                                           ("host", "user", "password"))
            and isinstance(data.get("port"), int)):
        raise ValueError("%s: needs host, port, user and password" % path)
    return data


def write(db, directory, port=1883, bind="127.0.0.1", tls_port=None, tls_bind=None,
          certfile=None, keyfile=None, cafile=None, run_as=None, bridge_user=BRIDGE_USER,
          reload=True, insecure_plain=False):
    """Write the broker files for every registered device; returns a summary dict.
    The plain listener (no TLS: passwords in clear) binds a loopback address only, unless
    insecure_plain (a closed test network); meters elsewhere use the TLS listener."""
    if not is_loopback(bind) and not insecure_plain:
        raise ValueError("the plain listener must bind a loopback address, not %r: meters "
                         "elsewhere use the TLS listener (--certfile/--keyfile)" % bind)
    if bool(certfile) != bool(keyfile) or (tls_port and not certfile):
        raise ValueError("a TLS listener needs both a certfile and a keyfile")
    if certfile and not tls_port:
        tls_port = 8883
    if tls_port and tls_port == port:
        raise ValueError("the TLS port must differ from the loopback port")
    for path in (certfile, keyfile, cafile):
        if path and not os.path.isfile(path):
            raise ValueError("%s: no such file" % path)
    if run_as is None:
        run_as = getpass.getuser()      # mosquitto started as root would switch to `mosquitto`
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    (d / DATA).mkdir(exist_ok=True)
    rows = db.all("SELECT id, key FROM devices ORDER BY id")
    for r in rows:      # an id with `:` or a newline would add a line to passwd or acl
        try:
            check_device_id(r["id"])
        except ValueError as e:
            raise ValueError("registered device refused for the broker: %s" % e) from None
    if any(r["id"] == bridge_user for r in rows):
        raise ValueError("a device is named %s, the bridge's user name" % bridge_user)

    host = "127.0.0.1" if bind in ("0.0.0.0", "", "::") else bind
    try:
        old = bridge_credentials(d)
    except ValueError:
        old = {}
    password = old.get("password") if old.get("user") == bridge_user else None
    password = password or signing.new_token()
    write_private(d / BRIDGE, json.dumps({"host": host, "port": port, "user": bridge_user,
                                           "password": password}, indent=1) + "\n")

    with passwd_lock(d):
        _write_passwd(db, d, rows, bridge_user, password)
    write_private(d / ACL, acl_text([r["id"] for r in rows], bridge_user))
    (d / CONF).write_text(conf_text(d, port, bind, tls_port, tls_bind, certfile, keyfile,
                                    cafile, run_as))
    reloaded = reload_running(d) if reload else None
    return {"dir": str(d.resolve()), "conf": str((d / CONF).resolve()), "meters": len(rows),
            "bind": bind, "port": port, "tls_port": tls_port, "bridge_user": bridge_user,
            "reloaded": reloaded}


@contextmanager
def passwd_lock(directory):
    """Held while DIR/passwd is written from the registry, and by a key rotation from the
    password it writes until its key change has committed (key_rotation.promote), so a
    `broker-config` run in between cannot put the old key's password back."""
    fd = os.open(Path(directory) / LOCK, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _write_passwd(db, d, rows, bridge_user, password, keys=None):
    keys = keys or {}
    plain = "".join("%s:%s\n" % (r["id"], meter_password(keys.get(r["id"])
                                                         or devices.key_of(db, r)))
                    for r in rows)
    plain += "%s:%s\n" % (bridge_user, password)
    fd, tmp = tempfile.mkstemp(dir=d, prefix=".passwd-")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(plain)
        os.chmod(tmp, 0o600)
        done = subprocess.run([find("mosquitto_passwd"), "-U", tmp], capture_output=True,
                              text=True, timeout=60)
        if done.returncode != 0:
            raise BrokerError("mosquitto_passwd -U failed: %s"
                              % (done.stderr or done.stdout).strip())
        os.replace(tmp, d / PASSWD)
    finally:
        with suppress(OSError):
            os.unlink(tmp)


def rewrite_passwd(db, directory, keys=None):
    """Write DIR/passwd again from the registry, with `keys` ({device: key hex}) in place of
    those devices' stored keys, and SIGHUP the running broker (it rereads the file and
    disconnects a client whose password no longer holds). The caller holds passwd_lock.
    The bridge keeps its password (bridge.json); BrokerError or ValueError if it cannot."""
    d = Path(directory)
    creds = bridge_credentials(d)
    rows = db.all("SELECT id, key FROM devices ORDER BY id")
    for r in rows:
        check_device_id(r["id"])
    _write_passwd(db, d, rows, creds["user"], creds["password"], keys)
    return reload_running(d)


def running_pid(directory):
    """The pid of a mosquitto running with this directory's pid file, or None."""
    try:
        pid = int((Path(directory) / PIDFILE).read_text().strip())
        comm = Path("/proc/%d/comm" % pid).read_text().strip()
    except (OSError, ValueError):
        return None
    return pid if comm == "mosquitto" else None


def reload_running(directory):
    """SIGHUP the directory's running broker (rereads passwd and acl); its pid or None."""
    pid = running_pid(directory)
    if pid is not None:
        os.kill(pid, signal.SIGHUP)
    return pid


def command(directory, mosquitto=None):
    return [mosquitto or find("mosquitto"), "-c", str(Path(directory).resolve() / CONF)]


def start(directory, log=None, timeout=10.0, mosquitto=None):
    """Start mosquitto with DIR/mosquitto.conf; returns the Popen once its loopback
    listener accepts connections. log: a path for its output (default DIR/mosquitto.log)."""
    creds = bridge_credentials(directory)
    log = Path(log or Path(directory) / "mosquitto.log")
    try:
        return daemon.start(command(directory, mosquitto), "mosquitto", creds["host"],
                            creds["port"], log, timeout)
    except daemon.DaemonError as e:
        raise BrokerError(str(e)) from None


def stop(proc, timeout=5.0):
    """Stop a broker started by start() (SIGTERM: it saves its persistence file)."""
    daemon.stop(proc, timeout)
