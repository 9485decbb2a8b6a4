# The meter application: metering, reporting, persistence and the back channel as asyncio
# tasks. Board-independent: a board object supplies samples (and optionally a relay).

import asyncio
import gc
from binascii import unhexlify

import config as configuration
import health
import links  # the transport and the updater: imported only when used
import live_config
from clock import Clock, board_ms, stamp
from energy import RegisterStore, SavePolicy
from inbox import Inbox
from kept_state import KeptState
from loss_notices import LossNotices, startup_notices
from memory_guard import retry_once
from mpshim import asleep_ms, cancel_all, ticks_diff, ticks_ms
from ops import Dispatcher
from outbox import Outbox
from presence import Presence
from protection import Protection
from sample_count import SampleCount, rate_ratio

BLOCK = 128
METER_ALLOW_S = 10  # metering beats every block (40 ms); longer without one is a stall
STAMP_STEP_MS = 60000  # records follow clock corrections larger than this (App._wall_ms)
POLL_MS = 5  # polling a hardware board (mpshim.asleep_ms: an int, no float per call)



class App:
    def __init__(self, board, cfg, state_dir, config_path=None, realtime=True):
        self.board = board
        self.cfg = cfg
        self.config_path = config_path
        self.realtime = realtime
        self.clock = Clock()
        self.meter, self.reporter = links.make_meter(cfg, board)
        self.protection = Protection(cfg, self.set_relay)
        self.watchers = [self.protection]   # each checks every reading: records to push
        self.outbox = Outbox(state_dir + "/outbox", hold=live_config.outbox_hold(cfg))
        self.inbox = Inbox(state_dir + "/inbox")
        self.energy_store = RegisterStore(state_dir + "/energy")
        saved = self.energy_store.load()
        if saved is not None:
            self.meter.restore_energy(saved)
        self.kept = KeptState(state_dir + "/kept")
        self._restore_kept()
        self.recent_events = []
        self.last_reading = None
        self.messages = []
        self.reboot_requested = False
        self.reboot_armed = False
        self.reboot_now = False
        self.stopping = False  # stop(): bc.stop() at the REPL
        self.on_record = None  # callback for every reading and event (e.g. a console)
        self.next_report = cfg["report_s"]     # s of samples: when the next reading goes
        self.memory_errors = 0
        self.losses = LossNotices(self.outbox)
        # Wall time is integers: the board's clock at the App's start in ms, plus the sample
        # clock converted with the board's rate as a ratio of ints, plus the clock's offset
        # now (so a time set by the head-end moves later stamps). float32 has a 128-s step
        # near 1.8e9 s; a float rate would drift.
        self.started_board_ms = board_ms()
        self.stamp_offset_ms = self.clock.offset_ms
        self.rate_num, self.rate_den = rate_ratio(board)
        self.sample_count = SampleCount(self.rate_num, self.rate_den)  # of this App's life
        self.meter_beat = health.Heartbeat(METER_ALLOW_S)
        self.comms_beat = health.Heartbeat(METER_ALLOW_S)
        self.watchdog = None
        key = unhexlify(cfg["device_key"]) if cfg["device_key"] else b""
        self.dispatcher = Dispatcher(self, key, self.outbox, self.inbox)
        self.trial = links.make_trial(self, state_dir)   # a guarded change on trial (trial.py)
        self.comms = links.make_comms(self, self.cfg, key)
        self.rekey = links.make_rekey(self, state_dir, key)     # key rotation: both keys
        if self.comms is not None:
            self.comms.wait_s = live_config.poll_wait_s(cfg)
            self.comms.after_exchange = self._after_exchange
            self.comms.heartbeat = self.comms_beat.beat
        self.state_dir = state_dir
        self._updater = None
        if links.update_in_flight(links.parent_dir(state_dir), state_dir):
            self._make_updater()
        self.meter.on_event = self._on_event
        self.billing = None
        if links.exists(state_dir + "/tariff"):
            self.billing_on()
        self.pulses = links.make_pulses(self, cfg, state_dir) if cfg["pulse_pins"] else None
        if self.pulses is not None:
            self.watchers.append(self.pulses)
        startup_notices(self.outbox, self.energy_store, self.inbox, self.kept)
        self.capture = links.make_capture(self, cfg) if cfg["capture"] else None
        self.tick = None        # a transport box's clock, in place of the sampling loop
        if cfg["pulse_only"]:
            from transport_box import PulseTick

            self.tick = PulseTick(self)

    def billing_on(self):
        """Tariff, time-of-use registers and freezes (billing.py): imported on first use."""
        if self.billing is None:
            from billing import Billing

            self.billing = Billing(self, self.state_dir + "/tariff")
            # before protection: the reading's rate is what a shed_on_rate rule looks at
            self.watchers.insert(0, self.billing)
        return self.billing

    @property
    def updater(self):
        """The firmware updater, imported and made on first use (an `update` op)."""
        return self._updater or self._make_updater()

    def _make_updater(self):
        from updater import Updater

        self._updater = Updater(self, links.parent_dir(self.state_dir), self.state_dir)
        if self.comms is not None:
            self.comms.updater = self._updater
        return self._updater

    def latest_reading(self):
        return self.last_reading

    # --- metering ---
    @property
    def started_unix(self):
        """When the App started, Unix seconds (a float: for desktop tools)."""
        return self._wall_ms(0) / 1000

    def _elapsed_ms(self, samples):
        """ms from the App's start to sample number `samples` (ints; to the nearest ms)."""
        return (samples * 1000 * self.rate_den + self.rate_num // 2) // self.rate_num

    def _wall_ms(self, samples):
        """Unix ms of sample number `samples`. Records follow a clock correction larger than
        STAMP_STEP_MS (a board that started in 2000, a clock set with set_time); smaller ones
        (the head-end's time in a response the network held back for seconds) would break
        the readings' report_s grid."""
        offset = self.clock.offset_ms
        if abs(offset - self.stamp_offset_ms) > STAMP_STEP_MS:
            self.stamp_offset_ms = offset
        return self.started_board_ms + self.stamp_offset_ms + self._elapsed_ms(samples)

    def _on_event(self, record):
        record = dict(record)
        stamp(record, "start_s", self._wall_ms(self.meter.pq.said_start))
        if record["type"] == "event_start" and self.capture is not None:
            self.capture.trigger(record)
        if record["type"] == "event":
            self.recent_events.append(record)
            self.recent_events = self.recent_events[-32:]
        if self.on_record is not None:
            self.on_record(record)
        kind = record["type"]
        body = dict(record)
        del body["type"]
        self.outbox.offer(kind, body)
        if self.comms is not None:
            self.comms.kick()

    async def metering(self):
        # a full heap (a board's fragments) must not end metering: collect, count, go on
        while True:
            try:
                return await self._metering()
            except MemoryError:
                self.memory_errors += 1
                gc.collect()

    async def _metering(self):
        count = self.sample_count
        # pacing a simulated board: `lead` ms of signal metered since the tick `ref` (both
        # move forward, so they stay small ints and ticks_diff stays within its range)
        ref = ticks_ms()
        lead = 0
        # A hardware board samples at its own rate: wait (without blocking) for a block
        # instead of pacing by the clock as the simulated board needs.
        hardware = hasattr(self.board, "available")
        realtime = self.realtime and not hardware
        persist = SavePolicy(self.cfg["persist_s"], self.meter)
        vb, ib, read_feed = links.block_reader(self.board, self.meter, self.cfg, BLOCK)
        while not (self.reboot_now or self.stopping):
            self.meter_beat.beat()
            if hardware:
                while self.board.available() < BLOCK:
                    await asleep_ms(POLL_MS)
            n = read_feed()
            if n == 0:
                return
            if self.capture is not None:
                self.capture.feed(vb, ib, n)
            lead += count.add(n)
            r = self.reporter.take()
            if r is not None:
                at = self.reporter.last_samples
                stamp(r, "t", self._wall_ms(at))
                self._report_registers(r)
                self.last_reading = r
                for watcher in self.watchers:
                    for record in watcher.check(r):
                        self.push(record)
                if self.on_record is not None:
                    self.on_record(r)
                # the cadence counts samples: a clock set by the head-end does not move it
                if self._elapsed_ms(at) >= self.next_report * 1000:
                    self.next_report += self.cfg["report_s"]
                    retry_once(self.outbox.offer, "reading", r)     # a full heap: collect
                    self.losses.check(self.board, self.memory_errors)
            if persist.due(count.seconds):      # held readings wait for `hold` of them
                retry_once(self.save_energy, False)
            if realtime:
                now = ticks_ms()
                ahead = lead - ticks_diff(now, ref)
                if lead > 60000:
                    ref, lead = now, ahead
                if ahead > 0:
                    await asleep_ms(ahead)
                    continue
            await asleep_ms(0)

    def save_energy(self, flush=True):
        """Save the registers; with flush (every stop, reboot and reset), also write the
        readings the outbox holds in RAM."""
        self.meter.fold_energy()
        self.energy_store.save(self.meter.registers)
        if flush:
            self.outbox.flush()
            if self.pulses is not None:
                self.pulses.stop()

    def _report_registers(self, out, key=None):
        # the saved registers, never ahead of what a restart recovers (docs/reliability.md)
        self.meter.fold_energy()
        saved, unsaved = self.energy_store.report(self.meter.registers)
        if key is None:
            out.update(saved)
        else:
            out[key] = saved
        out["unsaved"] = unsaved

    def stop(self):
        """A clean stop (bc.stop()): save the registers now; run() ends after this block."""
        self.stopping = True
        self.save_energy()

    # --- used by ops ---
    def status_reading(self):
        out = {"relay": self.relay,
               "presence": self.presence.state, "reset_cause": health.reset_cause(),
               "uptime_s": health.UPTIME.tick(), "version": health.VERSION}
        self._report_registers(out, "registers")
        if self.billing is not None:
            out["tou"] = self.billing.status()
        if self.pulses is not None:
            out["pulses"] = self.pulses.values()
        overruns = getattr(self.board, "overruns", None)  # blocks lost: the app was late
        if overruns is not None:
            out["overruns"] = overruns
        heap = health.HEAP.report()
        if heap is not None:
            out["heap"] = heap
        if self.last_reading is not None:
            out["reading"] = self.last_reading
        return out

    def public_config(self):
        return configuration.public(self.cfg)

    def change_config(self, changes, by="console"):
        return live_config.change(self, changes, by)

    def push(self, record):
        # an `alarm` or `shed` record: to the head-end at once
        if self.on_record is not None:
            self.on_record(record)
        body = dict(record)
        kind = body.pop("type")
        self.outbox.offer(kind, body)
        if self.comms is not None:
            self.comms.kick()

    def set_relay(self, state):
        self.relay = state
        if hasattr(self.board, "set_relay"):
            self.board.set_relay(state == "closed")
        if self.presence.state in ("available", "active", "available_off"):
            self.presence.set("active" if state == "closed" else "available_off")
        self._keep()

    # --- relay and stated presence survive a reboot or power cut (kept_state.py) ---
    def _restore_kept(self):
        kept = self.kept.load()
        self.presence = Presence(self.outbox, kept["presence"], kept["note"])
        self.presence.on_change = self._keep
        self.relay = "open" if kept["relay"] == "open" else "closed"
        if hasattr(self.board, "set_relay"):
            self.board.set_relay(self.relay == "closed")

    def _keep(self):
        self.kept.save(self.relay, self.presence.state, self.presence.note)

    def reset_energy(self):
        self.meter.fold_energy()
        before = self.meter.registers.as_wh()
        self.meter.restore_energy({n: [0, 0, 0] for n in before})
        self.save_energy()
        return before

    def received_message(self, args):
        self.messages.append(args)
        self.messages = self.messages[-16:]

    # --- run ---
    def _after_exchange(self):
        self.trial.healthy(self)
        updater = self._updater
        if updater is not None:
            updater.healthy()
            if updater.reboot_due():  # switched to a new version; the head-end knows
                self.reboot_now = True
        # `reboot` runs in exchange N; its result goes out and is acked in N + 1; then reboot.
        if self.reboot_requested:
            if self.reboot_armed:
                self.reboot_now = True
            self.reboot_armed = True

    async def _watchdog(self, metering, comms):
        self.watchdog = health.Watchdog(self.cfg["wdt_s"])
        self.watchdog.watch("metering", metering, self.meter_beat)
        for task in comms:
            self.watchdog.watch("comms", task, self.comms_beat)
        self.watchdog.on_starve = self._on_starve
        await self.watchdog.run()

    def _on_starve(self, reason):
        # kept on flash: reported after the reset the hardware watchdog is about to cause
        if self.watchdog.wdt is not None:
            self.outbox.offer("notice", {"what": "watchdog: " + reason, "count": 1})

    async def run(self):
        """Runs until the board's samples end, or a `reboot` op asks for a restart: then the
        caller resets the board (machine.reset(); the simulator starts a fresh App)."""
        tasks = [asyncio.create_task(self.tick.run() if self.tick else self.metering())]
        if self.comms is not None:
            self.presence.announce()
            talk = self.comms.run()
            if self.cfg["ntp_host"]:    # the board's RTC from NTP first (firmware/ntp.py)
                talk = __import__("ntp").first(self, self.cfg["ntp_host"], talk)
            tasks.append(asyncio.create_task(talk))
        elif self.cfg["ntp_host"]:
            tasks.append(asyncio.create_task(__import__("ntp").run(self, self.cfg["ntp_host"])))
        if self.cfg["wdt_s"]:
            tasks.append(asyncio.create_task(self._watchdog(tasks[0], tasks[1:])))
        if self.comms is not None and self._updater is not None:
            tasks.append(asyncio.create_task(self._updater.watch()))
        try:
            await tasks[0]
        finally:
            await cancel_all(tasks[1:])     # a stale comms task must not outlive its App
            retry_once(self.save_energy)
        if self.reboot_now:
            return "reboot"
        return "stopped" if self.stopping else "done"
