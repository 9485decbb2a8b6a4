"""A meter that runs for days: the App's sample count stays a small int past 2**30 samples
(3.9 days at 3200 Hz), where a 32-bit port's small ints end, so the metering loop allocates
nothing per block (mp_scripts/long_run_alloc.py: the count jumped to 8 s before 2**30).
Before the fix every block allocated (a float for the save policy and the pacing, then a long
int for the counter)."""

from fractions import Fraction

import pytest

from lab import runner

pytestmark = pytest.mark.unit

DRIVER = runner.ROOT / "host_tests" / "mp_scripts" / "long_run_alloc.py"
SECONDS = 20
RATE = 3200


@pytest.fixture(scope="module", params=runner.MICROPYTHONS)
def run(request, tmp_path_factory):
    out = runner.run(request.param, DRIVER, tmp_path_factory.mktemp("lr"), SECONDS)
    return runner.records(out)[0]


def test_counts_past_2_30_samples(run):
    assert run["start"] < 2**30 < run["samples"]
    assert run["samples"] - run["start"] >= (SECONDS - 1) * RATE
    assert run["seconds"] == (run["start"] + SECONDS * RATE) // RATE


def test_no_allocation_per_block_past_2_30(run):
    blocks = run["bytes"]
    assert len(blocks) == SECONDS * RATE // 128
    quiet = [(k, b) for k, (b, flag) in enumerate(zip(blocks, run["flags"])) if not flag]
    assert len(quiet) >= len(blocks) * 9 // 10  # readings close once a second, saves rarer
    allocating = [(k, b) for k, b in quiet if b]
    assert not allocating, "blocks that allocated (block, bytes): %s" % allocating[:10]


def test_sample_count_is_exact_ms():
    # the count's ms match exact rational arithmetic, rounded to the nearest ms
    sample_count = runner.import_firmware("sample_count")
    for num, den in ((3200, 1), (3199871, 1000), (38400, 12)):
        c = sample_count.SampleCount(num, den)
        total = 0
        lead = 0
        for n in [128] * 3000 + [7, 128, 1, 100] * 50:
            total += n
            lead += c.add(n)
            exact = Fraction(total * den, num) * 1000
            assert c.seconds * 1000 + c.ms == lead == int(exact + Fraction(1, 2))
        c.start_at(2**40 + 5)
        assert c.seconds * 1000 + c.ms == int(Fraction((2**40 + 5) * den * 1000, num)
                                              + Fraction(1, 2))
