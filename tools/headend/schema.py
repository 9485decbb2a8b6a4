"""The head-end's schema, one for both stores, and its versioned migrations.

The tables are written once, in SQLite's types; dialect.py renders them for PostgreSQL. What
cannot be written once (the audit log's append-only guard, the arrival order of `items`) is
in DIALECT_EXTRAS, one entry per store. migrate() brings any database to the newest version:
it records each applied step in `schema_version`, and on PostgreSQL runs under an advisory
lock, so head-end processes starting together migrate once.

To change the schema, append a step to STEPS (never edit an applied one): (version, name,
function(db)). A step runs in its own transaction on PostgreSQL; on SQLite DDL runs as a
script, and every step must be safe to run again (IF NOT EXISTS, a column check)."""

import time

ITEMS = """
CREATE TABLE IF NOT EXISTS items (     -- the meter's outbox items, one per (device, epoch, seq)
    device TEXT NOT NULL, epoch TEXT NOT NULL, seq INTEGER NOT NULL, kind TEXT NOT NULL,
    body TEXT NOT NULL, received REAL NOT NULL,
    PRIMARY KEY (device, epoch, seq)
);
CREATE INDEX IF NOT EXISTS items_recent ON items(device, kind);  -- by rowid: arrival order
"""

AUDIT = """   -- append-only (audit.py)
CREATE TABLE IF NOT EXISTS audit (
    id INTEGER PRIMARY KEY AUTOINCREMENT, at REAL NOT NULL,
    who TEXT NOT NULL, role TEXT NOT NULL,    -- the token's name and role, or cli:<user>
    action TEXT NOT NULL, target TEXT,        -- e.g. add_work, device:meter-a
    outcome TEXT NOT NULL, detail TEXT        -- ok, or "403: why"; the op and its args
);
CREATE INDEX IF NOT EXISTS audit_target ON audit(target, id);
"""

SCHEMA = """
CREATE TABLE IF NOT EXISTS devices (
    id TEXT PRIMARY KEY,
    key TEXT NOT NULL,
    created REAL NOT NULL,
    poll INTEGER NOT NULL,
    ack INTEGER,                       -- highest contiguous seq stored in `epoch`; NULL before any
    epoch TEXT,                        -- the meter's current outbox epoch (docs/protocol.md)
    last_contact REAL,
    stated TEXT NOT NULL DEFAULT 'unknown',   -- presence the meter last stated
    stated_note TEXT,
    presence TEXT NOT NULL DEFAULT 'unknown', -- effective presence (stated or derived)
    presence_note TEXT,
    presence_at REAL,
    derived INTEGER NOT NULL DEFAULT 0,       -- 1 while presence is derived unavailable
    transport TEXT,                    -- http | mqtt: how it last exchanged; NULL before any
    room INTEGER NOT NULL DEFAULT 0,   -- work it can still take (its last `room` - sent since)
    firmware TEXT,                     -- JSON: its latest `update` report (updates.py)
    conn TEXT,                         -- the connection nonce of its latest MQTT up (pushes)
    work_seq INTEGER NOT NULL DEFAULT 0  -- the last work sequence assigned to it
);
CREATE TABLE IF NOT EXISTS tokens (
    hash TEXT PRIMARY KEY, name TEXT NOT NULL, role TEXT NOT NULL, created REAL NOT NULL,
    expires REAL,                      -- NULL: never (tokens.py)
    groups TEXT,                       -- JSON list of group names it is confined to; NULL: all
    revoked REAL                       -- when it was revoked; NULL: not revoked
);
CREATE TABLE IF NOT EXISTS nonces (
    device TEXT NOT NULL, nonce TEXT NOT NULL, seen REAL NOT NULL,
    PRIMARY KEY (device, nonce)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS nonces_seen ON nonces(seen);
""" + ITEMS + """CREATE TABLE IF NOT EXISTS presence (
    id INTEGER PRIMARY KEY, device TEXT NOT NULL, state TEXT NOT NULL, note TEXT,
    at REAL NOT NULL, source TEXT NOT NULL      -- meter | derived | contact | lwt
);
CREATE INDEX IF NOT EXISTS presence_dev ON presence(device, id);
CREATE TABLE IF NOT EXISTS work (
    num INTEGER PRIMARY KEY AUTOINCREMENT,
    device TEXT NOT NULL, op TEXT NOT NULL, args TEXT NOT NULL,
    role TEXT NOT NULL, origin TEXT NOT NULL,
    created REAL NOT NULL, expires INTEGER NOT NULL,
    status TEXT NOT NULL,   -- queued delivered done rejected unknown_op expired cancelled
    when_available INTEGER NOT NULL DEFAULT 0,
    executed INTEGER NOT NULL DEFAULT 0,        -- listed in `done` or a result arrived
    deliveries INTEGER NOT NULL DEFAULT 0,
    delivered_at REAL, finished_at REAL, result TEXT, reason TEXT,
    gid INTEGER, reply_to TEXT, ref TEXT,
    seq INTEGER                        -- the device's work sequence, set at first delivery
);
CREATE INDEX IF NOT EXISTS work_dev ON work(device, status, num);
CREATE INDEX IF NOT EXISTS work_open ON work(status, expires);
CREATE INDEX IF NOT EXISTS work_gid ON work(gid);
CREATE TABLE IF NOT EXISTS updates (   -- the latest `update` state per (device, version)
    device TEXT NOT NULL, version TEXT NOT NULL, state TEXT NOT NULL,
    percent INTEGER, reason TEXT, at REAL NOT NULL,
    PRIMARY KEY (device, version)
);
CREATE INDEX IF NOT EXISTS updates_version ON updates(version, device);
CREATE TABLE IF NOT EXISTS idempotency (   -- Idempotency-Key of operator POSTs (24 h)
    operator TEXT NOT NULL, key TEXT NOT NULL, fingerprint TEXT NOT NULL,
    ref TEXT NOT NULL,                 -- what it produced: a work id or a group command id
    created REAL NOT NULL,
    PRIMARY KEY (operator, key)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS idempotency_created ON idempotency(created);
CREATE TABLE IF NOT EXISTS groups (name TEXT PRIMARY KEY, created REAL NOT NULL);
CREATE TABLE IF NOT EXISTS group_members (
    name TEXT NOT NULL, device TEXT NOT NULL, PRIMARY KEY (name, device)
);
CREATE TABLE IF NOT EXISTS group_work (
    gid INTEGER PRIMARY KEY AUTOINCREMENT, name TEXT NOT NULL, op TEXT NOT NULL,
    args TEXT NOT NULL, when_available INTEGER NOT NULL, expires INTEGER NOT NULL,
    created REAL NOT NULL, origin TEXT NOT NULL
);
""" + AUDIT + """
CREATE TABLE IF NOT EXISTS escalation_lists (  -- per group (escalation.py)
    grp TEXT PRIMARY KEY, operators TEXT NOT NULL, timeout_s REAL NOT NULL, kinds TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS operator_duty (operator TEXT PRIMARY KEY, schedule TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS alarms (
    id INTEGER PRIMARY KEY AUTOINCREMENT, device TEXT NOT NULL, grp TEXT NOT NULL,
    kind TEXT NOT NULL, body TEXT NOT NULL, raised REAL NOT NULL,
    state TEXT NOT NULL,               -- open, acked, unacknowledged
    pos INTEGER NOT NULL, round INTEGER NOT NULL,  -- where on the list, which pass
    operator TEXT, deadline REAL,      -- who has it now, until when
    acked_by TEXT, acked_at REAL
);
CREATE INDEX IF NOT EXISTS alarms_due ON alarms(state, deadline);
CREATE TABLE IF NOT EXISTS alarm_steps (
    id INTEGER PRIMARY KEY AUTOINCREMENT, alarm INTEGER NOT NULL, at REAL NOT NULL,
    step TEXT NOT NULL, operator TEXT, detail TEXT
);
CREATE INDEX IF NOT EXISTS alarm_steps_alarm ON alarm_steps(alarm, id);
CREATE TABLE IF NOT EXISTS mail_seen (  -- Message-IDs the mail gateway acted on (replays)
    message_id TEXT PRIMARY KEY, sender TEXT NOT NULL, at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS peer_rules (  -- the utility's allow rules (peer_rules.py)
    id INTEGER PRIMARY KEY AUTOINCREMENT, src TEXT NOT NULL, dst TEXT NOT NULL,
    ops TEXT NOT NULL, created REAL NOT NULL, "by" TEXT NOT NULL   -- BY: reserved in PostgreSQL
);
"""

DIALECT_EXTRAS = {
    "sqlite": """
CREATE TRIGGER IF NOT EXISTS audit_no_update BEFORE UPDATE ON audit
    BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
CREATE TRIGGER IF NOT EXISTS audit_no_delete BEFORE DELETE ON audit
    BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
""",
    "postgresql": """
ALTER TABLE items ADD COLUMN IF NOT EXISTS rowid BIGINT GENERATED ALWAYS AS IDENTITY;
CREATE INDEX IF NOT EXISTS items_arrival ON items(device, kind, rowid);
CREATE OR REPLACE FUNCTION bc_json(body TEXT) RETURNS jsonb LANGUAGE plpgsql IMMUTABLE AS
    $$ BEGIN RETURN body::jsonb; EXCEPTION WHEN others THEN RETURN NULL; END $$;
CREATE OR REPLACE FUNCTION audit_append_only() RETURNS trigger LANGUAGE plpgsql AS
    $$ BEGIN RAISE EXCEPTION 'the audit log is append-only'; END $$;
CREATE OR REPLACE TRIGGER audit_no_change BEFORE UPDATE OR DELETE ON audit
    FOR EACH ROW EXECUTE FUNCTION audit_append_only();
CREATE OR REPLACE TRIGGER audit_no_truncate BEFORE TRUNCATE ON audit
    FOR EACH STATEMENT EXECUTE FUNCTION audit_append_only();
""",
}

VERSIONS = """
CREATE TABLE IF NOT EXISTS schema_version (
    version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied REAL NOT NULL
);
"""

# Columns added after the first release: (table, column, declaration) for older files.
LEGACY_COLUMNS = (
    ("devices", "transport", "TEXT"),
    ("devices", "room", "INTEGER NOT NULL DEFAULT 0"),
    ("devices", "firmware", "TEXT"),
    ("devices", "conn", "TEXT"),
    ("devices", "epoch", "TEXT"),
    ("devices", "work_seq", "INTEGER NOT NULL DEFAULT 0"),
    ("work", "seq", "INTEGER"),
    ("tokens", "expires", "REAL"),
    ("tokens", "groups", "TEXT"),
    ("tokens", "revoked", "REAL"),
)


def _baseline(db):
    """Version 1: the tables as of 2026-12. A SQLite file from before versions is upgraded
    in place first (items keyed by epoch, columns added since the first release)."""
    if db.dialect.name == "sqlite":
        _legacy_sqlite(db)
    db.script(db.dialect.ddl(SCHEMA) + DIALECT_EXTRAS[db.dialect.name])


def _legacy_sqlite(db):
    if db.one("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'devices'") is None:
        return                                      # a new file
    have = {r["name"] for r in db.all("PRAGMA table_info(items)")}
    if have and "epoch" not in have:   # a v1 file: items were keyed by (device, seq) alone
        db.script(
            "BEGIN; ALTER TABLE items RENAME TO items_v1; DROP INDEX IF EXISTS items_recent;"
            + ITEMS + "INSERT INTO items(device, epoch, seq, kind, body, received) "
            "SELECT device, '', seq, kind, body, received FROM items_v1 ORDER BY rowid; "
            "DROP TABLE items_v1; COMMIT;")
    for table, column, decl in LEGACY_COLUMNS:
        have = {r["name"] for r in db.all("PRAGMA table_info(%s)" % table)}
        if have and column not in have:
            db.script("ALTER TABLE %s ADD COLUMN %s %s" % (table, column, decl))


LEASES = """
CREATE TABLE IF NOT EXISTS leases (    -- who leads the fleet-wide timers (leader.py)
    name TEXT PRIMARY KEY, token INTEGER NOT NULL, holder TEXT, since REAL
);
"""


def _leases(db):
    """Version 2: the fencing tokens of leader election (several processes, PostgreSQL)."""
    db.script(db.dialect.ddl(LEASES))


TARIFFS = """
CREATE TABLE IF NOT EXISTS tariffs (   -- each meter's local-time tariff, renewed (tariff_renew.py)
    device TEXT PRIMARY KEY, spec TEXT NOT NULL, days INTEGER NOT NULL, until REAL NOT NULL,
    set_by TEXT NOT NULL, work INTEGER
);
"""


def _tariffs(db):
    """Version 3: tariffs whose horizon the head-end renews."""
    db.script(db.dialect.ddl(TARIFFS))


def _rekeys(db):
    """Version 4: device key rotations in flight (key_rotation.py)."""
    from .key_rotation import TABLE

    db.script(db.dialect.ddl(TABLE))


def _presence_seen(db):
    """Version 5: the last signed MQTT presence taken per meter (mqtt_presence.py)."""
    from .mqtt_presence import SEEN_TABLE

    db.script(db.dialect.ddl(SEEN_TABLE))


def _readings_agg(db):
    """Version 6: downsampled readings and the retention horizon (downsample.py)."""
    from .downsample import TABLE

    db.script(db.dialect.ddl(TABLE))


STEPS = (
    (1, "baseline", _baseline),
    (2, "leases", _leases),
    (3, "tariffs", _tariffs),
    (4, "rekeys", _rekeys),
    (5, "presence_seen", _presence_seen),
    (6, "readings_agg", _readings_agg),
)
LATEST = STEPS[-1][0]


def migrate(db):
    """Apply every step newer than the database's version; returns the version now."""
    with db.migration_lock():
        db.script(db.dialect.ddl(VERSIONS))
        row = db.one("SELECT MAX(version) AS v FROM schema_version")
        have = row["v"] or 0
        for version, name, step in STEPS:
            if version <= have:
                continue
            step(db)
            with db.tx():
                db.run("INSERT INTO schema_version(version, name, applied) VALUES (?, ?, ?)",
                       version, name, time.time())
            have = version
        return have
