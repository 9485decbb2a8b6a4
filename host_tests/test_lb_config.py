"""`serve --workers N`'s parts that need no server (issue 19, item 2): HAProxy's private
config (headend/lb_server.py) and the refusals of the CLI (headend/workers.py). The running
layout, with PostgreSQL, haproxy and a real meter: test_headend_workers.py."""

import pytest

from headend import lb_server
from headend.cli import main

pytestmark = pytest.mark.unit


def test_the_config_balances_checks_and_outlasts_a_long_poll():
    cfg = lb_server.config("127.0.0.1", 8080, [("127.0.0.1", 9001), ("127.0.0.1", 9002)])
    lines = [line.strip() for line in cfg.splitlines()]
    assert "bind 127.0.0.1:8080" in lines
    assert "balance roundrobin" in lines and "option httpchk GET /v1/health" in lines
    assert [line.split()[2] for line in lines if line.startswith("server ")] == \
        ["127.0.0.1:9001", "127.0.0.1:9002"]
    timeouts = {line.split()[1]: line.split()[2] for line in lines
                if line.startswith("timeout ")}
    assert int(timeouts["server"].rstrip("s")) > 25 + 15       # max_wait and the meter's margin
    assert "option forwardfor" in lines and "option redispatch" in lines
    assert 256 <= lb_server.maxconn() <= 100000


def test_tls_is_terminated_at_the_proxy_with_a_private_pem(tmp_path):
    (tmp_path / "c.pem").write_text("CERT\n")
    (tmp_path / "k.pem").write_text("KEY\n")
    lb = lb_server.LbServer(tmp_path / "lb", "0.0.0.0", 8443, [("127.0.0.1", 9001)],
                            tmp_path / "c.pem", tmp_path / "k.pem")
    cfg = lb.write().read_text()
    pem = tmp_path / "lb" / "headend.pem"
    assert "bind 0.0.0.0:8443 ssl crt %s" % pem in cfg
    assert pem.read_text() == "CERT\nKEY\n" and pem.stat().st_mode & 0o077 == 0


def test_workers_need_postgresql(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        main(["serve", "--db", str(tmp_path / "one.db"), "--workers", "2"])
    err = capsys.readouterr().err
    assert e.value.code == 1 and err.count("\n") == 1, err
    assert err.startswith("backchannel: error: --workers 2 needs a postgresql:// --db"), err
