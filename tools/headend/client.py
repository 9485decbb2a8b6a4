"""The CLI's HTTP client for the operator API: one-line errors, never tracebacks."""

import json
import os
import re
import ssl
import time
import uuid

import click
import httpx

# POSTs the head-end makes idempotent with an Idempotency-Key: safe to send twice
_IDEMPOTENT = re.compile(r"^/v1/(devices|groups)/[^/]+/work$")
RETRY_PAUSE_S = 1.0


class CliError(click.ClickException):
    """Printed by cli.main as `backchannel: error: <message>`."""


class UsageError(CliError):
    """Bad input on the command line: exit 2, as click's own usage errors."""
    exit_code = 2


class ConnectionLost(CliError):
    """No answer came: the request may or may not have been carried out."""


class Client:
    def __init__(self, url, token, cacert=None, timeout=30.0):
        if not url:
            raise CliError("no head-end URL: use --url or BACKCHANNEL_URL")
        if not token:
            raise CliError("no token: use --token or BACKCHANNEL_TOKEN")
        self.url = url.rstrip("/")
        self.http = httpx.Client(base_url=self.url, timeout=timeout, verify=_verify(cacert),
                                 headers={"Authorization": "Bearer %s" % token})

    def call(self, method, path, body=None, params=None, headers=None):
        try:
            r = self.http.request(method, path, json=body, params=params, headers=headers)
        except httpx.ConnectError as e:
            raise ConnectionLost("cannot connect to %s: %s" % (self.url, _short(e))) from None
        except httpx.TimeoutException:
            raise ConnectionLost("timed out talking to %s" % self.url) from None
        except httpx.TransportError as e:
            raise ConnectionLost("request to %s failed: %s" % (self.url, _short(e))) from None
        except httpx.HTTPError as e:
            raise CliError("request to %s failed: %s" % (self.url, _short(e))) from None
        try:
            data = r.json()
        except ValueError:
            data = None
        if r.status_code >= 400:
            reason = data.get("error") if isinstance(data, dict) else None
            raise CliError("HTTP %d: %s" % (r.status_code, reason or r.reason_phrase))
        return data

    def get(self, path, **params):
        return self.call("GET", path, params=params or None)

    def post(self, path, body):
        """POST; work POSTs carry a fresh Idempotency-Key and are retried once with the same
        key when the connection is lost, so a reply lost to a crash never queues twice."""
        if not _IDEMPOTENT.match(path):
            return self.call("POST", path, body)
        headers = {"Idempotency-Key": uuid.uuid4().hex}
        try:
            return self.call("POST", path, body, headers=headers)
        except ConnectionLost:
            pass
        time.sleep(RETRY_PAUSE_S)
        return self.call("POST", path, body, headers=headers)

    def put(self, path, body):
        return self.call("PUT", path, body)

    def delete(self, path):
        return self.call("DELETE", path)

    def patch(self, path, body):
        return self.call("PATCH", path, body)

    def stream(self, path, out, **params):
        """GET a text body (an export) and write it to `out` as it arrives."""
        try:
            with self.http.stream("GET", path, params=params) as r:
                if r.status_code >= 400:
                    r.read()
                    try:
                        reason = r.json().get("error")
                    except (ValueError, AttributeError):
                        reason = None
                    raise CliError("HTTP %d: %s" % (r.status_code, reason or r.reason_phrase))
                for piece in r.iter_text():
                    out.write(piece)
        except httpx.TimeoutException:
            raise ConnectionLost("timed out talking to %s" % self.url) from None
        except httpx.HTTPError as e:
            raise ConnectionLost("request to %s failed: %s" % (self.url, _short(e))) from None


def _short(e):
    return str(e).splitlines()[0] if str(e) else type(e).__name__


def _verify(cacert):
    """The TLS context that trusts --cacert (default: the system's CAs), or a one-line error."""
    if not cacert:
        return True
    if not os.path.isfile(cacert):
        raise UsageError("--cacert %s: no such file" % cacert)
    try:
        return ssl.create_default_context(cafile=cacert)
    except (OSError, ssl.SSLError) as e:
        raise UsageError("--cacert %s: not a readable PEM CA certificate (%s)"
                         % (cacert, _short(e))) from None


def _no_constant(name):
    raise ValueError("%s is not JSON" % name)


def parse_args(text):
    """ARGS_JSON for a work item: a JSON object (default {}), strict JSON (no NaN or
    Infinity, which Python's json would otherwise accept and then fail to send)."""
    if text is None:
        return {}
    try:
        args = json.loads(text, parse_constant=_no_constant)
    except ValueError as e:
        raise UsageError("ARGS must be a JSON object: %s" % e) from None
    if not isinstance(args, dict):
        raise UsageError("ARGS must be a JSON object, got %s" % type(args).__name__)
    return args
