"""The dashboard's alarm pages (docs/alarms.md): the alarms a login may see, newest first,
with an ack button; one alarm with every step of its escalation. An operator with the
dashboard open counts as available for alarms (dashboard/__init__.py), and the dashboard is
an alarm channel: the header shows the open alarms and this page lists them."""

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse

from .. import escalation
from .pages import checked_form, current, login_redirect, page, refused

router = APIRouter(prefix="/ui/alarms", include_in_schema=False)
REFRESH_S = 10      # the list reloads itself while an alarm is open


@router.get("")
async def alarm_list(request: Request):
    s, who = current(request)
    if who is None:
        return login_redirect(request)
    alarms = escalation.listing(request.app.state.hub.db, None, who.groups, 200)
    waiting = any(a["state"] != "acked" for a in alarms)
    return page(request, "alarms.html", who=who, csrf=s.csrf, alarms=alarms,
                refresh=REFRESH_S if waiting else None)


@router.get("/{alarm_id}")
async def alarm_page(request: Request, alarm_id: int):
    s, who = current(request)
    if who is None:
        return login_redirect(request)
    alarm = escalation.get(request.app.state.hub.db, alarm_id, steps=True)
    if alarm is None or not who.sees_group(alarm["grp"]):
        return refused(request, 404, "unknown alarm %d" % alarm_id)
    return page(request, "alarm.html", who=who, csrf=s.csrf, a=alarm)


@router.post("/{alarm_id}/ack")
async def alarm_ack(request: Request, alarm_id: int):
    s, who, f = await checked_form(request)
    hub = request.app.state.hub
    alarm = escalation.get(hub.db, alarm_id)
    if alarm is None or not who.sees_group(alarm["grp"]):
        return refused(request, 404, "unknown alarm %d" % alarm_id)
    try:
        escalation.ack(hub, alarm_id, who.name, "dashboard", hub.now())
    except escalation.EscalationError as e:
        return refused(request, e.status, str(e))
    return RedirectResponse("/ui/alarms/%d" % alarm_id, 303)


class DashboardChannel:
    """An alarm channel: reaches an operator who has the dashboard open (the alarm shows in
    the header and on /ui/alarms)."""
    name = "dashboard"

    def __init__(self, present):
        self.present = present      # (hub, operator, now) -> reason or None

    def notify(self, hub, operator, alarm):
        return self.present(hub, operator, hub.now()) is not None
