"""The per-address cap on failed authentications on the real `backchannel serve` (issue 12,
item 9; the in-process attacks are in test_attacks_limits.py)."""

import httpx
import pytest
from headend_fake_meter import FakeMeter

from lab import processes

pytestmark = pytest.mark.system


def test_the_cap_holds_on_the_real_server(tmp_path):
    """`backchannel serve`: uvicorn runs the exchange's fast path outside the app's own
    middleware, so the gate must wrap it there too."""
    he = processes.Headend(tmp_path, config={"unauth_per_minute": 8}).start()
    try:
        with httpx.Client(base_url=he.url, timeout=10) as c:
            codes = [c.get("/v1/devices", headers={"Authorization": "Bearer g-%020d" % i}
                           ).status_code for i in range(5)]
            guess = FakeMeter(c, "meter-a", "00" * 32)          # a well-formed, wrong key
            codes += [guess.post(guess.envelope()).status_code for _ in range(5)]
            assert codes == [401] * 8 + [429] * 2, codes
            r = c.post("/v1/exchange", content=b"{}", headers={"X-BC-Signature": "0" * 64})
            assert r.status_code == 429 and int(r.headers["Retry-After"]) >= 1
    finally:
        he.kill()
