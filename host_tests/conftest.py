import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

import fw  # noqa: E402


@pytest.fixture(params=fw.INTERPRETERS)
def interpreter(request):
    return request.param


@pytest.fixture(scope="session", params=("http", "mqtt"))
def env(request, tmp_path_factory):
    """The end-to-end lab (host_tests/e2e_env.py), shared by the test_e2e*.py modules."""
    import e2e_env
    yield from e2e_env.make_env(request.param, tmp_path_factory)
