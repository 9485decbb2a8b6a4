"""The exchange request in pieces (comms, issue 11): each encoding's parts(), given the
outbox's JSON records as they are stored, spells what its encode() spells for the same
request with parsed items, and the HMAC over the pieces is the HMAC over their join; on
every interpreter (host_tests/mp_scripts/encode_parts.py)."""

import json

import pytest

from lab import runner

pytestmark = pytest.mark.unit

PARTS = runner.ROOT / "host_tests" / "mp_scripts" / "encode_parts.py"


def test_each_encoding_in_pieces_spells_and_signs_as_a_whole(interpreter):
    out = json.loads(runner.run(interpreter, PARTS))
    assert out["mismatches"] == [] and out["most_pieces"] >= 4, out
