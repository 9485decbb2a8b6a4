"""tools/lab/netlab.py: sites behind a stateful firewall reach the head-end; nothing reaches in.

Needs root, iproute2 (`ip`) and nftables (`nft`); skipped otherwise. Every lab built here
has its own `bc-t<hex>` prefix and is torn down in a finalizer, also when a test fails.
"""

import os
import re
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from lab import netlab

ROOT = Path(__file__).resolve().parent.parent

BLOCKED_TIMEOUT = 2.0   # a connect that the firewall drops must give up within this


def _why_skip():
    if os.geteuid() != 0:
        return f"network lab needs root to create namespaces (running as uid {os.geteuid()})"
    missing = [f"{tool} ({pkg})" for tool, pkg in (("ip", "iproute2"), ("nft", "nftables"))
               if not shutil.which(tool)]
    if missing:
        return "network lab needs " + ", ".join(missing) + " installed"
    name = f"bc-probe-{uuid.uuid4().hex[:6]}"
    try:  # root in a container may still lack CAP_SYS_ADMIN / CAP_NET_ADMIN or nf_tables
        for cmd in (["ip", "netns", "add", name],
                    ["ip", "netns", "exec", name, "nft", "add", "table", "inet", "bc_probe"]):
            r = subprocess.run(cmd, capture_output=True, text=True, timeout=10)
            if r.returncode:
                return f"cannot build a network lab here: {' '.join(cmd)}: {r.stderr.strip()}"
    finally:
        subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=10)
    return None


SKIP = _why_skip()
pytestmark = [pytest.mark.root, pytest.mark.skipif(SKIP is not None, reason=SKIP or "")]


def new_prefix():
    return f"bc-t{uuid.uuid4().hex[:6]}"


@pytest.fixture(scope="module")
def lab():
    lab = netlab.Lab(new_prefix())
    try:
        lab.up()
        yield lab
    finally:
        lab.down()


@pytest.fixture(scope="module")
def servers(lab):
    """Echo servers on every host: (ns, proto) -> Popen with .port. Killed by lab.down()."""
    return {(ns, proto): lab.serve(ns, proto, lifetime=120)
            for ns in ("out", "a", "b") for proto in ("tcp", "udp")}


def new_drops(lab, site):
    """Packets counted by the site firewall's `ct state new ... drop` rule."""
    rules = lab.check_output(site, ["nft", "list", "chain", "inet", "bc_fw", "input"])
    return int(re.search(r"ct state new counter packets (\d+)", rules).group(1))


@pytest.mark.parametrize("site", ["a", "b"])
def test_nothing_outside_can_connect_into_a_site(lab, servers, site):
    ip, tcp, udp = lab.site_ip[site], servers[site, "tcp"].port, servers[site, "udp"].port
    # control: the servers really listen (inside the site they answer on the site address)
    assert lab.probe(site, ip, tcp)["echoed"]
    assert lab.probe(site, ip, udp, "udp")["echoed"]
    before = new_drops(lab, site)
    r = lab.probe("out", ip, tcp, timeout=BLOCKED_TIMEOUT)
    assert not r["connected"], r
    assert r["seconds"] < BLOCKED_TIMEOUT + 1.0, r
    r = lab.probe("out", ip, udp, "udp", timeout=BLOCKED_TIMEOUT)
    assert not r["echoed"], r
    assert new_drops(lab, site) > before, "the firewall's ct-state-new rule did the dropping"


@pytest.mark.parametrize("site", ["a", "b"])
def test_site_reaches_headend(lab, servers, site):
    r = lab.probe(site, lab.headend_ip, servers["out", "tcp"].port)
    assert r["connected"] and r["echoed"], r


@pytest.mark.parametrize("site", ["a", "b"])
def test_established_replies_pass(lab, servers, site):
    before = new_drops(lab, site)
    for proto in ("tcp", "udp"):
        r = lab.probe(site, lab.headend_ip, servers["out", proto].port, proto)
        assert r["echoed"], (proto, r)   # the head-end's reply came back through the firewall
    assert new_drops(lab, site) == before


def test_partition_blocks_then_restores(lab, servers):
    port = servers["out", "tcp"].port
    assert lab.probe("a", lab.headend_ip, port)["echoed"]
    try:
        lab.partition("a")
        lab.partition("a")  # idempotent
        r = lab.probe("a", lab.headend_ip, port, timeout=1.5)
        assert not r["connected"], r
        assert "timed out" in (r["error"] or ""), r  # silence, as on a cut link
        assert lab.probe("b", lab.headend_ip, port)["echoed"], "site b is unaffected"
    finally:
        lab.partition("a", on=False)
    lab.partition("a", on=False)  # idempotent
    r = lab.probe("a", lab.headend_ip, port)
    assert r["connected"] and r["echoed"], r


def _socket_fds(pid):
    fd_dir = Path(f"/proc/{pid}/fd")
    return [fd for fd in fd_dir.iterdir() if os.readlink(fd).startswith("socket:")]


def test_listening_sockets_of_a_server(lab, servers):
    tcp, udp = servers["a", "tcp"], servers["a", "udp"]
    assert [(s.proto, s.port) for s in lab.listening_sockets(tcp.pid)] == [("tcp", tcp.port)]
    assert [(s.proto, s.port) for s in lab.listening_sockets(udp.pid)] == [("udp", udp.port)]


def test_listening_sockets_of_a_client_only_process(lab, servers):
    code = (
        "import socket, sys, time\n"
        f"t = socket.create_connection(({lab.headend_ip!r}, {servers['out', 'tcp'].port}),"
        " timeout=5)\n"
        "u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
        f"u.connect(({lab.headend_ip!r}, {servers['out', 'udp'].port}))\n"
        "u.send(b'hello')\n"
        "print('connected', flush=True)\n"
        "time.sleep(15)\n"
    )
    client = lab.run("a", [sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert client.stdout.readline().strip() == "connected"
        assert len(_socket_fds(client.pid)) >= 2, "the client does hold sockets"
        assert lab.listening_sockets(client.pid) == []
    finally:
        client.kill()
        client.wait(5)
        client.stdout.close()


def test_down_removes_everything():
    prefix = new_prefix()
    lab = netlab.Lab(prefix)
    try:
        lab.up()
        server = lab.serve("a", "tcp", lifetime=60)
        assert sorted(lab.exists()) == sorted(lab.ns.values())
        # as after a crash: a fresh Lab with only the prefix cleans up, processes included
        netlab.Lab(prefix).down()
        assert server.wait(5) is not None
        assert [n for n in netlab.netns_list() if n.startswith(prefix)] == []
        netlab.Lab(prefix).down()  # idempotent
    finally:
        lab.down()
    assert [n for n in netlab.netns_list() if n.startswith(prefix)] == []
