# The App's count of samples metered, as whole seconds plus milliseconds of signal. A 32-bit
# port's small ints end at 2**30: a plain sample counter passes that after 3.9 days at
# 3200 Hz and then allocates a long int on every block. Here every value stays a small int
# for 34 years (seconds) and the arithmetic is exact for a rate given as a ratio of ints.


class SampleCount:
    def __init__(self, num, den):
        """Rate num / den Hz; n * 1000 * den (n samples a block) must stay below 2**29."""
        self.num = num
        self.den = den
        self.seconds = 0    # whole seconds of signal
        self.ms = 0         # and milliseconds, 0..999
        self._frac = num // 2  # remainder, in 1 / (1000 * num) s: ms are rounded to nearest

    def add(self, n):
        """Count n more samples; returns the whole ms of signal they completed."""
        frac = self._frac + n * 1000 * self.den
        step = frac // self.num
        self._frac = frac - step * self.num
        ms = self.ms + step
        while ms >= 1000:
            ms -= 1000
            self.seconds += 1
        self.ms = ms
        return step

    def start_at(self, samples):
        """Set the count to `samples` (tests jump ahead with it; may allocate)."""
        whole = samples * 1000 * self.den + self.num // 2
        total_ms = whole // self.num
        self._frac = whole - total_ms * self.num
        self.seconds = total_ms // 1000
        self.ms = total_ms % 1000


def rate_ratio(board):
    """The board's sample rate as (num, den) ints: exact if the board says (rate_ratio),
    else the float rate to a milli-hertz."""
    r = getattr(board, "rate_ratio", None)
    if r is not None:
        return int(r[0]), int(r[1])
    return int(board.sample_rate * 1000 + 0.5), 1000
