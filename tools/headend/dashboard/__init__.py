"""The dashboard served by the head-end under /ui (pages.py: routes; session.py: login
sessions and CSRF; assets.py: uPlot from npm, pinned and checked; templates/, static/)."""

from fastapi.responses import RedirectResponse


def install(app):
    """Add the dashboard's routes to the head-end app."""
    from . import group_pages, pages

    app.include_router(pages.router)
    app.include_router(group_pages.router)

    @app.exception_handler(pages.Refused)
    async def refused(request, exc):
        return pages.refused(request, exc.status, exc.reason)

    @app.get("/ui", include_in_schema=False)
    async def ui_root():
        return RedirectResponse("/ui/", 307)
