"""`backchannel serve` logs to stderr as it is when a record comes (a test's captured stderr
closes after the test; writing there printed "--- Logging error ---" into later tests), and
a second serve in the same process adds no second handler."""

import io
import logging
import sys

import pytest

from headend.log_stderr import log_to_stderr

pytestmark = pytest.mark.unit


def test_records_go_to_the_stderr_of_the_moment_once(monkeypatch):
    logger = logging.getLogger("backchannel")
    monkeypatch.setattr(logger, "handlers", [])
    monkeypatch.setattr(logger, "level", logger.level)
    first = io.StringIO()
    monkeypatch.setattr(sys, "stderr", first)
    log_to_stderr("info")
    log_to_stderr("info")
    first.close()                                   # the first caller's stderr is gone
    later = io.StringIO()
    monkeypatch.setattr(sys, "stderr", later)
    logging.getLogger("backchannel.sweep").warning("leading %s with token %d", "sweep", 1)
    assert later.getvalue() == "WARNING   backchannel.sweep: leading sweep with token 1\n"
