import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

import fw  # noqa: E402


@pytest.fixture(params=fw.INTERPRETERS)
def interpreter(request):
    return request.param
