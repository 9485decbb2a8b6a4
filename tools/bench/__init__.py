"""`make bench`: speed and memory figures, each beside a baseline measured in the same run
(__main__.py); the firmware-side scripts end in _mp.py."""
