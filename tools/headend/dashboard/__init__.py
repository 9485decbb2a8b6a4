"""The dashboard served by the head-end under /ui (pages.py: routes; session.py: login
sessions and CSRF; assets.py: uPlot from npm, pinned and checked; templates/, static/)."""

from fastapi.responses import RedirectResponse

from .. import escalation, shared_routes
from .session import Sessions

PRESENT_S = 90      # a dashboard open in a browser makes a request at least this often


def routers():
    """The dashboard's routers, in the order the app serves them."""
    from . import alarm_pages, fleet_history_pages, group_pages, pages
    return (pages.router, alarm_pages.router, fleet_history_pages.router, group_pages.router)


def install(app):
    """Add the dashboard's routes to the head-end app."""
    from . import alarm_pages, pages

    app.state.sessions = Sessions()

    def dashboard_open(hub, operator, now):
        """A presence source for alarms: the operator has the dashboard open."""
        for s in app.state.sessions.recent(now, PRESENT_S):
            found = hub.principal(s.token)
            if found is not None and found[0] == operator:
                return "dashboard open"
        return None

    escalation.sources(app.state.hub).append(dashboard_open)
    escalation.channels(app.state.hub).append(alarm_pages.DashboardChannel(dashboard_open))
    shared_routes.add(app, *routers())

    @app.exception_handler(pages.Refused)
    async def refused(request, exc):
        return pages.refused(request, exc.status, exc.reason)

    @app.get("/ui", include_in_schema=False)
    async def ui_root():
        return RedirectResponse("/ui/", 307)
