"""Shared fixtures, and the lane rule: every test carries exactly one lane marker (unit,
system, root or slow; pyproject.toml), set by its module's `pytestmark`."""

import os

import pytest

from lab import runner

os.environ.setdefault("COLUMNS", "200")   # rich tables as wide as a real terminal, under xdist too

LANES = ("unit", "system", "root", "slow")


def lanes_of(item):
    return [m.name for m in item.iter_markers() if m.name in LANES]


def pytest_collection_modifyitems(config, items):
    wrong = ["%s: %s" % (item.nodeid, lanes_of(item) or "no lane") for item in items
             if len(lanes_of(item)) != 1]
    if wrong:
        raise pytest.UsageError("every test needs exactly one lane marker (%s):\n  %s"
                                % (", ".join(LANES), "\n  ".join(wrong)))


@pytest.fixture(params=runner.INTERPRETERS)
def interpreter(request):
    return request.param


@pytest.fixture(scope="session", params=("http", "mqtt"))
def env(request, tmp_path_factory):
    """The end-to-end lab (host_tests/e2e_env.py), shared by the test_e2e*.py modules."""
    import e2e_env
    yield from e2e_env.make_env(request.param, tmp_path_factory)
