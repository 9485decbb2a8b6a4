"""Pydantic models: the exchange envelope (validated strictly) and the operator API, so
/openapi.json describes what the head-end really accepts and returns."""

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from . import ids, poll

OP = r"^[a-z][a-z0-9_]{0,31}$"
NAME = r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$"
Status = Literal["queued", "held", "delivered", "done", "rejected", "expired", "unknown_op",
                 "cancelled"]


class ErrorOut(BaseModel):
    error: str


# --- exchange (docs/protocol.md) ---

class OutboxItem(BaseModel):
    model_config = ConfigDict(strict=True)
    seq: int = Field(ge=0, le=2**53)
    kind: str = Field(min_length=1, max_length=32)
    body: dict[str, Any]


class Fetch(BaseModel):
    """A chunk of a published release the meter is downloading (docs/ota.md)."""
    model_config = ConfigDict(strict=True)
    version: str = Field(min_length=1, max_length=32)
    path: str = Field(min_length=1, max_length=256)
    offset: int = Field(ge=0, le=2**31)
    len: int = Field(ge=0, le=2**31, description="capped at 8192 by the head-end")


class ExchangeRequest(BaseModel):
    model_config = ConfigDict(strict=True)
    v: Literal[2]
    device: str = Field(min_length=1, max_length=64)
    ts: float = Field(allow_inf_nan=False)
    nonce: str = Field(pattern=r"^[0-9a-fA-F]{16}$")
    epoch: str = Field(pattern=r"^[0-9a-f]{16}$",
                       description="the meter's outbox epoch: random per outbox life; items "
                       "are keyed by (device, epoch, seq) and the ack is of this epoch")
    conn: str | None = Field(None, pattern=r"^[0-9a-fA-F]{16}$",
                             description="MQTT: the meter's random nonce for this connection; "
                             "pushes are bound to it")
    wait: float = Field(ge=0, allow_inf_nan=False)
    room: int = Field(ge=0, le=1000)
    done: list[str] = Field(default_factory=list, max_length=1000)
    items: list[OutboxItem] = Field(default_factory=list, max_length=10000)
    fetch: Fetch | None = Field(None, description="answered at once with `chunk`")

    @field_validator("v", mode="before")
    @classmethod
    def _not_bool(cls, v):
        if isinstance(v, bool):
            raise ValueError("v must be the integer 2")
        return v


class WireWork(BaseModel):
    model_config = ConfigDict(populate_by_name=True)
    id: str
    device: str
    seq: int = Field(description="the device's work sequence (docs/protocol.md)")
    op: str
    args: str = Field(description="canonical JSON text, signed as sent")
    role: Literal["operator", "utility", "peer"]
    from_: str = Field(alias="from")
    expires: int
    sig: str


class Chunk(BaseModel):
    version: str
    path: str
    offset: int | None = None
    size: int | None = Field(None, description="the whole file's length")
    data: str | None = Field(None, description="base64")
    error: str | None = Field(None, description="instead of offset, size and data")


class ExchangeResponse(BaseModel):
    v: Literal[2]
    dir: Literal["down"]
    device: str
    re: str | None = Field(None, description="the nonce of the request this answers")
    conn: str | None = Field(None, description="MQTT: the connection nonce it is bound to")
    epoch: str | None = Field(None, description="the outbox epoch `ack` is of")
    ack: int
    work: list[WireWork]
    more: bool
    next: int
    time: float
    time_ms: int = Field(description="server time, Unix ms: exact where a meter's float32 "
                                     "rounds `time` (to 128 s)")
    chunk: Chunk | None = Field(None, description="the answer to the request's `fetch`")
    rekey: dict[str, str] | None = Field(None, description="a key rotation the head-end "
                                         "holds the new key of: rid and check value")


# --- operator API ---

class DeviceIn(BaseModel):
    id: str = Field(pattern="^%s$" % ids.PATTERN, description=ids.RULE)
    key: str | None = Field(None, pattern=r"^(?:[0-9a-fA-F]{2}){16,64}$",
                            description="hex HMAC key; generated when omitted")
    poll: int | None = Field(None, description="seconds between exchanges (`next`): "
                             + poll.RULE + "; default the head-end's default_poll")

    @field_validator("poll")
    @classmethod
    def _poll(cls, v):
        return v if v is None else poll.checked(v)


class DeviceCreated(BaseModel):
    id: str
    key: str
    poll: int


class DevicePatch(BaseModel):
    poll: int = Field(description="seconds, sent as `next` from now on: " + poll.RULE)

    @field_validator("poll")
    @classmethod
    def _poll(cls, v):
        return poll.checked(v)


class DeviceOut(BaseModel):
    id: str
    created: float
    poll: int
    ack: int
    last_contact: float | None
    presence: str
    presence_note: str | None
    presence_at: float | None
    stated: str
    transport: str | None = Field(None, description="http or mqtt: how it last exchanged")
    open_work: int
    firmware: "FirmwareNow | None" = Field(None, description="its latest `update` report")


class WorkIn(BaseModel):
    op: str = Field(pattern=OP)
    args: dict[str, Any] = Field(default_factory=dict)
    expires_in: int = Field(3600, ge=1, le=30 * 86400)
    when_available: bool = Field(False, description="hold until presence is available, "
                                 "active or available_off")

    @field_validator("op")
    @classmethod
    def _not_set_poll(cls, v):
        if v == "set_poll":     # gone from the meter: it would only come back unknown_op
            raise ValueError(poll.MOVED)
        return v


class WorkOut(BaseModel):
    model_config = ConfigDict(populate_by_name=True)
    id: str
    device: str
    op: str
    args: dict[str, Any]
    role: str
    from_: str = Field(alias="from")
    created: float
    expires: int
    status: Status
    when_available: bool
    deliveries: int
    delivered_at: float | None
    finished_at: float | None
    result: Any = None
    reason: str | None
    group: int | None


class RecordOut(BaseModel):
    seq: int
    kind: str
    received: float
    at: float | None = Field(None, description="the meter's time of a reading (t + t_ms) "
                                               "or an event's start (start_s + start_ms), "
                                               "Unix seconds exact to the ms")
    body: dict[str, Any]


class PresenceEntry(BaseModel):
    state: str
    note: str | None
    at: float
    source: Literal["meter", "derived", "contact", "lwt"]


class PresenceNow(BaseModel):
    device: str
    state: str
    note: str | None
    since: float | None
    stated: str
    last_contact: float | None


class GroupIn(BaseModel):
    name: str = Field(pattern=NAME)
    members: list[str] = Field(min_length=1, max_length=10000)


class MembersIn(BaseModel):
    members: list[str] = Field(min_length=1, max_length=10000)


class GroupOut(BaseModel):
    name: str
    created: float
    members: list[str]


class GroupWorkIn(WorkIn):
    # bounded: inf, NaN and huge values overflowed the int/SQLite expiry (500)
    deadline: float | None = Field(None, allow_inf_nan=False, le=2**53,
                                   description="absolute Unix time; overrides expires_in")


class GroupWorkOut(BaseModel):
    gid: int
    group: str
    op: str
    expires: int
    work: dict[str, str] = Field(description="member -> work id")


class MemberOutcome(BaseModel):
    work: str
    status: Status
    reason: str | None
    result: Any = None


class GroupStatus(BaseModel):
    gid: int
    group: str
    op: str
    args: dict[str, Any]
    when_available: bool
    expires: int
    created: float
    outcomes: dict[str, MemberOutcome]
    counts: dict[str, int]


# --- firmware updates (docs/ota.md) ---

UpdateState = Literal["downloading", "verified", "installing", "installed", "rolled_back",
                      "rejected"]


class UpdateOut(BaseModel):
    device: str
    version: str
    state: UpdateState
    percent: int | None
    reason: str | None
    at: float = Field(description="when the head-end received this state")


class FirmwareNow(BaseModel):
    version: str = Field(description="the version of the latest update report")
    state: UpdateState
    percent: int | None = None
    reason: str | None = None
    at: float
    installed: str | None = Field(None, description="the last version reported installed")


class ReleaseFile(BaseModel):
    path: str
    len: int
    sha256: str


class ReleaseOut(BaseModel):
    version: str
    kind: Literal["files", "image"]
    manifest: str = Field(description="the manifest text exactly as signed")
    sig: str = Field(description="hex r || s, ECDSA P-256 SHA-256")
    files: list[ReleaseFile]


DeviceOut.model_rebuild()
