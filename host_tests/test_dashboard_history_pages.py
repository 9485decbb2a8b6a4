"""The dashboard's presence and updates pages (dashboard/fleet_history_pages.py): what a
login may see, escaped, within its token's scope."""

import pytest
from headend_harness import Api, client, headend, op  # noqa: F401

from headend import devices

pytestmark = pytest.mark.unit

XSS = '<script>alert("x")</script>'


def _main(page):
    """The page's content: the header holds a random CSRF token, which can spell 'm2'."""
    return page.split("<main>", 1)[1]


def _login(client, token):
    client.get("/ui/login")
    r = client.post("/ui/login", data={"token": token, "csrf": client.cookies.get("bc_login")},
                    follow_redirects=False)
    assert r.status_code in (302, 303), r.text


@pytest.fixture
def fleet(client, headend, op):
    m1, m2 = headend.meter(client, "m1"), headend.meter(client, "m2")
    op.post("/v1/groups", json={"name": "north", "members": ["m1"]})
    m1.presence("available_restricted", XSS)
    m1.exchange()
    m2.presence("active", "load test")
    m2.exchange()
    m1.add("update", {"version": "1.2.0", "state": "downloading", "percent": 40})
    m1.exchange()
    m2.add("update", {"version": "1.2.0", "state": "installed"})
    m2.exchange()
    return m1, m2


def test_presence_page_shows_history_escaped(fleet, client, headend):
    _login(client, headend.op_token)
    page = client.get("/ui/presence").text
    assert XSS not in page and "&lt;script&gt;" in page
    assert "available_restricted" in page and "load test" in page
    assert '<span class="presence active">active</span> 1' in page
    one = client.get("/ui/presence", params={"meter": "m2"}).text
    assert "load test" in one and "&lt;script&gt;" not in one
    assert client.get("/ui/presence", params={"meter": "nope"}).status_code == 404


def test_updates_pages_show_rollout_progress(fleet, client, headend):
    _login(client, headend.op_token)
    page = client.get("/ui/updates").text
    assert "1.2.0" in page and "downloading 1 · installed 1" in page
    rollout = client.get("/ui/updates/1.2.0").text
    assert 'class="update-downloading"' in rollout and ">40<" in rollout
    assert 'http-equiv="refresh"' in rollout           # m1 is still downloading
    assert client.get("/ui/updates/9.9.9").status_code == 404


def test_a_scoped_login_sees_only_its_meters(fleet, client, headend):
    _login(client, devices.add_token(headend.hub.db, "nora", "operator", groups=["north"]))
    page = _main(client.get("/ui/presence").text)
    assert "m1" in page and "load test" not in page and "m2" not in page
    assert client.get("/ui/presence", params={"meter": "m2"}).status_code == 404
    rollout = _main(client.get("/ui/updates/1.2.0").text)
    assert "m1" in rollout and "m2" not in rollout
    assert "installed" not in client.get("/ui/updates").text


def test_pages_need_a_login(client):
    for path in ("/ui/presence", "/ui/updates", "/ui/updates/1.2.0", "/ui/alarms"):
        r = client.get(path, follow_redirects=False)
        assert r.status_code == 303 and r.headers["location"].startswith("/ui/login"), path
