"""The meter's HTTP CONNECT proxy (console key `proxy_url`; issue 12, 6) with a real
tinyproxy on loopback: a meter joins an https head-end through it with Basic credentials,
the CA still pinned inside the tunnel; wrong credentials, a proxy that refuses the port, or
a proxy that is down: no exchange, nothing lost, and the reason in the meter's log. The e2e
lab test (the proxy as the site's only egress) is test_proxy_e2e.py."""

import pytest

from lab import pki, processes, web_proxy

pytestmark = pytest.mark.system


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    why = web_proxy.missing()
    if why:
        pytest.skip(why)
    work = tmp_path_factory.mktemp("proxy")
    pki.init(work / "pki")
    he = processes.Headend(work, certfile=work / "pki" / "server.pem",
                           keyfile=work / "pki" / "server.key", cafile=work / "pki" / "ca.pem")
    api = he.api(he.add_token("alice", "operator"))
    he.start()
    proxy = web_proxy.Proxy(work, [he.port], user="site", password="s3cret").start()
    yield work, he, api, proxy
    proxy.kill()
    he.kill()


def _meter(site, name, proxy_url, **kw):
    work, he, _, _ = site
    key = he.add_device(name)
    return processes.Meter(work, name, key, he.url, ca_file=str(work / "pki" / "ca.pem"),
                           proxy_url=proxy_url, **kw).start()


@pytest.mark.parametrize("interpreter", ["micropython", "cpython"])
def test_a_meter_joins_an_https_headend_through_the_proxy(site, interpreter):
    work, he, api, proxy = site
    name = "meter-p-%s" % interpreter
    m = _meter(site, name, proxy.url(), interpreter=interpreter)
    try:
        processes.wait_until(lambda: api.get("/v1/devices/%s/readings" % name).json(), 30,
                             "the first reading through the proxy")
        w = processes.run_work(api, name, "read")
        assert w["status"] == "done", w
        assert "CONNECT 127.0.0.1:%d HTTP/1.1" % he.port in proxy.connects()
    finally:
        m.kill()


@pytest.mark.parametrize("url, why", [
    ("http://site:wrong@127.0.0.1:{port}", "proxy refused CONNECT to 127.0.0.1:{he}: 40[17]"),
    ("http://127.0.0.1:{port}", "proxy refused CONNECT to 127.0.0.1:{he}: 407"),
    ("http://site:s3cret@127.0.0.1:{dead}", "proxy 127.0.0.1:{dead} unreachable"),
])
def test_a_proxy_that_refuses_or_is_down_gets_no_exchange_through(site, url, why):
    import re

    work, he, api, proxy = site
    dead = processes.free_port()
    name = "meter-x%d" % abs(hash(url) % 1000)
    m = _meter(site, name, url.format(port=proxy.port, dead=dead))
    try:
        processes.wait_until(lambda: re.search(why.format(he=he.port, dead=dead), m.log()), 30,
                             "the refusal in the meter's log")
        assert api.get("/v1/devices/%s" % name).json()["last_contact"] is None
    finally:
        m.kill()


def test_the_head_ends_ca_stays_pinned_inside_the_tunnel(site, tmp_path):
    """A proxy (or whoever sits behind it) that answers for the head-end with a certificate
    of another CA gets no exchange: the meter checks the chain inside the tunnel too."""
    work, he, api, proxy = site
    pki.init(tmp_path / "other")
    key = he.add_device("meter-mitm")
    m = processes.Meter(work, "meter-mitm", key, he.url,
                        ca_file=str(tmp_path / "other" / "ca.pem"),
                        proxy_url=proxy.url()).start()
    try:
        processes.wait_until(lambda: "certificate verification failed" in m.log(), 30,
                             "the TLS refusal in the meter's log")
        assert "TLS with 127.0.0.1:%d failed" % he.port in m.log()
        assert api.get("/v1/devices/meter-mitm").json()["last_contact"] is None
    finally:
        m.kill()
