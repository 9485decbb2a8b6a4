"""Routers added to each app by their own route objects, not re-included.

FastAPI (0.16x) builds an included router's routes again for every app, lazily, on that
app's first requests: a pydantic adapter for every parameter and response of every route,
about a tenth of a second of CPU per app. The head-end's routers are module-level
APIRouters whose routes were built once, at import, with their prefixes, tags, responses
and dependencies already applied; every app (a process of `serve --workers N`, each test's
head-end) can serve those same objects. The app adds nothing of its own to them (no
prefix, tags or dependencies at include), so this is what `include_router` would do."""


def add(app, *routers):
    """Serve each router's routes from app, as app.include_router(router) with no options."""
    for router in routers:
        app.router.routes.extend(router.routes)
