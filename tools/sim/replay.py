"""Replay a recorded waveform (CSV or COMTRADE) through the firmware's metering engine.

    tools/replay FILE [--nominal 230] [--frequency 50] [--interpreter micropython|cpython]
                      [--events-start] [--v-channel NAME] [--i-channel NAME]
                      [--pt-ratio R] [--ct-ratio R]

Prints one JSON object per line as the engine produces them: a reading per second of
signal and an event per dip, swell or interruption (event_start notices with
--events-start). Times ("t", "start_s") are on the file's time axis. Values are primary:
--pt-ratio and --ct-ratio scale a recording of instrument-transformer secondaries up, and
--nominal is the primary declared voltage (up to 1 MV; above 500 V the engine meters a
scaled copy, as a meter behind a voltage transformer does, and readings are scaled back).
Recordings with more than 128 samples per cycle are low-pass filtered and decimated by an
integer factor (see waveform.decimate). ADC gains are chosen from the data so the peaks fit
the board's virtual 12-bit ADC with 10% margin.
"""

import json
import math
import os
import signal
import subprocess
import sys
import threading

import click
import comtrade  # noqa: F401  (checked here so a missing package is caught up front)
import numpy as np

from lab import runner
from sim import METERING_MAIN, waveform, waveform3

MAX_UNITS_PER_MWH = runner.import_firmware("energy").MAX_UNITS_PER_MWH

MIN_SPC = 32
MAX_SPC = 128
ADC_HALF_SPAN = 2047
CHUNK_PAIRS = 8192
READING_KEYS = ("type", "t", "vrms", "irms", "p", "q", "s", "pf", "f", "thd_v", "thd_i")
ENGINE_MAX_NOMINAL = 500.0   # firmware config's nominal_v range
ENGINE_NOMINAL = 230.0       # what a higher nominal is scaled to
ENGINE_MAX_I_PEAK = 1000.0   # A: larger currents are scaled down by a power of ten
# record keys by what scales them back to primary values
V_KEYS = ("vrms", "v1", "vmin", "vmax", "residual_v")
I_KEYS = ("irms", "i1", "imin", "imax")
POWER_KEYS = ("p", "q", "s", "n", "d", "p1", "pmin", "pmax", "demand_w", "import_wh",
              "export_wh", "import_varh", "export_varh")
PHASE_KEYS = ("a", "b", "c")
EVENT_KEYS = ("type", "kind", "start_s", "duration_ms", "residual_v", "extreme_pct", "category")


class ReplayError(Exception):
    def __init__(self, message, code=2):
        super().__init__(message)
        self.code = code


def prepare(path, nominal, frequency, v_channel=None, i_channel=None):
    """Load and condition a waveform: (rate, v, i, t0, v_gain, i_gain)."""
    rate, v, i, t0 = waveform.load_timed(path, v_channel, i_channel)
    return condition(path, rate, v, i, t0, nominal, frequency)


def condition(path, rate, v, i, t0, nominal, frequency):
    """Decimate to what the engine takes and choose its ADC gains: (rate, v, i, t0, v_gain,
    i_gain)."""
    spc = rate / frequency
    if spc < MIN_SPC:
        raise ReplayError("%s: %.6g Hz sampling gives %.1f samples per cycle at %d Hz; the "
                          "engine needs at least %d (%.0f Hz)"
                          % (path, rate, spc, frequency, MIN_SPC, MIN_SPC * frequency))
    factor = max(1, math.ceil(spc / MAX_SPC - 1e-9))
    if factor > 1:
        v = waveform.decimate(v, factor)
        i = waveform.decimate(i, factor)
        t0 += waveform.decimation_delay(factor) / rate
        rate /= factor
    v_peak = float(np.max(np.abs(v))) if len(v) else 0.0
    i_peak = float(np.max(np.abs(i))) if len(i) else 0.0
    v_gain = max(v_peak * 1.1, nominal * math.sqrt(2) * 1.6) / ADC_HALF_SPAN
    i_gain = max(i_peak * 1.1, 1e-3) / ADC_HALF_SPAN
    # The engine's energy registers need <= MAX_UNITS_PER_MWH kernel units per mWh
    # (firmware/energy.py), so tiny currents (or none) get a coarser current gain.
    i_gain = max(i_gain, 1.01 * 3.6 / (v_gain * MAX_UNITS_PER_MWH / rate))
    return rate, v, i, t0, v_gain, i_gain


def firmware_command(interpreter, rate, v_gain, i_gain, config, delay_us=0.0):
    """The metering engine (sim/metering_main.py --replay) reading float32 (v, i) pairs."""
    return runner.command(interpreter, METERING_MAIN, "--replay", "rate=%r" % float(rate),
                          "v_gain=%r" % float(v_gain), "i_gain=%r" % float(i_gain),
                          "delay_us=%r" % float(delay_us), "config=" + json.dumps(config))


def samples_bytes(v, i):
    """Little-endian float32 (v, i) pairs, as metering_main.py --replay reads them."""
    data = np.empty(2 * len(v), dtype="<f4")
    data[0::2] = v
    data[1::2] = i
    return data.tobytes()


def replay_samples(v, i, rate, v_gain, i_gain, interpreter="micropython", delay_us=0.0,
                   config=None):
    """Feed physical samples (volts, amps) through the sim board's virtual 12-bit ADC into
    the firmware metering engine. Returns the JSON records it printed."""
    cmd, env = firmware_command(interpreter, rate, v_gain, i_gain, config or {}, delay_us)
    p = subprocess.run(cmd, input=samples_bytes(v, i), capture_output=True, env=env,
                       timeout=300)
    if p.returncode != 0:
        raise runner.RunnerError("%s failed (%d):\n%s" % (cmd, p.returncode, p.stderr.decode()))
    return runner.records(p.stdout.decode())


def replay_channels(channels, rate, v_gain, i_gain, interpreter="micropython", config=None,
                    offsets_us=None):
    """Polyphase or multi-circuit replay (config["wiring"] not 1p2w): channels are physical
    samples in the wiring's channel order (firmware/polyphase.py), offsets_us each channel's
    sampling instant in the round-robin frame. Returns the JSON records printed."""
    data = np.empty((len(channels[0]), len(channels)), dtype="<f4")
    for j, x in enumerate(channels):
        data[:, j] = x
    args = ["--replay", "rate=%r" % float(rate), "v_gain=%r" % float(v_gain),
            "i_gain=%r" % float(i_gain), "config=" + json.dumps(config or {})]
    if offsets_us:
        args.append("offsets_us=" + ",".join("%r" % float(x) for x in offsets_us))
    cmd, env = runner.command(interpreter, METERING_MAIN, *args)
    p = subprocess.run(cmd, input=data.tobytes(), capture_output=True, env=env, timeout=600)
    if p.returncode != 0:
        raise runner.RunnerError("%s failed (%d):\n%s%s" % (cmd, p.returncode, p.stderr.decode(),
                                                            p.stdout.decode()[-2000:]))
    return runner.records(p.stdout.decode())


def _feed(proc, v, i, data=None):
    raw = memoryview(samples_bytes(v, i) if data is None else data)
    step = 8 * CHUNK_PAIRS
    try:
        for k in range(0, len(raw), step):
            proc.stdin.write(raw[k:k + step])
        proc.stdin.close()
    except (BrokenPipeError, ValueError, OSError):
        pass  # the engine stopped early; its exit status tells why


class Scale:
    """What the engine meters is primary / (v, i): how to turn its records back."""

    def __init__(self, v=1.0, i=1.0):
        self.v, self.i = v, i

    @classmethod
    def choose(cls, nominal, i_peak):
        v = nominal / ENGINE_NOMINAL if nominal > ENGINE_MAX_NOMINAL else 1.0
        i = 1.0
        while i_peak / i > ENGINE_MAX_I_PEAK:
            i *= 10.0
        return cls(v, i)

    def to_primary(self, record):
        for key in PHASE_KEYS:  # three-phase readings: per-phase objects
            if isinstance(record.get(key), dict):
                self.to_primary(record[key])
        for keys, k in ((V_KEYS, self.v), (I_KEYS, self.i), (POWER_KEYS, self.v * self.i)):
            if k != 1.0:
                for key in keys:
                    if isinstance(record.get(key), (int, float)):
                        record[key] = record[key] * k
        return record


def _tidy(record, t0, events_start, scale=None):
    """The record as it should be printed, or None to drop it."""
    kind = record.get("type")
    if kind == "event_start" and not events_start:
        return None
    if scale is not None:
        scale.to_primary(record)
    for key in ("t", "start_s"):
        if isinstance(record.get(key), (int, float)):
            record[key] = record[key] + t0
    for key in PHASE_KEYS:
        if isinstance(record.get(key), dict) and isinstance(record[key].get("t"), (int, float)):
            record[key]["t"] += t0
    first = READING_KEYS if kind == "reading" else EVENT_KEYS if kind == "event" else ("type",)
    ordered = _ordered(record, first + ("u2_pct", "sequence", "wiring"))
    for key in PHASE_KEYS:  # three phases: each phase's keys in the same order, last
        if isinstance(record.get(key), dict):
            ordered[key] = _ordered(ordered.pop(key), READING_KEYS)
    return ordered


def _ordered(record, first):
    ordered = {k: record[k] for k in first if k in record}
    ordered.update((k, val) for k, val in record.items() if k not in ordered)
    return ordered


def replay(cmd, env, v, i, t0, events_start, out=sys.stdout, scale=None, data=None):
    """Stream (v, i) pairs, or `data` (frames already packed), into the engine; print its
    records, tidied."""
    proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=env)
    errors = []
    other = []  # stdout lines that are not JSON (MicroPython prints tracebacks there)
    threads = [threading.Thread(target=_feed, args=(proc, v, i, data), daemon=True),
               threading.Thread(target=lambda: errors.append(proc.stderr.read()), daemon=True)]
    for th in threads:
        th.start()
    try:
        for line in proc.stdout:
            line = line.decode(errors="replace").strip()
            if not line:
                continue
            try:
                record = json.loads(line)
            except ValueError:
                record = None
            if not isinstance(record, dict):
                other.append(line)
                continue
            record = _tidy(record, t0, events_start, scale)
            if record is not None:
                out.write(json.dumps(record) + "\n")
                out.flush()
    except BrokenPipeError:
        # Our reader went away (e.g. `| head`): stop the engine and finish quietly.
        proc.kill()
        proc.wait()
        os.dup2(os.open(os.devnull, os.O_WRONLY), out.fileno())
        return
    except BaseException:
        proc.kill()
        raise
    finally:
        code = proc.wait()
        for th in threads:
            th.join(timeout=5)
    text = (errors[0] if errors else b"").decode(errors="replace").strip().splitlines()
    text = other + text
    if code != 0:
        how = "status %d" % code if code > 0 else "signal %s" % _signal_name(-code)
        raise ReplayError("the metering engine (%s) failed with %s: %s"
                          % (os.path.basename(cmd[0]), how, text[-1] if text else "no message"),
                          code=1)
    for line in text:
        sys.stderr.write("replay: engine: %s\n" % line)


_SUMMARY, _USAGE, _DETAILS = __doc__.split("\n\n", 2)


def _signal_name(number):
    try:
        return signal.Signals(number).name
    except ValueError:
        return str(number)


@click.command(context_settings={"help_option_names": ["-h", "--help"]},
               help=_SUMMARY + "\n\n" + _DETAILS)
@click.argument("file")
@click.option("--nominal", type=click.FloatRange(50, 1e6), default=230.0, show_default=True,
              help="Declared voltage, V rms, primary.")
@click.option("--pt-ratio", type=click.FloatRange(min=1e-3, max=1e5), default=1.0,
              show_default=True, help="Voltage transformer ratio: the file's volts times this "
              "are primary volts.")
@click.option("--ct-ratio", type=click.FloatRange(min=1e-3, max=1e5), default=1.0,
              show_default=True, help="Current transformer ratio: the file's amps times this "
              "are primary amps.")
@click.option("--frequency", type=click.Choice(["50", "60"]), default="50", show_default=True,
              help="Nominal frequency, Hz.")
@click.option("--interpreter", type=click.Choice(list(runner.INTERPRETERS)),
              default="micropython", show_default=True,
              help="Run the engine under the MicroPython unix port, this CPython, or the "
                   "board build (32-bit, float32: as an ESP32 or a Pico W computes).")
@click.option("--events-start", is_flag=True, help="Also print event_start notices.")
@click.option("--v-channel", metavar="NAME", help="COMTRADE voltage channel (default: by unit).")
@click.option("--i-channel", metavar="NAME", help="COMTRADE current channel (default: by unit).")
def cli(file, nominal, frequency, interpreter, events_start, v_channel, i_channel, pt_ratio,
        ct_ratio):
    frequency = int(frequency)
    if not (v_channel or i_channel) and waveform3.is_three_phase(file):
        from sim import replay3

        try:
            return replay3.run(file, nominal, frequency, interpreter, events_start, pt_ratio,
                               ct_ratio)
        except waveform.WaveformError as e:
            raise ReplayError(str(e)) from None
    try:
        rate, v, i, t0 = waveform.load_timed(file, v_channel, i_channel)
    except waveform.WaveformError as e:
        raise ReplayError(str(e)) from None
    v = v * pt_ratio
    i = i * ct_ratio
    scale = Scale.choose(nominal, float(np.max(np.abs(i))) if len(i) else 0.0)
    try:
        rate, v, i, t0, v_gain, i_gain = condition(file, rate, v / scale.v, i / scale.i, t0,
                                                   nominal / scale.v, frequency)
    except waveform.WaveformError as e:
        raise ReplayError(str(e)) from None
    config = {"nominal_v": nominal / scale.v, "frequency": frequency}
    try:
        cmd, env = firmware_command(interpreter, rate, v_gain, i_gain, config)
    except runner.RunnerError as e:
        raise ReplayError(str(e)) from None
    replay(cmd, env, v, i, t0, events_start, scale=scale)


def _fail(message, code):
    sys.stderr.write("replay: error: %s\n" % " ".join(str(message).split()))
    return code


def main(argv=None):
    try:
        cli.main(argv, prog_name="replay", standalone_mode=False)
    except ReplayError as e:
        return _fail(e, e.code)
    except click.exceptions.Abort:
        return 130
    except click.ClickException as e:
        return _fail("%s (see replay --help)" % e.format_message(), 2)
    except MemoryError:
        return _fail("out of memory loading the waveform", 1)
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
