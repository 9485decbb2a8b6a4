"""Statistics shared by the benches."""


def percentile(xs, p, empty=None):
    """Linear interpolation between closest ranks (numpy's default); `empty` for no data."""
    xs = sorted(xs)
    if not xs:
        return empty
    k = (len(xs) - 1) * p / 100.0
    lo = int(k)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (k - lo)
