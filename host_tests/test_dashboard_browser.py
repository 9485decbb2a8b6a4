"""The dashboard in a real browser (Debian's chromium, headless, driven by selenium through
chromium-driver) against a real head-end process and the simulated meter on MicroPython:
log in, see the fleet, a new reading arrives live, send `read` and see the result, a group
command's outcomes fill in, a note that tries to inject script stays text, a form without
its CSRF token is refused, and logging out ends access. Screenshots go to
.build/screenshots/ (key ones are in docs/screenshots/)."""

import os
import shutil
import time
from pathlib import Path

import pytest

from lab import processes

pytestmark = pytest.mark.system
ROOT = Path(__file__).resolve().parent.parent
SHOTS = ROOT / ".build" / "screenshots"
CHROMIUM = shutil.which("chromium")
DRIVER = shutil.which("chromedriver")
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run",
         "--window-size=1280,1400")
NOTE = '<script>document.title="owned"</script><img src=x onerror="document.title=\'owned\'">'


def _need_browser():
    if CHROMIUM and DRIVER:
        return
    reason = "chromium and chromium-driver are not installed (.ci/run installs them)"
    if os.environ.get("CI") == "true":
        pytest.fail(reason)
    pytest.skip(reason)


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    _need_browser()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    work = tmp_path_factory.mktemp("dashboard")
    he = processes.Headend(work)
    key = he.add_device("sim-meter-1")
    token = he.add_token("alice", "operator")
    he.start()
    meter = processes.Meter(work, "sim-meter-1", key, he.url).start()
    api = he.api(token)
    processes.wait_until(lambda: api.get("/v1/devices/sim-meter-1/readings").json(), 60,
                         "the first reading from the sim meter")
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for flag in FLAGS:
        opts.add_argument(flag)
    driver = webdriver.Chrome(service=Service(DRIVER), options=opts)
    driver.implicitly_wait(0)
    SHOTS.mkdir(parents=True, exist_ok=True)
    try:
        yield {"headend": he, "api": api, "token": token, "driver": driver, "url": he.url}
    finally:
        driver.quit()
        meter.kill()
        he.kill()


def wait_for(driver, predicate, timeout, what):
    """Poll predicate; pages that refresh themselves (work, group command) make elements go
    missing or stale between a find and a read: that is "not yet". Chromedriver reports an
    element read while its page is replaced as an "unknown error" ("Node with given id does
    not belong to the document"), not as a stale element: that too."""
    from selenium.common.exceptions import (
        NoSuchElementException,
        StaleElementReferenceException,
        WebDriverException,
    )
    from selenium.webdriver.support.ui import WebDriverWait

    def attempt(d):
        try:
            return predicate(d)
        except (NoSuchElementException, StaleElementReferenceException):
            raise
        except WebDriverException as e:
            if "does not belong to the document" in str(e):
                return False
            raise
    return WebDriverWait(driver, timeout, poll_frequency=0.1,
                         ignored_exceptions=(NoSuchElementException,
                                             StaleElementReferenceException)).until(
        attempt, message="timed out waiting for %s" % what)


def by_id(driver, name):
    from selenium.webdriver.common.by import By
    return driver.find_element(By.ID, name)


def shot(driver, name):
    driver.save_screenshot(str(SHOTS / name))


def log_in(site):
    d = site["driver"]
    d.get(site["url"] + "/ui/")
    wait_for(d, lambda d: "/ui/login" in d.current_url, 10, "the login page")
    by_id(d, "token").send_keys(site["token"])
    by_id(d, "login").submit()
    wait_for(d, lambda d: d.current_url.endswith("/ui/"), 10, "the fleet page")


def open_page(site, path):
    """Go to path, logging in first if the session is not there (each test stands alone,
    as when xdist hands this module's tests to different workers)."""
    d = site["driver"]
    d.get(site["url"] + path)
    if "/ui/login" in d.current_url:
        by_id(d, "token").send_keys(site["token"])
        by_id(d, "login").submit()
        wait_for(d, lambda d: "/ui/login" not in d.current_url, 10, "the login to go through")
    assert d.current_url.split("?")[0] == site["url"] + path


def test_1_log_in_and_see_the_fleet(site):
    d = site["driver"]
    log_in(site)
    row = wait_for(d, lambda d: d.find_elements("css selector", 'tr[data-meter="sim-meter-1"]'),
                   10, "the meter's row")[0]
    assert "available" in row.text and "http" in row.text
    assert "alice" in by_id(d, "logout").find_element("xpath", "../..").text
    shot(d, "fleet.png")


def test_2_a_new_reading_appears(site):
    d = site["driver"]
    open_page(site, "/ui/meters/sim-meter-1")
    opened = time.time()
    wait_for(d, lambda d: int(by_id(d, "live-count").text) >= 1, 15, "a live reading")
    arrived = time.time()
    newest = site["api"].get("/v1/devices/sim-meter-1/readings?limit=1").json()[0]
    volts = float(by_id(d, "live-vrms").text)
    assert volts == pytest.approx(newest["body"]["vrms"], abs=2)
    # the reading's time (the meter's clock, same host) to the page showing it
    print("\ndashboard: first live reading %.2f s after the page opened; newest reading "
          "stored %.2f s before it was on the page"
          % (arrived - opened, arrived - newest["received"]))
    assert arrived - newest["received"] < 5
    wait_for(d, lambda d: int(by_id(d, "live-count").text) >= 3, 15, "three live readings")
    assert d.find_elements("css selector", "#plots .uplot"), "no uPlot charts on the page"
    shot(d, "meter.png")


def test_3_send_read_and_see_the_result(site):
    d = site["driver"]
    from selenium.webdriver.support.ui import Select
    open_page(site, "/ui/meters/sim-meter-1")
    Select(by_id(d, "op")).select_by_visible_text("read")
    by_id(d, "send").submit()
    wait_for(d, lambda d: "/ui/work/" in d.current_url, 10, "the work page")
    wait_for(d, lambda d: by_id(d, "status").text == "done", 30, "the read's outcome")
    result = wait_for(d, lambda d: by_id(d, "result").text, 10, "the result")
    assert "reading.vrms" in result and "registers.import_wh" in result
    shot(d, "work.png")


def test_3b_a_group_commands_outcomes_fill_in(site):
    d = site["driver"]
    from selenium.webdriver.support.ui import Select
    r = site["api"].post("/v1/groups", json={"name": "sim", "members": ["sim-meter-1"]})
    assert r.status_code == 201, r.text
    open_page(site, "/ui/groups")
    d.find_element("link text", "sim").click()
    Select(by_id(d, "op")).select_by_visible_text("read")
    by_id(d, "group-send").submit()
    wait_for(d, lambda d: "/commands/" in d.current_url, 10, "the group command page")
    wait_for(d, lambda d: d.find_elements("id", "all-final"), 30, "every outcome")
    row = wait_for(d, lambda d: d.find_element(
        "css selector", '#outcomes tr[data-meter="sim-meter-1"]').text, 10, "the outcome row")
    # the read result, as far as the cell shows it: its head, whatever keys come first
    # (the result grows: presence, heap, relay, reading, ...)
    assert 'done {"' in row and any(
        key in row for key in ('"presence"', '"uptime_s"', '"reading"', '"version"')), row
    shot(d, "group.png")


def note_text(d):
    notes = d.find_elements("css selector", 'tr[data-meter="sim-meter-1"] .note')
    return notes[0].text if notes else None


def test_4_a_note_that_injects_script_stays_text(site):
    """The fleet page, left open, updates itself with the meter's new presence; the note
    that tries to inject script is shown as text there and on reloaded pages."""
    d = site["driver"]
    open_page(site, "/ui/")
    assert note_text(d) == ""
    w = processes.run_work(site["api"], "sim-meter-1", "set_presence",
                           {"state": "available_restricted", "note": NOTE})
    assert w["status"] == "done", w
    wait_for(d, lambda d: note_text(d) == NOTE, 20, "the fleet page to show the new note")
    row = d.find_element("css selector", 'tr[data-meter="sim-meter-1"]')
    assert "available_restricted" in row.text
    assert d.title != "owned" and not d.find_elements("css selector", "main img")
    shot(d, "fleet_note.png")
    for path in ("/ui/", "/ui/meters/sim-meter-1"):
        d.get(site["url"] + path)
        note = wait_for(d, lambda d: d.find_elements("css selector", ".note"), 10, "the note")
        assert note[0].text == NOTE                       # shown as the text it is
        assert d.title != "owned" and not d.find_elements("css selector", "main img")
    processes.run_work(site["api"], "sim-meter-1", "set_presence", {"state": "available"})


def test_4b_presence_history_and_updates_pages(site):
    d = site["driver"]
    open_page(site, "/ui/presence")
    rows = wait_for(d, lambda d: d.find_elements("css selector", "#presence-history tbody tr"),
                    10, "the presence history")
    assert any("sim-meter-1" in r.text for r in rows)
    assert "available" in by_id(d, "counts").text
    shot(d, "presence.png")
    open_page(site, "/ui/updates")
    assert by_id(d, "rollouts").text        # a header and a row (or the "none yet" line)
    d.find_element("link text", "Alarms").click()
    wait_for(d, lambda d: d.current_url.endswith("/ui/alarms"), 10, "the alarms page")
    assert "no alarms" in by_id(d, "alarms").text


def test_5_a_form_without_its_csrf_token_is_refused(site):
    d = site["driver"]
    open_page(site, "/ui/meters/sim-meter-1")
    before = len(site["api"].get("/v1/devices/sim-meter-1/work").json())
    d.execute_script('document.querySelector("#send input[name=csrf]").remove()')
    by_id(d, "send").submit()
    wait_for(d, lambda d: d.find_elements("id", "error"), 10, "the refusal")
    assert "CSRF" in by_id(d, "error").text and "403" in d.find_element("tag name", "h1").text
    assert len(site["api"].get("/v1/devices/sim-meter-1/work").json()) == before


def test_6_logging_out_ends_access(site):
    d = site["driver"]
    open_page(site, "/ui/")
    by_id(d, "logout").click()
    wait_for(d, lambda d: "/ui/login" in d.current_url, 10, "the login page")
    d.get(site["url"] + "/ui/meters/sim-meter-1")
    assert "/ui/login" in d.current_url
    d.get(site["url"] + "/ui/meters/sim-meter-1/readings.json")
    assert "log in first" in d.page_source
