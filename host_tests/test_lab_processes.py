"""tools/lab/processes.py: a head-end process that never answers its health check within
the start's timeout is killed, not left running after its test (a loaded run left dozens
of `headend serve` processes behind)."""

import pytest

from lab import processes

pytestmark = pytest.mark.system


def test_a_head_end_that_never_answers_is_killed(tmp_path):
    he = processes.Headend(tmp_path)
    with pytest.raises(AssertionError, match="timed out"):
        he.start(timeout=0.01)          # Python cannot start a server in 10 ms
    assert he.proc.poll() is not None, "the head-end outlived its failed start"
