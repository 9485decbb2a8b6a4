# Signed firmware updates, meter side (docs/ota.md): the `update` op, the download over
# fetch/chunk, verification, the switch, and confirmation or rollback on probation.
#
# The job (state/update.json, a store record) moves: downloading -> installing -> gone.
#   downloading: files go to fw/stage-V/<path>; a file's size on flash is its resume offset
#     (an image's offset is kept in the job); `index` is the first file not yet hashed.
#   installing: every hash checked; stage-V renamed to fw/V and the pointer switched (or the
#     image partition set to boot); the app reboots once the `installing` item is acked.
# After the reboot the new version is on probation until its first healthy exchange.

import asyncio
import json
from binascii import a2b_base64

import fw_files
import fw_manifest
import fwboot
import store
import version as fwversion
from fw_image import ImageSink
from mpshim import ticks_diff, ticks_ms

FETCH_LEN = 4096  # block-aligned, so an image resumes on a flash block boundary
# A link whose round trip is dear asks for more at once (its `fetch_len`, a multiple of
# FETCH_LEN up to the head-end's cap, release_store.CHUNK_MAX): email (mail_comms.py)
ROLLED_BACK_IMAGE = "image not confirmed; the bootloader rolled back"

Refused = fw_manifest.Refused


class Updater:
    def __init__(self, app, base, state_dir):
        self.app = app
        self.fw = fwboot.fw_dir(base)
        self.base = base
        self.job_path = state_dir + "/update.json"
        sel = fwboot.selected
        self.booted = sel["version"] if sel else None  # fw/V this boot runs; None: factory
        self.running = self.booted or fwversion.VERSION
        self.job = None
        self.manifest = None
        self.image = ImageSink(app.board)  # an image release's writer
        self.reboot_seq = None      # reboot once the outbox acked this seq
        self.probation_until = None  # (ticks_ms at start, ms) while this version is unconfirmed
        self.decile = -1
        self.error = None
        if sel and sel["error"]:
            app.outbox.offer("notice", {"what": sel["error"], "count": 1})
        try:
            self._load()
        except OSError as exc:  # flash trouble must not keep the meter from metering
            self.error = "update state unusable: %s" % (exc,)
            app.outbox.offer("notice", {"what": self.error, "count": 1})

    # --- the op ---
    def start(self, text, sig):
        """Check an offered release; {"version", "state": "downloading"} or Refused."""
        busy = self.job["version"] if self.job else (self.running if self.probation_until
                                                      is not None else None)
        if busy is not None:
            raise Refused("update already in progress: %s" % (busy,))
        try:
            m = fw_manifest.check(self.app.cfg.get("update_key", ""), text, sig, self.running)
            if m["image"] and self.image.capacity() < m["total"]:
                raise Refused("bad manifest: image of %d bytes, partition holds %d"
                              % (m["total"], self.image.capacity()))
        except Refused as exc:
            self._item(_claimed(text), "rejected", reason=str(exc))
            raise
        ver = m["version"]
        stage = self._stage(ver)
        fw_files.mkdir(self.fw)
        fw_files.rmtree(stage)
        fw_files.rmtree(self._dir(ver))
        if not m["image"]:
            fw_files.mkdir(stage)
            for f in m["files"]:
                k = f["path"].rfind("/")
                if k > 0:
                    fw_files.makedirs(stage + "/" + f["path"][:k])
                if f["len"] == 0:
                    open(stage + "/" + f["path"], "wb").close()
        self.manifest = m
        self.job = {"manifest": text, "sig": sig, "version": ver, "state": "downloading",
                    "index": 0, "offset": 0, "image": m["image"]}
        self._save()
        self.decile = -1
        self._advance()
        return {"version": ver, "state": "downloading"}

    # --- the exchange ---
    def fetch(self, most=None):
        """The next `fetch` for the request (at most `most` bytes, FETCH_LEN by default),
        None when nothing is downloading."""
        f = self._current()
        if f is None:
            return None
        have = self._have(f)
        return {"version": self.job["version"], "path": f["path"], "offset": have,
                "len": min(most or FETCH_LEN, f["len"] - have)}

    def chunk(self, c):
        """Take a response's `chunk`. True when it moved the download on (exchange again)."""
        f = self._current()
        if f is None or not isinstance(c, dict) or c.get("version") != self.job["version"] \
                or c.get("path") != f["path"]:
            return False
        if "error" in c:
            self._reject("fetch failed: %s: %s" % (f["path"], str(c["error"])[:80]))
            return True
        have = self._have(f)
        if c.get("offset") != have:
            return False  # an answer to an earlier fetch: already written
        try:
            data = a2b_base64(c["data"])
        except (KeyError, TypeError, ValueError):
            data = b""
        if c.get("size") != f["len"] or not data or have + len(data) > f["len"]:
            self._reject("bad chunk: %s" % (f["path"],))
            return True
        if self.job["image"]:
            try:
                self.job["offset"] = self.image.write(f["len"], self.job["offset"], data)
            except Refused as exc:
                self._reject(str(exc))
                return True
            self._save()
        else:
            try:
                with open(self._stage(self.job["version"]) + "/" + f["path"], "ab") as out:
                    out.write(data)
            except OSError as exc:  # flash full: retrying would loop
                self._reject("cannot write %s: %s" % (f["path"], exc))
                return True
        self._advance()
        return True

    def healthy(self):
        """After a healthy exchange: confirm a version on probation."""
        if self.probation_until is None:
            return
        if self.job is not None and self.job["image"]:
            self.image.confirm()
        else:
            p = self._pointer()
            if p is not None:
                p["probation"] = False
                p["reason"] = ""
                fwboot.write_pointer(self.base, p)
        self.probation_until = None
        self._finish_installed()

    def reboot_due(self):
        """True once the switch is done and the head-end has the `installing` item."""
        return self.reboot_seq is not None and self.app.outbox.acked >= self.reboot_seq

    async def watch(self):
        """Reboot when probation ends unconfirmed: the next boot rolls back."""
        while self.probation_until is not None:
            since, limit = self.probation_until
            if ticks_diff(ticks_ms(), since) >= limit:
                self.app.reboot_now = True
                return
            await asyncio.sleep(1)

    # --- steps ---
    def _advance(self):
        """Hash finished files, report progress; install once every file checks out."""
        while self.job is not None and self.job["state"] == "downloading":
            f = self._current()
            if f is None:
                self._install()
                return
            have = self._have(f)
            self._progress(have)
            if have < f["len"]:
                return
            if not self._file_ok(f):
                self._reject("hash mismatch: %s" % (f["path"],))
                return
            self.job["index"] += 1
            self.job["offset"] = 0
            self._save()

    def _progress(self, have):
        done = have
        for f in self.manifest["files"][:self.job["index"]]:
            done += f["len"]
        total = self.manifest["total"]
        percent = 100 if total == 0 else done * 100 // total
        if percent // 10 > self.decile:
            self.decile = percent // 10
            self._item(self.job["version"], "downloading", percent=percent)

    def _install(self):
        ver = self.job["version"]
        self._item(ver, "verified")
        seq = self._item(ver, "installing")
        self.job["state"] = "installing"
        self.job["seq"] = seq if seq is not None else 0
        self._save()
        self._switch()

    def _switch(self):
        """Idempotent: a crash at any point is finished by running it again."""
        ver = self.job["version"]
        if self.job["image"]:
            f = self.manifest["files"][0]
            self.job["switched"] = True  # first: a reset must never retry a failed image
            self._save()
            try:
                self.image.switch(f["sha256"], f["len"])
            except Refused as exc:
                self._reject(str(exc))
                return
            p = self._pointer()
            if p is not None and p.get("version") is not None:  # no fw/V over a new image
                fwboot.write_pointer(self.base, {"version": None, "previous": None,
                                                 "probation": False, "boots": 0, "reason": ""})
        else:
            stage = self._stage(ver)
            if fw_files.is_dir(stage):
                fw_files.rmtree(self._dir(ver))
                fw_files.rename(stage, self._dir(ver))
            if not fw_files.is_dir(self._dir(ver)):
                self._reject("release files missing on flash")
                return
            fwboot.write_pointer(self.base, {"version": ver, "previous": self.booted,
                                             "probation": True, "boots": 0, "reason": ""})
        self.reboot_seq = self.job["seq"]

    def _reject(self, reason):
        ver = self.job["version"]
        self._item(ver, "rejected", reason=reason)
        self._drop_job()
        fw_files.rmtree(self._stage(ver))

    def _finish_installed(self):
        self._item(self.running, "installed")
        self._drop_job()
        self._tidy()

    # --- start-up: pick up where a reset left the job ---
    def _load(self):
        try:
            data = store.read_record(self.job_path)
            job = json.loads(data) if data is not None else None
            self.manifest = fw_manifest.parse(job["manifest"]) if job else None
            self.job = job
        except (ValueError, KeyError, TypeError):  # damaged: dropped, its stage tidied
            self._drop_job()
        pointer = self._pointer()
        on_pointer = pointer is not None and pointer.get("version") == self.booted
        if self.booted is not None and on_pointer and pointer.get("probation"):
            self._probation()
        job = self.job
        if job is None:
            self._tidy_stages()
        elif job["state"] == "downloading":
            self._progress_quiet()
            self._advance()
        elif job["version"] == self.running:
            if job["image"]:
                self._probation()
            elif self.probation_until is None:  # confirmed, reset before the report
                self._finish_installed()
        elif job["image"] and job.get("switched"):
            self._rolled_back(ROLLED_BACK_IMAGE)
        elif not job["image"] and pointer and pointer.get("failed") == job["version"]:
            self._rolled_back(pointer.get("reason") or fwboot.PROBATION_REASON)
        elif not job["image"] and pointer and pointer.get("version") == job["version"]:
            pass  # switched, and restarted without fwboot (unix main.py): the next start runs V
        else:
            self._switch()  # reset mid-switch: finish it

    def _probation(self):
        seconds = self.app.cfg.get("update_probation_s", 300)
        self.probation_until = (ticks_ms(), seconds * 1000)

    def _rolled_back(self, reason):
        ver = self.job["version"]
        self._item(ver, "rolled_back", reason=reason)
        self._drop_job()
        fw_files.rmtree(self._dir(ver))

    def _progress_quiet(self):
        # no repeat of the progress item reported before the reset
        f = self._current()
        if f is not None:
            done = self._have(f)
            for g in self.manifest["files"][:self.job["index"]]:
                done += g["len"]
            total = self.manifest["total"]
            self.decile = 10 if total == 0 else done * 10 // total

    def _tidy(self):
        """Remove every release but the running one and its `previous`."""
        p = self._pointer() or {}
        keep = ("current.json", str(p.get("version")), str(p.get("previous")))
        for name in _listdir(self.fw):
            if name not in keep:
                fw_files.rmtree(self.fw + "/" + name)

    def _tidy_stages(self):
        for name in _listdir(self.fw):
            if name.startswith("stage-"):
                fw_files.rmtree(self.fw + "/" + name)

    # --- helpers ---
    def _current(self):
        job = self.job
        if job is None or job["state"] != "downloading":
            return None
        files = self.manifest["files"]
        return files[job["index"]] if job["index"] < len(files) else None

    def _have(self, f):
        if self.job["image"]:
            return self.image.have(self.job["offset"])
        return max(0, fw_files.size(self._stage(self.job["version"]) + "/" + f["path"]))

    def _file_ok(self, f):
        if self.job["image"]:
            try:
                return self.image.verify(f["sha256"], f["len"])
            except Refused:
                return False
        path = self._stage(self.job["version"]) + "/" + f["path"]
        return fw_files.size(path) == f["len"] and fw_files.sha256_hex(path) == f["sha256"]

    def _pointer(self):
        try:
            return fwboot.read_pointer(self.base)
        except ValueError:
            return None

    def _stage(self, ver):
        return self.fw + "/stage-" + ver

    def _dir(self, ver):
        return self.fw + "/" + ver

    def _save(self):
        store.write_record(self.job_path, json.dumps(self.job).encode())

    def _drop_job(self):
        self.job = None
        self.manifest = None
        self.image = ImageSink(self.app.board)
        fw_files.remove(self.job_path)

    def _item(self, ver, state, **extra):
        body = {"version": ver, "state": state}
        body.update(extra)
        return self.app.outbox.offer("update", body)


def _claimed(text):
    """The version a refused manifest names, for the report ("" when it names none)."""
    try:
        v = json.loads(text).get("version")
        return v if isinstance(v, str) else ""
    except (ValueError, AttributeError, TypeError):
        return ""


def _listdir(path):
    import os
    try:
        return os.listdir(path)
    except OSError:
        return []
