"""A site whose only way out is its web proxy (issue 12, 6), in the e2e lab: the meter's
namespace behind its stateful firewall, with an egress rule that lets nothing out but TCP to
the proxy; Debian's tinyproxy (Basic credentials, CONNECT to the head-end's port only) in
the outside namespace; the head-end over https with its CA pinned on the meter. The meter
joins through the proxy, runs work, and cannot reach the head-end directly."""

import json
import uuid

import pytest
from test_netlab import SKIP

from lab import netlab, pki, processes, web_proxy

pytestmark = [pytest.mark.root, pytest.mark.skipif(SKIP is not None, reason=SKIP or "")]


@pytest.fixture
def site(tmp_path):
    why = web_proxy.missing()
    if why:
        pytest.skip(why)
    lab = netlab.Lab("bc-p%s" % uuid.uuid4().hex[:6])
    try:
        lab.up()
        pki.init(tmp_path / "pki", ips=[lab.headend_ip])
        yield tmp_path, lab
    finally:
        lab.down()


def test_a_site_whose_only_egress_is_its_proxy_joins_through_it(site):
    work, lab = site
    ca = work / "pki"
    settings = work / "headend.json"
    settings.write_text(json.dumps({"margin_min": 3}))
    he = processes.Headend(work, host=lab.headend_ip, lab=lab, certfile=ca / "server.pem",
                           keyfile=ca / "server.key", cafile=ca / "ca.pem",
                           extra=["--config", str(settings)])
    token = he.add_token("alice", "operator")
    key = he.add_device("meter-a")
    he.start()
    proxy = web_proxy.Proxy(work, [he.port], host=lab.headend_ip, user="site",
                            password="s3cret", allow="10.77.0.0/16", lab=lab, ns="out").start()
    web_proxy.only_egress(lab, "a", lab.headend_ip, proxy.port)
    # the firewall holds: no way to the head-end but through the proxy
    assert not lab.probe("a", lab.headend_ip, he.port)["connected"]
    meter = processes.Meter(work, "meter-a", key, he.url, lab=lab, ns="a",
                            ca_file=str(ca / "ca.pem"), proxy_url=proxy.url()).start()
    api = he.api(token)
    processes.wait_until(lambda: api.get("/v1/devices/meter-a/readings").json(), 40,
                         "the first reading through the proxy:\n" + meter.log()[-1500:])
    w = processes.run_work(api, "meter-a", "read")
    assert w["status"] == "done", w
    assert "CONNECT %s:%d HTTP/1.1" % (lab.headend_ip, he.port) in proxy.connects()
