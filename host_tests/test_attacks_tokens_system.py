"""Tokens and the audit log on the real `backchannel serve` and CLI (issue 12, "Roles and
tokens"): an admin revokes a leaked token with `backchannel token revoke` while the head-end
runs, and the holder is refused at once, exactly as an unknown token; `backchannel audit`
shows who did what, including the refusal. In-process attacks: test_attacks_tokens.py."""

import os
import subprocess
import sys

import pytest

from lab import processes

pytestmark = pytest.mark.system


def cli(he, token, *args):
    env = dict(os.environ, BACKCHANNEL_URL=he.url, BACKCHANNEL_TOKEN=token)
    return subprocess.run([sys.executable, "-m", "headend", *args], capture_output=True,
                          text=True, timeout=60, env=env)


def test_a_token_revoked_while_the_head_end_runs_is_refused_at_once(tmp_path):
    he = processes.Headend(tmp_path)
    he.add_device("meter-a")
    admin = he.add_token("ada", "admin")
    leaked = he.cli("token", "create", "field-laptop", "--role", "operator",
                    "--expires-in", "30d", "--db", he.db).split()[-1]
    he.start()
    try:
        sent = cli(he, leaked, "send", "meter-a", "relay", '{"state": "open"}')
        assert sent.returncode == 0, sent.stderr
        assert "revoked" in he.cli("token", "revoke", "field-laptop", "--db", he.db)
        again = cli(he, leaked, "send", "meter-a", "relay", '{"state": "closed"}')
        unknown = cli(he, "never-issued-token-0123456789", "send", "meter-a", "read")
        assert again.returncode != 0 and "Traceback" not in again.stderr
        assert again.stderr == unknown.stderr and "401" in again.stderr, again.stderr
        listing = he.cli("token", "list", "--db", he.db)
        assert "field-laptop" in listing and "revoked" in listing and leaked not in listing
        log = cli(he, admin, "audit", "--target", "device:meter-a")
        assert log.returncode == 0, log.stderr
        rows = [r.split() for r in log.stdout.splitlines()]     # newest first
        assert [r[2:7] for r in rows] == [
            ["field-laptop", "operator", "add_work", "device:meter-a", "ok"],
            [rows[1][2], "console", "add_device", "device:meter-a", "ok"]], log.stdout
        assert rows[1][2].startswith("cli:")
        denied = cli(he, leaked, "audit")
        assert denied.returncode != 0 and "401" in denied.stderr
    finally:
        he.kill()
