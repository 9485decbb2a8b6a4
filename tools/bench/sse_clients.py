"""Live dashboard streams for the dashboard-at-scale bench (bench/dashboard_scale.py): N
lightweight clients (httpx, no browser), each logging in to the dashboard with its own
session as a browser would (login form, CSRF, session cookie) and holding the meter page's
server-sent event stream (/ui/meters/{id}/stream) open.

Its own process, so that parsing the streams does not run on the bench's exchange client's
event loop. stdout, one JSON line each: {"ready": N} once every stream has answered, then
{"d": device, "t": reading's t, "at": wall time of arrival} per `reading` event. Runs until
SIGTERM or SIGINT.

    .venv/bin/python -m bench.sse_clients --url http://127.0.0.1:8080 --token T m00000 m00001
"""

import argparse
import asyncio
import json
import re
import signal
import sys
import time

CSRF = re.compile(r'name="csrf" value="([^"]+)"')


def csrf_of(html):
    m = CSRF.search(html)
    if m is None:
        raise RuntimeError("no CSRF field on the login page")
    return m.group(1)


def login_form(token, login_html):
    """The login form's fields, as the browser posts them."""
    return {"csrf": csrf_of(login_html), "token": token, "next": "/ui/"}


def check_login(r):
    if r.status_code != 303 or "bc_session" not in r.cookies:
        raise RuntimeError("dashboard login refused: %d" % r.status_code)


async def follow(url, token, device, opened, out):
    import httpx
    async with httpx.AsyncClient(base_url=url, timeout=httpx.Timeout(30.0)) as c:
        page = await c.get("/ui/login")
        check_login(await c.post("/ui/login", data=login_form(token, page.text)))
        async with c.stream("GET", "/ui/meters/%s/stream" % device) as r:
            if r.status_code != 200:
                raise RuntimeError("stream %s: %d" % (device, r.status_code))
            event = None
            async for line in r.aiter_lines():
                if line.startswith("retry:"):
                    opened.release()
                elif line.startswith("event: "):
                    event = line[7:]
                elif line.startswith("data: ") and event == "reading":
                    at = time.time()
                    out.write('{"d": "%s", "t": %s, "at": %.6f}\n'
                              % (device, json.dumps(json.loads(line[6:])["t"]), at))
                    out.flush()
                elif not line:
                    event = None


async def run(url, token, devices):
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    opened = asyncio.Semaphore(0)
    tasks = [asyncio.ensure_future(follow(url, token, d, opened, sys.stdout)) for d in devices]

    async def all_open():
        for _ in devices:
            await opened.acquire()
        sys.stdout.write('{"ready": %d}\n' % len(devices))
        sys.stdout.flush()

    ready = asyncio.ensure_future(all_open())
    waiting = asyncio.ensure_future(stop.wait())
    done, _ = await asyncio.wait([waiting, *tasks], return_when=asyncio.FIRST_COMPLETED)
    failed = [t for t in done if t is not waiting]
    for t in [ready, waiting, *tasks]:
        t.cancel()
    await asyncio.gather(ready, waiting, *tasks, return_exceptions=True)
    if failed and not stop.is_set():
        e = failed[0].exception() if not failed[0].cancelled() else None
        print("sse_clients: a stream ended: %s" % (e or "closed by the head-end"),
              file=sys.stderr)
        return 1
    return 0


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--url", required=True)
    ap.add_argument("--token", required=True, help="an operator token (logged in with)")
    ap.add_argument("devices", nargs="+", help="one stream per meter id")
    args = ap.parse_args(argv)
    try:
        return asyncio.run(run(args.url, args.token, args.devices))
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
