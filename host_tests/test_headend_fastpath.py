"""The exchange's fast path (tools/headend/fastpath.py) answers exactly as the documented
FastAPI route: the same status, body and headers for refusals, and a signed answer that
stores the same thing, with the middleware in place and with it removed."""

import json

import pytest
from fastapi.testclient import TestClient
from headend_fake_meter import hmac_hex
from headend_harness import Headend

from headend import fastpath  # noqa: E402

pytestmark = pytest.mark.unit


def without_fastpath(app):
    app.user_middleware = [m for m in app.user_middleware
                           if m.cls is not fastpath.ExchangeFastPath]
    app.middleware_stack = None          # rebuilt on the next request
    return app


def requests(meter):
    good = json.dumps(meter.envelope(items=[{"seq": 1, "kind": "reading",
                                             "body": {"vrms": 230.0}}])).encode()
    unknown = json.dumps(dict(meter.envelope(), device="nobody")).encode()
    bad_field = json.dumps(dict(meter.envelope(), room=-1)).encode()
    return [
        ("malformed JSON", b"{not json", None),
        ("not an object", b"[1]", None),
        ("unknown device", unknown, hmac_hex(meter.key, unknown)),
        ("missing signature", good, False),
        ("bad signature", good, "00" * 32),
        ("invalid field", bad_field, hmac_hex(meter.key, bad_field)),
        ("too large", b"x" * (300 * 1024), None),
        ("good", good, hmac_hex(meter.key, good)),
        ("replayed", good, hmac_hex(meter.key, good)),
    ]


def run(tmp_path, strip):
    he = Headend(tmp_path)
    app = without_fastpath(he.app) if strip else he.app
    out = []
    with TestClient(app) as c:
        meter = he.meter(c, "meter-a")
        for name, raw, sig in requests(meter):
            headers = {"Content-Type": "application/json"}
            if sig is not False:
                headers["X-BC-Signature"] = sig or hmac_hex(meter.key, raw)
            r = c.post("/v1/exchange", content=raw, headers=headers)
            if r.status_code == 200:
                assert r.headers["x-bc-signature"] == hmac_hex(meter.key, r.content)
                # per request: the time, the request's nonce, the meter's outbox epoch
                body = dict(r.json(), time=None, time_ms=None, held_ms=None, re=None,
                            epoch=None)
            else:
                body = r.json()
            out.append((name, r.status_code, body, r.headers["content-type"]))
        stored = he.hub.db.all("SELECT device, seq, kind, body FROM items")
    return out, [tuple(row) for row in stored]


@pytest.fixture
def both(tmp_path):
    (tmp_path / "fast").mkdir()
    (tmp_path / "route").mkdir()
    return run(tmp_path / "fast", strip=False), run(tmp_path / "route", strip=True)


def test_fast_path_answers_as_the_route(both):
    (fast, fast_items), (route, route_items) = both
    assert [f[0] for f in fast] == [r[0] for r in route]
    for f, r in zip(fast, route):
        assert f == r, f[0]
    statuses = {name: status for name, status, _, _ in fast}
    assert statuses == {"malformed JSON": 400, "not an object": 400, "unknown device": 401,
                        "missing signature": 401, "bad signature": 401,
                        "invalid field": 400, "too large": 413, "good": 200,
                        "replayed": 409}
    assert fast_items == route_items == [("meter-a", 1, "reading", '{"vrms":230.0}')]
