"""The simulator: `make sim` (__main__.py), replay of recorded waveforms (replay.py,
waveform.py), the scenarios, and the two firmware-side entry points that run under
MicroPython: meter_main.py (the networked meter app on the simulated board) and
metering_main.py (metering alone, from a scenario or a replayed stream)."""

from pathlib import Path

HERE = Path(__file__).resolve().parent
METER_MAIN = HERE / "meter_main.py"
METERING_MAIN = HERE / "metering_main.py"
SCENARIOS = HERE / "scenarios"
