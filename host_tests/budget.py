"""Example budgets of the property tests. `make test-fast` sets BC_FAST=1: every property
test then draws a twentieth of its examples (at least 3), so the edit-test loop still touches
every module; `make test` runs the full budgets."""

import os

FAST = os.environ.get("BC_FAST") == "1"


def examples(n):
    return max(3, n // 20) if FAST else n
