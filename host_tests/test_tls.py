"""TLS with a pinned CA (tools/lab/pki.py): the real firmware (MicroPython unix port, Mbed TLS)
against the real head-end serving https on 127.0.0.1. A meter pinned to the right CA (DER
or PEM) gets its work done; one pinned to another CA, or whose server cert names another
address, never gets an exchange through; plain http to the https port fails. The same
client code (firmware/httpc.py) is also checked under CPython's ssl."""

import asyncio
import importlib.util
import shutil
import socket
import ssl
import subprocess
import sys
import threading
import time

import httpx
import pytest

from lab import pki, processes, runner

pytestmark = pytest.mark.system

VERIFY_FAILED = "certificate verification failed"


def _load_httpc():
    """firmware/httpc.py as a CPython module, without adding firmware/ to the import path."""
    spec = importlib.util.spec_from_file_location("fw_httpc", runner.FIRMWARE / "httpc.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    base = tmp_path_factory.mktemp("pki")
    good, other, misnamed = base / "good", base / "other", base / "misnamed"
    pki.init(good)                       # server cert for localhost + 127.0.0.1
    pki.init(other)                      # an unrelated CA
    misnamed.mkdir()                     # the good CA, a cert for other names only
    for name in ("ca.pem", "ca.der", "ca.key"):
        shutil.copy(good / name, misnamed / name)
    pki.issue_server(misnamed, ["headend.test"], ["127.0.0.2"])
    return {"good": good, "other": other, "misnamed": misnamed}


@pytest.fixture(scope="module")
def site(tmp_path_factory, certs):
    work = tmp_path_factory.mktemp("tls")
    good = certs["good"]
    he = processes.Headend(work, certfile=good / "server.pem", keyfile=good / "server.key",
                        cafile=good / "ca.pem")
    assert he.url.startswith("https://127.0.0.1:")
    keys = {m: he.add_device(m) for m in ("meter-der", "meter-pem", "meter-rogue",
                                          "meter-plain")}
    op = he.add_token("alice", "operator")
    he.start()
    plain_url = "http://127.0.0.1:%d" % he.port
    meters = {
        "meter-der": processes.Meter(work, "meter-der", keys["meter-der"], he.url,
                                  ca_file=str(good / "ca.der")),
        "meter-pem": processes.Meter(work, "meter-pem", keys["meter-pem"], he.url,
                                  ca_file=str(good / "ca.pem")),
        "meter-rogue": processes.Meter(work, "meter-rogue", keys["meter-rogue"], he.url,
                                    ca_file=str(certs["other"] / "ca.der")),
        "meter-plain": processes.Meter(work, "meter-plain", keys["meter-plain"], plain_url),
    }
    for name, m in meters.items():
        if name != "meter-rogue":  # started by its test, which times its back-off
            m.start()
    api = he.api(op)
    yield {"headend": he, "meters": meters, "api": api, "work": work, "certs": certs}
    for m in meters.values():
        m.kill()
    he.kill()


def _readings(api, meter):
    r = api.get("/v1/devices/%s/readings?limit=500" % meter)
    assert r.status_code == 200, r.text
    return r.json()


@pytest.mark.parametrize("meter", ["meter-der", "meter-pem"])
def test_read_round_trip_over_tls(site, meter):
    api = site["api"]
    processes.wait_until(lambda: _readings(api, meter), 20, "the first reading from %s" % meter)
    w = processes.run_work(api, meter, "read")
    assert w["status"] == "done", w
    assert w["result"]["reading"]["vrms"] == pytest.approx(230, rel=0.01)
    assert VERIFY_FAILED not in site["meters"][meter].log()


def test_meter_pinned_to_another_ca_never_gets_through(site):
    api, rogue = site["api"], site["meters"]["meter-rogue"]
    rogue.start()
    seen = []  # when each verification failure showed up in the meter's log

    def failures():
        # httpc's line, once per handshake (comms adds its own line when the failure changes)
        n = rogue.log().count("httpc: TLS with")
        while len(seen) < n:
            seen.append(time.monotonic())
        assert rogue.proc.poll() is None, "meter exited:\n" + rogue.log()
        assert _readings(api, "meter-rogue") == [], "a reading got through"
        return len(seen) >= 3

    processes.wait_until(failures, 20, "three failed handshakes from meter-rogue")
    log = rogue.log()
    assert "httpc: TLS with 127.0.0.1:%d failed: %s" % (site["headend"].port, VERIFY_FAILED) \
        in log, log
    assert "not correctly signed by the trusted CA" in log, log
    assert "Traceback" not in log, log
    # Backing off (1-2 s, then 2-4 s, ...), not a tight loop.
    gaps = [b - a for a, b in zip(seen, seen[1:])]
    assert gaps[0] > 0.8 and gaps[1] > 1.8, gaps
    # The head-end stored nothing from it and never counted a contact.
    assert _readings(api, "meter-rogue") == []
    dev = [d for d in api.get("/v1/devices").json() if d["id"] == "meter-rogue"][0]
    assert dev["last_contact"] is None, dev
    assert rogue.proc.poll() is None


def test_plain_http_to_the_https_port_fails(site):
    he = site["headend"]
    with pytest.raises(httpx.HTTPError):
        httpx.get("http://127.0.0.1:%d/v1/health" % he.port, timeout=5)
    # The same over https with the pinned CA answers.
    ctx = ssl.create_default_context(cafile=str(site["certs"]["good"] / "ca.pem"))
    assert httpx.get(he.url + "/v1/health", verify=ctx, timeout=5).status_code == 200
    # A meter configured with http:// for the https port gets nothing stored, and lives on.
    processes.wait_until(lambda: _readings(site["api"], "meter-der"), 20, "readings over TLS")
    plain = site["meters"]["meter-plain"]
    assert _readings(site["api"], "meter-plain") == []
    assert plain.proc.poll() is None, plain.log()
    assert "Traceback" not in plain.log()


class _TlsServer:
    """A one-line HTTP server over TLS on 127.0.0.1, serving the cert in certdir."""

    def __init__(self, certdir):
        self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.ctx.load_cert_chain(certdir / "server.pem", certdir / "server.key")
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            try:
                with self.ctx.wrap_socket(conn, server_side=True) as s:
                    s.settimeout(5)
                    s.recv(4096)
                    s.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
            except OSError:
                pass
            finally:
                conn.close()

    def close(self):
        try:
            self.sock.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept()
        except OSError:
            pass
        self.sock.close()
        self.thread.join(5)


MP_CLIENT = """
import asyncio, sys
from httpc import HttpClient, tls_context
async def main(url, ca):
    try:
        print("OK", (await HttpClient(url, tls_context(ca), timeout=5).request("GET", "/"))[0])
    except Exception as e:
        print("FAIL", type(e).__name__, e)
asyncio.run(main(sys.argv[1], sys.argv[2]))
"""


def test_micropython_checks_the_address_in_the_cert(tmp_path, certs):
    """Right CA, but the server cert names 127.0.0.2 (and headend.test): a meter calling
    https://127.0.0.1 refuses it. The same CA with the right cert is accepted."""
    script = tmp_path / "client.py"
    script.write_text(MP_CLIENT)
    for certdir, want in ((certs["misnamed"], "FAIL TlsError"), (certs["good"], "OK 200")):
        server = _TlsServer(certdir)
        try:
            out = runner.run("micropython", script, "https://127.0.0.1:%d" % server.port,
                         str(certs["good"] / "ca.der"), timeout=30)
        finally:
            server.close()
        assert out.startswith(want), out
        if want.startswith("FAIL"):
            assert VERIFY_FAILED in out and "does not match" in out, out


def test_cpython_httpc_pins_the_ca(site, certs):
    """firmware/httpc.py under CPython (ssl): pinned CA only, DER or PEM; TLS failures are
    TlsError with the reason; http:// to the https port fails."""
    httpc = _load_httpc()
    port = site["headend"].port

    async def get(url, ca):
        ctx = httpc.tls_context(str(ca)) if ca else None
        client = httpc.HttpClient(url, ctx, timeout=5)
        try:
            return (await client.request("GET", "/v1/health"))[0]
        finally:
            client.close()

    https = "https://127.0.0.1:%d" % port
    for name in ("ca.der", "ca.pem"):
        assert asyncio.run(get(https, certs["good"] / name)) == 200
    assert asyncio.run(get("https://localhost:%d" % port, certs["good"] / "ca.der")) == 200
    with pytest.raises(httpc.TlsError, match=VERIFY_FAILED):
        asyncio.run(get(https, certs["other"] / "ca.der"))
    with pytest.raises((httpc.HttpError, OSError, EOFError)):
        asyncio.run(get("http://127.0.0.1:%d" % port, None))
    server = _TlsServer(certs["misnamed"])
    try:
        with pytest.raises(httpc.TlsError, match="IP address mismatch"):
            asyncio.run(get("https://127.0.0.1:%d" % server.port, certs["good"] / "ca.pem"))
    finally:
        server.close()


def test_pki_cli_is_idempotent_and_says_what_is_wrong(tmp_path):
    def cli(*argv):
        p = subprocess.run([sys.executable, "-m", "lab.pki", *argv],
                           capture_output=True, text=True, timeout=60)
        return p.returncode, p.stdout, p.stderr

    d = tmp_path / "ca"
    rc, out, err = cli("init", str(d))
    assert rc == 0 and "created CA" in out and "localhost, 127.0.0.1" in out, err
    files = {n: (d / n).read_bytes() for n in pki.NAMES.values()}
    assert (d / "ca.key").stat().st_mode & 0o777 == 0o600
    assert (d / "server.key").stat().st_mode & 0o777 == 0o600
    rc, out, _ = cli("init", str(d))  # again: nothing changes
    assert rc == 0 and "kept existing CA" in out
    assert files == {n: (d / n).read_bytes() for n in pki.NAMES.values()}
    rc, out, _ = cli("server", str(d), "--ip", "10.0.0.7", "--host", "hub.example")
    assert rc == 0 and "hub.example, 10.0.0.7" in out
    assert (d / "ca.pem").read_bytes() == files["ca.pem"]
    assert (d / "server.pem").read_bytes() != files["server.pem"]
    for argv, want in ((("server", str(tmp_path / "none")), "no CA in"),
                       (("server", str(d), "--ip", "10.0.0"), "not a valid IP address"),
                       (("server", str(d), "--host", "10.0.0.1"), "give it with --ip")):
        rc, out, err = cli(*argv)
        assert rc != 0 and err.startswith("pki.py: error: ") and want in err, err
        assert err.count("\n") == 1 and "Traceback" not in err
    (d / "ca.key").unlink()
    rc, _, err = cli("init", str(d))
    assert rc == 1 and "ca.key is missing" in err and "--force" in err
    rc, out, _ = cli("init", str(d), "--force")
    assert rc == 0 and "created CA" in out
    assert (d / "ca.pem").read_bytes() != files["ca.pem"]
