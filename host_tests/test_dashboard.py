"""The dashboard in-process: login exchanges a token for a session cookie, CSRF on every
form, logout ends access, roles as in the REST API, and whatever a meter sent is escaped."""

import json
import re
import threading
import time

import pytest
from headend_harness import client, headend, op  # noqa: F401

from headend.dashboard import assets
from headend.dashboard.session import COOKIE, LOGIN_COOKIE

pytestmark = pytest.mark.unit
SCRIPT = '<script>alert("owned")</script><img src=x onerror=alert(1)>'


def csrf_of(html):
    return re.search(r'name="csrf" value="([^"]+)"', html).group(1)


def login(client, token):
    page = client.get("/ui/login")
    assert page.status_code == 200
    r = client.post("/ui/login", data={"csrf": csrf_of(page.text), "token": token,
                                       "next": "/ui/"}, follow_redirects=False)
    return r


def test_login_sets_a_strict_http_only_cookie(client, headend):
    r = login(client, headend.op_token)
    assert r.status_code == 303 and r.headers["location"] == "/ui/"
    cookie = [c for c in r.headers.get_list("set-cookie") if c.startswith(COOKIE + "=")][0]
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Path=/ui" in cookie
    assert "Secure" not in cookie                       # plain HTTP here; https sets it
    assert headend.op_token not in cookie
    fleet = client.get("/ui/")
    assert fleet.status_code == 200 and "alice" in fleet.text
    assert "script-src 'self'" in fleet.headers["content-security-policy"]


def test_secure_cookie_under_tls(headend):
    from fastapi.testclient import TestClient
    with TestClient(headend.app, base_url="https://testserver") as c:
        r = login(c, headend.op_token)
        cookie = [x for x in r.headers.get_list("set-cookie") if x.startswith(COOKIE + "=")][0]
        assert "Secure" in cookie


def test_pages_need_a_session(client, headend):
    headend.meter(client, "meter-a")
    for path in ("/ui/", "/ui/meters/meter-a", "/ui/work/w-00000001"):
        r = client.get(path, follow_redirects=False)
        assert r.status_code == 303 and r.headers["location"].startswith("/ui/login"), path
    assert client.get("/ui/meters/meter-a/readings.json").status_code == 401
    assert client.get("/ui/meters/meter-a/stream").status_code == 401
    # a bearer token is not a session, and a forged cookie is nothing
    r = client.get("/ui/", headers=headend.auth(headend.op_token), follow_redirects=False)
    assert r.status_code == 303
    client.cookies.set(COOKIE, "forged-session-id", path="/ui")
    assert client.get("/ui/", follow_redirects=False).status_code == 303


def test_bad_token_and_missing_login_csrf(client, headend):
    r = login(client, "not-a-real-token-at-all")
    assert r.status_code == 401 and "invalid token" in r.text and COOKIE not in r.cookies
    page = client.get("/ui/login")
    r = client.post("/ui/login", data={"token": headend.op_token}, follow_redirects=False)
    assert r.status_code == 403 and "CSRF" in r.text
    client.cookies.delete(LOGIN_COOKIE, path="/ui")
    r = client.post("/ui/login", data={"token": headend.op_token, "csrf": csrf_of(page.text)},
                    follow_redirects=False)
    assert r.status_code == 403                         # the cookie half is missing
    assert client.get("/ui/", follow_redirects=False).status_code == 303


def test_forms_without_csrf_are_refused(client, headend):
    headend.meter(client, "meter-a")
    login(client, headend.op_token)
    for data in ({"op": "read", "args": "{}"}, {"op": "read", "args": "{}", "csrf": "x" * 43}):
        r = client.post("/ui/meters/meter-a/work", data=data, follow_redirects=False)
        assert r.status_code == 403 and "CSRF" in r.text
    assert headend.count("work") == 0
    r = client.post("/ui/logout", data={}, follow_redirects=False)
    assert r.status_code == 403
    assert client.get("/ui/", follow_redirects=False).status_code == 200   # still logged in


def test_send_work_and_see_the_result(client, headend):
    m = headend.meter(client, "meter-a")
    login(client, headend.op_token)
    page = client.get("/ui/meters/meter-a")
    assert page.status_code == 200
    ops = re.findall(r"<option>([a-z_]+)</option>", page.text)
    assert "read" in ops and "reset_energy" not in ops      # an operator may not
    r = client.post("/ui/meters/meter-a/work", data={"csrf": csrf_of(page.text), "op": "read",
                                                     "args": "{}"}, follow_redirects=False)
    assert r.status_code == 303
    work_url = r.headers["location"]
    waiting = client.get(work_url)
    assert "queued" in waiting.text and 'http-equiv="refresh"' in waiting.text
    m.execute(m.exchange()["work"], lambda w: ("done", {"reading": {"vrms": 231.25}}))
    m.exchange()
    done = client.get(work_url)
    assert "reading.vrms" in done.text and "231.25" in done.text
    assert 'http-equiv="refresh"' not in done.text
    # the role is the token's: reset_energy posted by hand is refused as by the API
    r = client.post("/ui/meters/meter-a/work", data={"csrf": csrf_of(page.text),
                                                     "op": "reset_energy"})
    assert r.status_code == 403 and "utility" in r.text
    r = client.post("/ui/meters/meter-a/work", data={"csrf": csrf_of(page.text), "op": "read",
                                                     "args": "[1"})
    assert r.status_code == 400


def test_logout_ends_access(client, headend):
    headend.meter(client, "meter-a")
    login(client, headend.op_token)
    page = client.get("/ui/")
    sid = client.cookies.get(COOKIE)
    r = client.post("/ui/logout", data={"csrf": csrf_of(page.text)}, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/ui/login"
    client.cookies.set(COOKIE, sid, path="/ui")         # the old cookie, replayed
    assert client.get("/ui/", follow_redirects=False).status_code == 303
    assert client.get("/ui/meters/meter-a/readings.json").status_code == 401


def test_what_a_meter_sent_is_escaped(client, headend):
    m = headend.meter(client, "meter-a")
    m.presence("available_restricted", note=SCRIPT)
    m.add("event", {"kind": SCRIPT, "category": SCRIPT, "start_s": 1.0})
    m.add("notice", {"what": SCRIPT})
    m.exchange()
    login(client, headend.op_token)
    for path in ("/ui/", "/ui/meters/meter-a"):
        html = client.get(path).text
        assert "<script>alert" not in html and "<img src=x" not in html, path
        assert "&lt;script&gt;alert(&#34;owned&#34;)&lt;/script&gt;" in html, path
    # the search box echoes its query escaped too
    html = client.get("/ui/", params={"q": '"><script>alert(2)</script>'}).text
    assert "<script>alert(2)" not in html


def test_fleet_search_and_paging(client, headend):
    for i in range(105):
        headend.meter(client, "m%03d" % i)
    headend.meter(client, "other-1")
    login(client, headend.op_token)
    html = client.get("/ui/").text.split("<main>", 1)[1]    # not the header's CSRF token
    assert "106 meters" in html and "page 1 of 2" in html and "m099" in html
    assert "m100" not in html
    assert "m100" in client.get("/ui/", params={"page_no": 2}).text
    html = client.get("/ui/", params={"q": "other"}).text.split("<main>", 1)[1]
    assert "other-1" in html and "m001" not in html and "1 meter<" in html
    assert "no meters" in client.get("/ui/", params={"q": "%"}).text   # a literal %


def test_readings_json_and_stream(client, headend):
    m = headend.meter(client, "meter-a")
    m.reading(229.0)
    m.reading(231.0)
    m.exchange()
    login(client, headend.op_token)
    rows = client.get("/ui/meters/meter-a/readings.json").json()
    assert [r["vrms"] for r in rows] == [229.0, 231.0]
    with client.stream("GET", "/ui/meters/meter-a/stream?after=1") as s:
        assert s.headers["content-type"].startswith("text/event-stream")
        text = ""
        for chunk in s.iter_text():
            text += chunk
            if "event: reading" in text and "\n\n" in text.split("event: reading", 1)[1]:
                break
    assert '"vrms": 231.0' in text and '"vrms": 229.0' not in text


def first_event(client, path):
    with client.stream("GET", path) as s:
        text = ""
        for chunk in s.iter_text():
            text += chunk
            if "event: reading" in text and "\n\n" in text.split("event: reading", 1)[1]:
                return text


def test_a_new_stream_sends_only_new_readings(client, headend, monkeypatch):
    from headend.dashboard import pages
    monkeypatch.setattr(pages, "REPLAY", 5)
    m = headend.meter(client, "meter-a")
    for i in range(20):
        m.reading(200.0 + i)
    m.exchange()
    login(client, headend.op_token)

    def later():
        time.sleep(0.3)
        m.reading(250.0)
        m.exchange()
    t = threading.Thread(target=later)
    t.start()
    text = first_event(client, "/ui/meters/meter-a/stream")       # after=0: from now on
    t.join()
    assert '"vrms": 250.0' in text and '"vrms": 219.0' not in text
    # a stream resumed from seq 1 catches up on the last REPLAY readings only
    text = first_event(client, "/ui/meters/meter-a/stream?after=1")
    first = json.loads(text.split("data: ", 1)[1].split("\n", 1)[0])
    assert first["seq"] == 17 and first["vrms"] == 216.0     # newest 21, minus REPLAY


def test_assets_are_pinned_and_served(client, headend):
    login(client, headend.op_token)
    have = assets.verified()
    if len(have) != len(assets.FILES):
        pytest.skip("uPlot not installed here (make venv needs npm)")
    r = client.get("/ui/vendor/uPlot.iife.min.js")
    assert r.status_code == 200 and "uPlot" in r.text
    assert client.get("/ui/vendor/..%2Fpyvenv.cfg").status_code == 404
    assert client.get("/ui/static/app.js").status_code == 200
    assert client.get("/ui/static/pages.py").status_code == 404
    html = client.get("/ui/").text
    assert "/ui/vendor/uPlot.iife.min.js" in html and "http" not in html.split("<main>")[0]


def test_a_tampered_asset_is_not_served(tmp_path, monkeypatch):
    (tmp_path / "uPlot.iife.min.js").write_text("alert('not uPlot')")
    monkeypatch.setenv("BACKCHANNEL_ASSETS", str(tmp_path))
    assert assets.verified() == {}


def test_group_command_outcomes_fill_in(client, headend, op):
    a, b = headend.meter(client, "meter-a"), headend.meter(client, "meter-b")
    assert op.post("/v1/groups", json={"name": "feeder-7", "members": ["meter-a", "meter-b"]}
                   ).status_code == 201
    login(client, headend.op_token)
    assert "feeder-7" in client.get("/ui/groups").text
    page = client.get("/ui/groups/feeder-7")
    assert "meter-a" in page.text and "meter-b" in page.text
    r = client.post("/ui/groups/feeder-7/work", data={"op": "read", "args": "{}"})
    assert r.status_code == 403 and "CSRF" in r.text and headend.count("work") == 0
    r = client.post("/ui/groups/feeder-7/work", data={"csrf": csrf_of(page.text),
                                                      "op": "reset_energy"})
    assert r.status_code == 403 and "utility" in r.text and headend.count("work") == 0
    r = client.post("/ui/groups/feeder-7/work", data={"csrf": csrf_of(page.text), "op": "read",
                                                      "args": "{}"}, follow_redirects=False)
    assert r.status_code == 303
    url = r.headers["location"]
    html = client.get(url).text
    assert html.count("queued") >= 2 and 'http-equiv="refresh"' in html
    a.execute(a.exchange()["work"], lambda w: ("done", {"vrms": 230.5}))
    a.exchange()
    html = client.get(url).text
    assert "done 1" in html and "230.5" in html and 'http-equiv="refresh"' in html
    b.execute(b.exchange()["work"], lambda w: ("rejected", {}))
    b.exchange()
    html = client.get(url).text
    assert "done 1" in html and "rejected 1" in html and 'http-equiv="refresh"' not in html
    assert "#1" in client.get("/ui/groups/feeder-7").text
    assert client.get("/ui/groups/feeder-7/commands/99").status_code == 404
    assert client.get("/ui/groups/nope").status_code == 404


def test_fleet_page_at_10000_meters_renders_in_under_a_second(client, headend):
    import time as clock
    db = headend.hub.db
    with db.tx():
        db.many("INSERT INTO devices(id, key, created, poll, presence) VALUES "
                "(?, ?, 0, 0, 'available')", [("m%05d" % i, "00" * 32) for i in range(10000)])
    login(client, headend.op_token)
    took = []
    for _ in range(3):
        started = clock.perf_counter()
        r = client.get("/ui/", params={"page_no": 50})
        took.append(clock.perf_counter() - started)
        assert r.status_code == 200 and "10000 meters" in r.text and "m04999" in r.text
    assert min(took) < 1.0, took


def test_expired_sessions_and_removed_tokens_end_access(client, headend):
    from headend.dashboard.session import Sessions
    s = Sessions(ttl=60)
    sid = s.create("a-token", now=1000.0)
    assert s.get(sid, now=1059.0) is not None
    assert s.get(sid, now=1060.0) is None and sid not in s.by_id
    assert s.get("", now=0) is None and s.get("nope", now=0) is None
    login(client, headend.op_token)
    assert client.get("/ui/", follow_redirects=False).status_code == 200
    with headend.hub.db.tx() as db:
        db.run("DELETE FROM tokens WHERE name = ?", "alice")
    assert client.get("/ui/", follow_redirects=False).status_code == 303
    assert client.get("/ui/meters/x/readings.json").status_code == 401
