"""Replication messages: the typed body of every frame kind, and its one encoding.

A frame (``replication.frames``) carries ``kind`` and a msgpack map ``body``; this module says
what that map holds for each kind. Every writer builds a message and calls ``to_body()``;
every reader calls ``decode(kind, body)`` and gets the message back. Nothing else in the
project builds or reads a body by hand.

One class per frame kind (IAM_CHANGE is one message with an ``op`` per IAM row type):

    kind            class                  fields (wire names)
    KEY_CREATED     KeyCreated             key_id account primary_region replica_regions key_spec key_usage
                                           origin creation_date_us current_version | shared | replica [material]
    KEY_MATERIAL    KeyMaterial            key_id version current_version | shared | [material]
    KEY_DELETED     KeyDeleted             key_id region
    PRIMARY_MOVED   PrimaryMoved           key_id primary_region replica_regions previous
    IAM_CHANGE      IamAccount ...         op + the row (see the Iam* classes)
    HEARTBEAT       Heartbeat              (empty)
    KEY_UPDATED     KeyUpdated             key_id primary_region replica_regions [current_version] [| shared |]
                                           [material]
    AUDIT_ANCHORS   AuditAnchors           anchors (each: message signature; replication.anchors)
    AUTHORIZE_QUERY AuthorizeQuery         nonce principal action key_id values[{key values}]   (not sequenced)
    AUTHORIZE_ANSWER AuthorizeAnswer       nonce allowed                                         (not sequenced)

    | shared | = the key's shared state, flattened into the body: ``materials`` (each backing
                 version's rotation record) and ``rotation`` (the automatic-rotation schedule, nil:
                 the primary has none)
    [x]        = optional: absent means "the frame says nothing about x"

Kind 3 (``KEY_ROTATED``) is reserved: it was defined and never sent (a rotation travels as
KEY_MATERIAL, which carries the new version and every other); its number is never reused.

Instants travel as integer microseconds since the Unix epoch (frames refuse floats); byte
strings (sealed material, sealed secrets) only ever in frames, never in the outbox, whose
entries hold the same message without them (``material`` and ``sealed_secret`` absent; the
sender seals them at send time).

Decoding is strict: a body with a key its message does not define (``UnknownFieldError``),
without a required key (``MissingFieldError``), or with a value of the wrong type or out of its
range (``MistypedFieldError``) is refused, with the message kind and the path of the field in
the error. The receiver treats a refused body as a frame it cannot apply now: its sequence
number is not consumed and the sender retries, so a receiver older than its sender stops the
channel (visible as ``apply_failed`` in the status) instead of dropping a change.

Version policy (as for frames): a message's schema is named by its frame's version and kind.
A field is added only with a default and is left out of the body while at that default
(``omit_default``), so receivers that predate it still accept every message that does not use
it; upgrade receivers before senders use it. Fields are never removed, renamed or retyped; a
new meaning takes a new field or a new kind, and kind numbers are never reused.

Adding a kind: a new ``FrameKind`` number in ``frames``, a
frozen dataclass here subclassing ``Message`` with ``KIND`` and its fields (each with a codec
in ``wire(...)``), an entry in ``MESSAGES``. The property tests (tests/unit/test_messages.py)
cover every class in ``MESSAGES`` from the codecs alone, and a test fails while a kind has no
message.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Generic, TypeVar

from regiond.domain.key import KeySpec, KeyUsage, Origin
from regiond.domain.principal import PrincipalKind
from replication.errors import ReplicationError
from replication.frames import REGION_PATTERN, FrameKind

__all__ = [
    "IAM_MESSAGES",
    "MESSAGES",
    "RESERVED_KINDS",
    "AuditAnchors",
    "AuthorizeAnswer",
    "AuthorizeQuery",
    "ConditionValue",
    "Heartbeat",
    "IamAccessKey",
    "IamAccessKeyDeleted",
    "IamAccessKeyStatus",
    "IamAccount",
    "IamChange",
    "IamPolicy",
    "IamPolicyDeleted",
    "IamPrincipal",
    "KeyCreated",
    "KeyDeleted",
    "KeyMaterial",
    "KeyMessage",
    "KeyUpdated",
    "Message",
    "MessageError",
    "MissingFieldError",
    "MistypedFieldError",
    "PrimaryMoved",
    "ReplicaProperties",
    "Rotation",
    "SealedVersion",
    "SharedState",
    "SignedDigest",
    "UnknownFieldError",
    "VersionRecord",
    "decode",
    "from_us",
    "to_us",
]

RESERVED_KINDS = {3: "KEY_ROTATED: defined and never sent; a rotation travels as KEY_MATERIAL"}
"""Frame kind numbers that must never be given to a new kind."""

U63_MAX = 2**63 - 1
EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
MICROSECOND = dt.timedelta(microseconds=1)
MAX_US = (dt.datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=dt.UTC) - EPOCH) // MICROSECOND


def to_us(value: dt.datetime) -> int:
    """Microseconds since the Unix epoch: instants travel as exact integers (frames refuse floats)."""
    return (value - EPOCH) // MICROSECOND


def from_us(value: int) -> dt.datetime:
    return EPOCH + value * MICROSECOND


# --- errors -----------------------------------------------------------------------------------


class MessageError(ReplicationError, ValueError):
    """A frame body is not the message its kind defines; the subclass says how, the text where."""


class UnknownFieldError(MessageError):
    """The body holds a key its message does not define (a newer sender, or a forgery)."""


class MissingFieldError(MessageError):
    """A required key is absent."""


class MistypedFieldError(MessageError):
    """A value has the wrong type, is out of range, or is not one of the allowed values."""


# --- codecs: one per wire type ------------------------------------------------------------------

T = TypeVar("T")
E = TypeVar("E", bound=enum.Enum)


class Codec(Generic[T]):
    """Turns a field's value into its wire form and back; ``decode`` raises ``MistypedFieldError``."""

    def encode(self, value: T) -> Any:
        return value

    def decode(self, raw: object, path: str) -> T:
        raise NotImplementedError


def _mistyped(path: str, what: str) -> MistypedFieldError:
    return MistypedFieldError(f"{path} must be {what}")


@dataclass(frozen=True)
class StrCodec(Codec[str]):
    """A text string, optionally a full match of ``pattern``."""

    pattern: re.Pattern[str] | None = None
    what: str = "a string"

    def decode(self, raw: object, path: str) -> str:
        if not isinstance(raw, str) or (self.pattern is not None and not self.pattern.fullmatch(raw)):
            raise _mistyped(path, self.what)
        return raw


@dataclass(frozen=True)
class IntCodec(Codec[int]):
    """An integer in [minimum, 2**63) (a bool is not an integer here)."""

    minimum: int = 0

    def decode(self, raw: object, path: str) -> int:
        if isinstance(raw, bool) or not isinstance(raw, int) or not self.minimum <= raw <= U63_MAX:
            raise _mistyped(path, f"an integer in [{self.minimum}, 2**63)")
        return raw


class BoolCodec(Codec[bool]):
    def decode(self, raw: object, path: str) -> bool:
        if not isinstance(raw, bool):
            raise _mistyped(path, "a boolean")
        return raw


class BytesCodec(Codec[bytes]):
    def decode(self, raw: object, path: str) -> bytes:
        if not isinstance(raw, bytes):
            raise _mistyped(path, "a byte string")
        return raw


class TimeCodec(Codec[dt.datetime]):
    """An aware instant as integer microseconds since the Unix epoch (years 1970 to 9999)."""

    def encode(self, value: dt.datetime) -> Any:
        return to_us(value)

    def decode(self, raw: object, path: str) -> dt.datetime:
        if isinstance(raw, bool) or not isinstance(raw, int) or not 0 <= raw <= MAX_US:
            raise _mistyped(path, "an instant in microseconds since 1970")
        return from_us(raw)


@dataclass(frozen=True)
class EnumCodec(Codec[E]):
    """A member of a string enum, by value."""

    enum_type: type[E]

    def encode(self, value: E) -> Any:
        return value.value

    def decode(self, raw: object, path: str) -> E:
        try:
            return self.enum_type(raw)
        except ValueError:
            raise _mistyped(path, f"a {self.enum_type.__name__}") from None


@dataclass(frozen=True)
class ChoiceCodec(Codec[str]):
    """One of a few fixed strings."""

    choices: tuple[str, ...]

    def decode(self, raw: object, path: str) -> str:
        if not isinstance(raw, str) or raw not in self.choices:
            raise _mistyped(path, "one of " + ", ".join(self.choices))
        return raw


@dataclass(frozen=True)
class ListCodec(Codec[tuple[T, ...]]):
    """An array, decoded as a tuple."""

    item: Codec[T]

    def encode(self, value: tuple[T, ...]) -> Any:
        return [self.item.encode(v) for v in value]

    def decode(self, raw: object, path: str) -> tuple[T, ...]:
        if not isinstance(raw, list):
            raise _mistyped(path, "an array")
        return tuple(self.item.decode(v, f"{path}[{i}]") for i, v in enumerate(raw))


@dataclass(frozen=True)
class PairCodec(Codec[tuple[str, str]]):
    """A two-element array of strings (a tag)."""

    def encode(self, value: tuple[str, str]) -> Any:
        return [value[0], value[1]]

    def decode(self, raw: object, path: str) -> tuple[str, str]:
        if not isinstance(raw, list) or len(raw) != 2 or not all(isinstance(x, str) for x in raw):
            raise _mistyped(path, "a [key, value] pair of strings")
        return (raw[0], raw[1])


@dataclass(frozen=True)
class NullableCodec(Codec[T | None]):
    """``inner``, or nil for None."""

    inner: Codec[T]

    def encode(self, value: T | None) -> Any:
        return None if value is None else self.inner.encode(value)

    def decode(self, raw: object, path: str) -> T | None:
        return None if raw is None else self.inner.decode(raw, path)


R = TypeVar("R", bound="Record")


@dataclass(frozen=True)
class RecordCodec(Codec[R]):
    """A nested map holding a ``Record``."""

    record: type[R]

    def encode(self, value: R) -> Any:
        return value.to_body()

    def decode(self, raw: object, path: str) -> R:
        if not isinstance(raw, dict):
            raise _mistyped(path, "a map")
        return self.record.from_body(raw, path=path)


@dataclass(frozen=True)
class FlatCodec(Codec[R]):
    """A ``Record`` whose keys sit in the enclosing map itself (the body stays flat on the wire).

    As an optional field it is present when any of its keys is, and then it must be whole.
    """

    record: type[R]

    def wire_keys(self) -> tuple[str, ...]:
        return tuple(_wire_name(f) for f in dataclasses.fields(self.record))  # type: ignore[arg-type]


def wire(codec: Codec[Any], *, name: str | None = None, omit_default: bool = False) -> dict[str, Any]:
    """Field metadata: the codec, the wire name (default: the attribute's), and whether the field
    is left out of the body while at its default (the rule for every field added later)."""
    return {"codec": codec, "name": name, "omit_default": omit_default}


def _wire_name(f: dataclasses.Field[Any]) -> str:
    return f.metadata.get("name") or f.name


def _has_default(f: dataclasses.Field[Any]) -> bool:
    return f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING


def _default(f: dataclasses.Field[Any]) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    factory: Callable[[], Any] = f.default_factory  # type: ignore[assignment]
    return factory()


class Record:
    """A map on the wire, one key per dataclass field (see ``wire``); strict both ways."""

    WHAT: ClassVar[str] = "record"

    def to_body(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            value = getattr(self, f.name)
            codec: Codec[Any] = f.metadata["codec"]
            if f.metadata["omit_default"] and _has_default(f) and value == _default(f):
                continue
            if isinstance(codec, FlatCodec):
                if value is not None:
                    out.update(value.to_body())
                continue
            out[_wire_name(f)] = codec.encode(value)
        return out

    @classmethod
    def from_body(cls: type[R], body: Mapping[str, Any], *, path: str | None = None) -> R:
        where = path or cls.WHAT
        if not isinstance(body, Mapping):
            raise _mistyped(where, "a map")
        known: set[str] = set()
        values: dict[str, Any] = {}
        for f in dataclasses.fields(cls):  # type: ignore[arg-type]
            codec: Codec[Any] = f.metadata["codec"]
            if isinstance(codec, FlatCodec):
                keys = codec.wire_keys()
                known.update(keys)
                if any(k in body for k in keys) or not _has_default(f):
                    values[f.name] = codec.record.from_body({k: body[k] for k in keys if k in body}, path=where)
                continue
            name = _wire_name(f)
            known.add(name)
            if name in body:
                values[f.name] = codec.decode(body[name], f"{where}.{name}")
            elif not _has_default(f):
                raise MissingFieldError(f"{where}.{name} is missing")
        unknown = sorted(str(k) for k in body if k not in known)
        if unknown:
            raise UnknownFieldError(f"{where} has unknown field(s): {', '.join(unknown)[:200]}")
        return cls(**values)


# --- parts of messages ----------------------------------------------------------------------------

REGION = StrCodec(re.compile(REGION_PATTERN), "a region name")
TEXT = StrCodec()
POSITIVE = IntCodec(minimum=1)
TIME = TimeCodec()
ACCESS_KEY_STATUS = ChoiceCodec(("Active", "Inactive"))
ROTATION_TYPE = ChoiceCodec(("AUTOMATIC", "ON_DEMAND"))


@dataclass(frozen=True, slots=True)
class VersionRecord(Record):
    """What ListKeyRotations shows of one backing version (wire: an item of ``materials``)."""

    WHAT: ClassVar[str] = "materials[]"
    version: int = field(metadata=wire(POSITIVE))
    rotation_type: str | None = field(metadata=wire(NullableCodec(ROTATION_TYPE)))
    rotation_date: dt.datetime | None = field(metadata=wire(NullableCodec(TIME), name="rotation_date_us"))

    def __post_init__(self) -> None:
        if (self.rotation_type is None) != (self.rotation_date is None):
            raise MistypedFieldError(f"materials[] v{self.version}: rotation_type and rotation_date_us go together")


@dataclass(frozen=True, slots=True)
class Rotation(Record):
    """The primary's automatic-rotation schedule (a shared property)."""

    WHAT: ClassVar[str] = "rotation"
    enabled: bool = field(metadata=wire(BoolCodec()))
    period_days: int = field(metadata=wire(IntCodec()))
    anchor_date: dt.datetime | None = field(metadata=wire(NullableCodec(TIME), name="anchor_date_us"))
    next_rotation_date: dt.datetime | None = field(
        metadata=wire(NullableCodec(TIME), name="next_rotation_date_us")
    )


@dataclass(frozen=True, slots=True)
class SharedState(Record):
    """A multi-region key's shared state beside its material: every backing version's rotation
    record and the rotation schedule (None: the primary has none). Flat in the body."""

    WHAT: ClassVar[str] = "shared state"
    materials: tuple[VersionRecord, ...] = field(metadata=wire(ListCodec(RecordCodec(VersionRecord))))
    rotation: Rotation | None = field(metadata=wire(NullableCodec(RecordCodec(Rotation))))

    @property
    def versions(self) -> tuple[int, ...]:
        """The backing versions whose material travels with the state (the sender seals them)."""
        return tuple(m.version for m in self.materials)


@dataclass(frozen=True, slots=True)
class SealedVersion(Record):
    """One backing version's material, HPKE-sealed to the destination (``crypto.hpke``)."""

    WHAT: ClassVar[str] = "material[]"
    version: int = field(metadata=wire(POSITIVE))
    sealed: bytes = field(metadata=wire(BytesCodec()), repr=False)
    created_at: dt.datetime = field(metadata=wire(TIME, name="created_at_us"))


@dataclass(frozen=True, slots=True)
class ReplicaProperties(Record):
    """What ReplicateKey sets on the new replica only (per-region properties)."""

    WHAT: ClassVar[str] = "replica"
    description: str = field(metadata=wire(TEXT))
    policy: str = field(metadata=wire(TEXT))
    tags: tuple[tuple[str, str], ...] = field(metadata=wire(ListCodec(PairCodec())))


MATERIAL = NullableCodec(ListCodec(RecordCodec(SealedVersion)))
CURRENT_VERSION = NullableCodec(POSITIVE)


# --- messages ------------------------------------------------------------------------------------


class Message(Record):
    """The body of one frame kind."""

    KIND: ClassVar[FrameKind]

    @classmethod
    def decode(cls, body: Mapping[str, Any]) -> Message:
        return cls.from_body(body, path=cls.KIND.name)


@dataclass(frozen=True, slots=True)
class KeyCreated(Message):
    """ReplicateKey: create the replica in the destination, with the key's complete shared state."""

    KIND: ClassVar[FrameKind] = FrameKind.KEY_CREATED
    key_id: str = field(metadata=wire(TEXT))
    account: str = field(metadata=wire(TEXT))
    primary_region: str = field(metadata=wire(REGION))
    replica_regions: tuple[str, ...] = field(metadata=wire(ListCodec(REGION)))
    key_spec: KeySpec = field(metadata=wire(EnumCodec(KeySpec)))
    key_usage: KeyUsage = field(metadata=wire(EnumCodec(KeyUsage)))
    origin: Origin = field(metadata=wire(EnumCodec(Origin)))
    creation_date: dt.datetime = field(metadata=wire(TIME, name="creation_date_us"))
    current_version: int | None = field(metadata=wire(CURRENT_VERSION))
    shared: SharedState = field(metadata=wire(FlatCodec(SharedState)))
    replica: ReplicaProperties = field(metadata=wire(RecordCodec(ReplicaProperties)))
    material: tuple[SealedVersion, ...] | None = field(default=None, metadata=wire(MATERIAL, omit_default=True))

    def as_update(self) -> KeyUpdated:
        """The same shared state as a KEY_UPDATED (a re-sent creation for a key already held)."""
        return KeyUpdated(self.key_id, self.primary_region, self.replica_regions, self.current_version,
                          self.shared, self.material)  # fmt: skip


@dataclass(frozen=True, slots=True)
class KeyMaterial(Message):
    """A new backing version became current at the primary (rotation, import); carries them all."""

    KIND: ClassVar[FrameKind] = FrameKind.KEY_MATERIAL
    key_id: str = field(metadata=wire(TEXT))
    version: int = field(metadata=wire(POSITIVE))
    current_version: int | None = field(metadata=wire(CURRENT_VERSION))
    shared: SharedState = field(metadata=wire(FlatCodec(SharedState)))
    material: tuple[SealedVersion, ...] | None = field(default=None, metadata=wire(MATERIAL, omit_default=True))


@dataclass(frozen=True, slots=True)
class KeyUpdated(Message):
    """Shared metadata changed (replica set, rotation schedule, a new primary's take-over)."""

    KIND: ClassVar[FrameKind] = FrameKind.KEY_UPDATED
    key_id: str = field(metadata=wire(TEXT))
    primary_region: str = field(metadata=wire(REGION))
    replica_regions: tuple[str, ...] = field(metadata=wire(ListCodec(REGION)))
    current_version: int | None = field(default=None, metadata=wire(CURRENT_VERSION))
    shared: SharedState | None = field(default=None, metadata=wire(FlatCodec(SharedState)))
    material: tuple[SealedVersion, ...] | None = field(default=None, metadata=wire(MATERIAL, omit_default=True))


@dataclass(frozen=True, slots=True)
class PrimaryMoved(Message):
    """UpdatePrimaryRegion: a new epoch (the frame's) and primary."""

    KIND: ClassVar[FrameKind] = FrameKind.PRIMARY_MOVED
    key_id: str = field(metadata=wire(TEXT))
    primary_region: str = field(metadata=wire(REGION))
    replica_regions: tuple[str, ...] = field(metadata=wire(ListCodec(REGION)))
    previous: str = field(metadata=wire(REGION))


@dataclass(frozen=True, slots=True)
class KeyDeleted(Message):
    """``region``'s copy of the key was destroyed (only that region may say so)."""

    KIND: ClassVar[FrameKind] = FrameKind.KEY_DELETED
    key_id: str = field(metadata=wire(TEXT))
    region: str = field(metadata=wire(REGION))


@dataclass(frozen=True, slots=True)
class Heartbeat(Message):
    """Where does the peer stand? Applies nothing."""

    KIND: ClassVar[FrameKind] = FrameKind.HEARTBEAT


@dataclass(frozen=True, slots=True)
class SignedDigest(Record):
    """One signed audit digest, exactly as its region signed it (``regiond.domain.audit_anchor``)."""

    WHAT: ClassVar[str] = "anchors[]"
    message: bytes = field(metadata=wire(BytesCodec()))
    signature: bytes = field(metadata=wire(BytesCodec()))


@dataclass(frozen=True, slots=True)
class AuditAnchors(Message):
    """The source's newest signed audit digests, for the destination to keep (``replication.anchors``,
    which also checks each one's signature). Outside the outbox stream (seq 0): applies nothing."""

    KIND: ClassVar[FrameKind] = FrameKind.AUDIT_ANCHORS
    anchors: tuple[SignedDigest, ...] = field(metadata=wire(ListCodec(RecordCodec(SignedDigest))))


KeyMessage = KeyCreated | KeyMaterial | KeyUpdated | PrimaryMoved | KeyDeleted


@dataclass(frozen=True, slots=True)
class ConditionValue(Record):
    """One condition key of a request and its values (``aws:SourceIp``: ``["10.0.0.1"]``)."""

    WHAT: ClassVar[str] = "values[]"
    key: str = field(metadata=wire(TEXT))
    values: tuple[str, ...] = field(metadata=wire(ListCodec(TEXT)))


@dataclass(frozen=True, slots=True)
class AuthorizeQuery(Message):
    """Another region asks: may ``principal`` perform ``action`` on this region's copy of ``key_id``,
    with these condition ``values``? Not sequenced, never in a batch (``replication.authorize``)."""

    KIND: ClassVar[FrameKind] = FrameKind.AUTHORIZE_QUERY
    nonce: bytes = field(metadata=wire(BytesCodec()))
    principal: str = field(metadata=wire(TEXT))
    action: str = field(metadata=wire(TEXT))
    key_id: str = field(metadata=wire(TEXT))
    values: tuple[ConditionValue, ...] = field(metadata=wire(ListCodec(RecordCodec(ConditionValue))))


@dataclass(frozen=True, slots=True)
class AuthorizeAnswer(Message):
    """The answer to the ``AuthorizeQuery`` with ``nonce``."""

    KIND: ClassVar[FrameKind] = FrameKind.AUTHORIZE_ANSWER
    nonce: bytes = field(metadata=wire(BytesCodec()))
    allowed: bool = field(metadata=wire(BoolCodec()))


class IamChange(Message):
    """An IAM row changed in the home region; ``op`` says which kind of row."""

    KIND: ClassVar[FrameKind] = FrameKind.IAM_CHANGE
    OP: ClassVar[str]

    def to_body(self) -> dict[str, Any]:
        return {"op": self.OP, **super().to_body()}

    @classmethod
    def decode(cls, body: Mapping[str, Any]) -> Message:
        if not isinstance(body, Mapping):
            raise _mistyped(cls.KIND.name, "a map")
        op = body.get("op")
        if "op" not in body:
            raise MissingFieldError(f"{cls.KIND.name}.op is missing")
        message = IAM_MESSAGES.get(op) if isinstance(op, str) else None
        if message is None:
            raise _mistyped(f"{cls.KIND.name}.op", "one of " + ", ".join(IAM_MESSAGES))
        rest = {k: v for k, v in body.items() if k != "op"}
        return message.from_body(rest, path=f"{cls.KIND.name}({op})")


@dataclass(frozen=True, slots=True)
class IamAccount(IamChange):
    OP: ClassVar[str] = "account"
    account_id: str = field(metadata=wire(TEXT))
    root_principal_id: str = field(metadata=wire(TEXT))


@dataclass(frozen=True, slots=True)
class IamPrincipal(IamChange):
    """A user, role or account root, with the home region's principal id."""

    OP: ClassVar[str] = "principal"
    arn: str = field(metadata=wire(TEXT))
    account_id: str = field(metadata=wire(TEXT))
    kind: PrincipalKind = field(metadata=wire(EnumCodec(PrincipalKind)))
    name: str = field(metadata=wire(TEXT))
    principal_id: str = field(metadata=wire(TEXT))


@dataclass(frozen=True, slots=True)
class IamAccessKey(IamChange):
    """A new access key; its secret is sealed to the destination at send time (None in the
    outbox, and in a frame when the key was deleted before it was sent: a deletion follows)."""

    OP: ClassVar[str] = "access_key"
    access_key_id: str = field(metadata=wire(TEXT))
    principal_arn: str = field(metadata=wire(TEXT))
    status: str = field(metadata=wire(ACCESS_KEY_STATUS))
    sealed_secret: bytes | None = field(
        default=None, repr=False, metadata=wire(NullableCodec(BytesCodec()), omit_default=True)
    )


@dataclass(frozen=True, slots=True)
class IamAccessKeyStatus(IamChange):
    OP: ClassVar[str] = "access_key_status"
    access_key_id: str = field(metadata=wire(TEXT))
    status: str = field(metadata=wire(ACCESS_KEY_STATUS))


@dataclass(frozen=True, slots=True)
class IamAccessKeyDeleted(IamChange):
    OP: ClassVar[str] = "access_key_deleted"
    access_key_id: str = field(metadata=wire(TEXT))


@dataclass(frozen=True, slots=True)
class IamPolicy(IamChange):
    """An inline identity policy put (created or replaced)."""

    OP: ClassVar[str] = "policy"
    principal_arn: str = field(metadata=wire(TEXT))
    policy_name: str = field(metadata=wire(TEXT))
    document: str = field(metadata=wire(TEXT))


@dataclass(frozen=True, slots=True)
class IamPolicyDeleted(IamChange):
    OP: ClassVar[str] = "policy_deleted"
    principal_arn: str = field(metadata=wire(TEXT))
    policy_name: str = field(metadata=wire(TEXT))


IAM_MESSAGES: dict[str, type[IamChange]] = {
    m.OP: m
    for m in (IamAccount, IamPrincipal, IamAccessKey, IamAccessKeyStatus, IamAccessKeyDeleted, IamPolicy,
              IamPolicyDeleted)
}  # fmt: skip

MESSAGES: dict[FrameKind, type[Message]] = {
    m.KIND: m
    for m in (KeyCreated, KeyMaterial, KeyDeleted, PrimaryMoved, IamChange, Heartbeat, KeyUpdated, AuditAnchors,
              AuthorizeQuery, AuthorizeAnswer)
}  # fmt: skip


def decode(kind: FrameKind, body: Mapping[str, Any]) -> Message:
    """The message a frame of ``kind`` carries in ``body``; a ``MessageError`` if it is not one."""
    message = MESSAGES.get(kind)
    if message is None:
        raise MessageError(f"frame kind {kind!r} has no message")
    return message.decode(body)
