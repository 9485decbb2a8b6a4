"""The head-end serves its routers' own route objects (headend/shared_routes.py) instead of
re-including them per app: the oracle is FastAPI's include_router on the same routers, whose
OpenAPI document (paths, parameters, tags, responses, security) must come out the same; and
two apps made from the same routers keep their own state."""

import pytest
from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient
from headend_harness import Headend

from headend import dashboard, shared_routes, webapp

pytestmark = pytest.mark.unit

ROUTERS = webapp.API_ROUTERS + dashboard.routers()


def spec(app):
    return get_openapi(title="t", version="1", routes=app.routes)


def test_the_same_api_as_include_router():
    included, shared = FastAPI(), FastAPI()
    for router in ROUTERS:
        included.include_router(router)
    shared_routes.add(shared, *ROUTERS)
    want = spec(included)
    assert len(want["paths"]) > 30
    assert spec(shared) == want
    # every route by name, the dashboard's too (not in the schema), resolves the same way
    mine = [r for r in shared.routes if isinstance(r, APIRoute)]
    assert len(mine) > 60
    for route in mine:
        params = {name: "x" for name in route.param_convertors}
        assert shared.url_path_for(route.name, **params) \
            == included.url_path_for(route.name, **params), route.path


def test_two_head_ends_share_routes_not_state(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    a, b = Headend(tmp_path / "a"), Headend(tmp_path / "b")
    with TestClient(a.app) as ca, TestClient(b.app) as cb:
        admin_a = a.auth(a.admin_token)
        assert ca.post("/v1/devices", json={"id": "meter-a"}, headers=admin_a).status_code == 201
        assert [d["id"] for d in ca.get("/v1/devices", headers=admin_a).json()] == ["meter-a"]
        assert cb.get("/v1/devices", headers=b.auth(b.admin_token)).json() == []
        # a's token means nothing to b; the router's dependency (auth) still applies
        assert cb.get("/v1/devices", headers=admin_a).status_code == 401
        assert cb.get("/v1/devices").status_code == 401
