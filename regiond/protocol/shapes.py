"""Request validation and response rendering driven by botocore's KMS service model.

The wire contract is botocore's ``kms/2014-11-01/service-2.json``: it is what boto3 and the
AWS CLI serialize from, so validating against it (instead of hand-written checks per
handler) is how we stay byte-compatible with AWS. The model is loaded from botocore's
*bundled* data directory only; user-level model overrides (``~/.aws/models``) are ignored on
purpose, because a server must not change its wire contract with the home directory it runs in.

Everything is compiled once, at import, into one closure per shape, so the hot path
(Encrypt/Decrypt/GenerateDataKey) does no reflection over the model: it runs a handful of
``type(v) is str`` checks, integer comparisons and one base64 decode.

AWS behaviour reproduced here (AWS KMS is a Coral service speaking ``awsJson1_1``):

* **Two phases, deserialization first.** A JSON value of the wrong type for its member is a
  ``SerializationException`` raised at once, with Coral's wording (``STRING_VALUE can not be
  converted to an Integer``, ``Start of list found where not expected``, ``Expected list or
  null`` ...). Only a body that deserializes cleanly is checked against constraints, and all
  constraint violations are then reported together in one ``ValidationException``:
  ``"2 validation errors detected: <a>; <b>"``, in model member order.
* **Unknown members are ignored**, and a member whose value is JSON ``null`` is treated as
  absent, as Coral's deserializer does (it is what lets an older service accept requests
  from a newer SDK). A null *required* member is reported as missing.
* **Member paths are lowerCamel** (``keyId``); list elements of structures are
  ``tags.1.member.tagKey`` (1-based). Constraints on the elements of a list of scalars and
  on map keys/values are reported once at the container's path, as
  ``Member must satisfy constraint: [...]`` / ``Map keys must satisfy constraint: [...]``.
* **Values are echoed** (``Value 'FOO' at 'keyUsage' ...``) except for blobs and members the
  model marks ``sensitive`` (Plaintext, key store passwords, XKS credentials), which read
  ``Value at 'plaintext' ...``; a missing sensitive member reads ``Value at`` too, never
  ``Value null at``. No message ever contains a blob's bytes or a sensitive value.
* **Blobs are standard, padded base64.** Anything else is a ``SerializationException``.
  Lengths of blobs are checked on the decoded bytes, lengths of strings in characters
  (code points, as the Smithy ``@length`` trait specifies).
* Patterns are checked with ``fullmatch`` in ASCII mode (Java's ``\\w``/``\\d``/``\\s`` are
  ASCII-only); patterns that could backtrack badly are skipped, see ``_safe_pattern``.
* **Text that cannot be stored is refused** (ours: the model is silent). PostgreSQL's ``text``
  and ``jsonb`` cannot hold U+0000 and an unpaired surrogate has no UTF-8 form, so every string
  member also satisfies ``[^\\u0000\\uD800-\\uDFFF]*`` (reported in AWS's pattern wording,
  beside the model's own pattern, which may admit both: ``.+`` does). Keys and values of an
  encryption context are exempt from the NUL half: AWS takes any text there, and a context is
  only hashed into the AAD and recorded as JSON bytes, never stored as text; the exception is
  a grant's constraints, which are stored (``_STORED_STRUCTURES``). A value holding either
  character is never echoed in a message (``Value at ...``).

Known departures: enum value sets are listed in botocore's order (AWS uses its own internal
order, which the model does not carry); the SerializationException wording for blob and
timestamp type mismatches is ours, modelled on Coral's.

Rendering (``render_response``) walks the output shape: bytes in blob members become
base64 text, datetimes in timestamp members become epoch seconds (float), ``None`` values
and members the model does not declare are dropped. Dropping undeclared members is a safety
net: a service result that accidentally carries an internal field (say, key material under
a private name) can never reach the wire.
"""

from __future__ import annotations

import binascii
import os
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

import botocore
import orjson
from botocore.loaders import Loader

from regiond.errors import SerializationException, UnknownOperationException, ValidationException

__all__ = ["RequestValidator", "is_kms_operation", "operation_names", "render_response", "validate_request"]

SERVICE_NAME: Final = "kms"
API_VERSION: Final = "2014-11-01"

# A converter checks one JSON value against its shape, appends constraint violations to
# ``errors`` and returns the converted value; type mismatches raise SerializationException.
# ``path`` is the lowerCamel member path of the value, used only when reporting.
_Converter = Callable[[Any, list[str], str], Any]
_Renderer = Callable[[Any], Any]


def _load_model() -> dict[str, Any]:
    """Load the KMS model from botocore's bundled data only (see module docstring)."""
    data_path = os.path.join(os.path.dirname(botocore.__file__), "data")
    loader = Loader(extra_search_paths=[data_path], include_default_search_paths=False, include_default_extras=False)
    model: dict[str, Any] = loader.load_service_model(SERVICE_NAME, "service-2", API_VERSION)
    return model


# --- error wording ----------------------------------------------------------------------


def _lower_camel(name: str) -> str:
    return name[:1].lower() + name[1:]


def _json_token(value: Any) -> str:
    """Coral's name for the JSON token it found where another type was expected."""
    if value is True:
        return "TRUE_VALUE"
    if value is False:
        return "FALSE_VALUE"
    if isinstance(value, int):
        return "NUMBER_VALUE"
    if isinstance(value, float):
        return "DECIMAL_VALUE"
    return "STRING_VALUE"


def _mismatch(value: Any, target: str) -> SerializationException:
    """Coral's SerializationException for a scalar member holding the wrong JSON type.

    ``target`` carries Coral's own article ("an Integer", "an Boolean", "a String").
    """
    if isinstance(value, list):
        return SerializationException("Start of list found where not expected")
    if isinstance(value, dict):
        return SerializationException("Start of structure or map found where not expected.")
    return SerializationException(f"{_json_token(value)} can not be converted to {target}")


def _container_mismatch(value: Any, expected: str) -> SerializationException:
    """Coral's wording when a list, map or structure member holds something else."""
    if isinstance(value, list):
        return SerializationException("Start of list found where not expected")
    if isinstance(value, dict):
        return SerializationException("Start of structure or map found where not expected.")
    return SerializationException(expected)


def _violation(path: str, shown: str | None, constraint: str) -> str:
    if shown is None:
        return f"Value at '{path}' failed to satisfy constraint: {constraint}"
    return f"Value '{shown}' at '{path}' failed to satisfy constraint: {constraint}"


def _java_str(value: Any) -> str:
    """Render a value the way Java's toString would, as AWS echoes it in messages."""
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, list):
        return "[" + ", ".join(_java_str(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}={_java_str(v)}" for k, v in value.items()) + "}"
    return str(value)


# --- constraints ------------------------------------------------------------------------


_UNSAFE_PATTERN = re.compile(r"\([^()]*[*+][^()]*\)[*+]|\([^()]*[*+][^()]*\)\{\d+,\}")

# Patterns the heuristic below flags but that were read and found linear. ServicePrincipalType:
# every repetition of the last group starts with a literal "." its character class cannot
# match, so there is only one way to split the input.
_REVIEWED_PATTERNS: Final = frozenset(
    {r"^([A-Za-z0-9\-]+)\.([A-Za-z0-9\-]+)(\.[A-Za-z0-9\-]+)+$"},
)


_SURROGATES: Final = re.compile("[\ud800-\udfff]")

STORABLE_PATTERN: Final = "[^\\u0000\\uD800-\\uDFFF]*"
"""The rule every string member satisfies besides its model constraints, as its messages show it."""

ENCODABLE_PATTERN: Final = "[^\\uD800-\\uDFFF]*"
"""The rule for encryption-context text, which is hashed but never stored as text."""

_HASHED_TEXT: Final = frozenset({"EncryptionContextKey", "EncryptionContextValue"})
"""String shapes whose values are only hashed into the AAD and recorded as JSON bytes."""

_STORED_STRUCTURES: Final = frozenset({"GrantConstraints"})
"""Structures stored as ``jsonb``: the strings below them follow the stored-text rule, always."""


def _storable(text: str) -> bool:
    """No U+0000 and no unpaired surrogate; ``isascii`` is O(1), so ASCII text costs one scan."""
    return "\x00" not in text and (text.isascii() or _SURROGATES.search(text) is None)


def _encodable(text: str) -> bool:
    """No unpaired surrogate: the text has a UTF-8 form (it may hold U+0000)."""
    return text.isascii() or _SURROGATES.search(text) is None


def _echoable(text: str) -> str | None:
    """``text`` if a message may quote it; None for text holding NUL or a surrogate."""
    return text if _storable(text) else None


def _safe_pattern(pattern: str) -> re.Pattern[str] | None:
    """Compile a model pattern, or return None if it is not cheap and safe to run.

    Model patterns are Java regexes; the KMS ones are character classes and anchored
    alternations that Python reads the same way. A group holding an unbounded quantifier
    that is itself repeated without bound (``(a+)+``) can backtrack exponentially, so such
    patterns are skipped rather than run on attacker-chosen input.
    """
    if _UNSAFE_PATTERN.search(pattern) and pattern not in _REVIEWED_PATTERNS:
        return None
    try:
        return re.compile(pattern, re.ASCII)
    except re.error:
        return None


@dataclass(frozen=True, slots=True)
class _Limits:
    """The constraints of one scalar-ish shape; ``unit`` is "length" or "value".

    ``text_ok`` is the text rule of a string shape (``_storable`` or ``_encodable``, see the
    module docstring), ``text_rule`` the pattern its failure is reported as; None elsewhere.
    """

    lo: int | None
    hi: int | None
    enum: frozenset[str] | None
    enum_text: str
    pattern: str | None
    regex: re.Pattern[str] | None
    unit: str
    text_ok: Callable[[str], bool] | None = None
    text_rule: str = ""

    @classmethod
    def of(cls, shape: Mapping[str, Any], unit: str, *, text_ok: Callable[[str], bool] | None = None) -> _Limits:
        enum = shape.get("enum")
        pattern = shape.get("pattern")
        regex = _safe_pattern(pattern) if pattern is not None else None
        return cls(
            lo=shape.get("min"),
            hi=shape.get("max"),
            enum=frozenset(enum) if enum is not None else None,
            enum_text="[" + ", ".join(enum) + "]" if enum is not None else "",
            pattern=pattern if regex is not None else None,
            regex=regex,
            unit=unit,
            text_ok=text_ok,
            text_rule=STORABLE_PATTERN if text_ok is _storable else ENCODABLE_PATTERN if text_ok is not None else "",
        )

    @property
    def empty(self) -> bool:
        return self.lo is None and self.hi is None and self.enum is None and self.regex is None and self.text_ok is None

    def ok(self, measure: int, text: str | None) -> bool:
        """Fast predicate for the hot path; ``failures`` explains a False."""
        if self.lo is not None and measure < self.lo:
            return False
        if self.hi is not None and measure > self.hi:
            return False
        if text is not None:
            if self.enum is not None and text not in self.enum:
                return False
            if self.regex is not None and self.regex.fullmatch(text) is None:
                return False
            if self.text_ok is not None and not self.text_ok(text):
                return False
        return True

    def text_fails(self, text: str) -> bool:
        """The text rule is broken and is the news: the model's pattern and enum, if any, hold."""
        if self.text_ok is None or self.text_ok(text):
            return False
        if self.enum is not None and text not in self.enum:
            return False
        return self.regex is None or self.regex.fullmatch(text) is not None

    def failures(self, measure: int, text: str | None) -> list[str]:
        out: list[str] = []
        if self.hi is not None and measure > self.hi:
            out.append(f"Member must have {self.unit} less than or equal to {self.hi}")
        if self.lo is not None and measure < self.lo:
            out.append(f"Member must have {self.unit} greater than or equal to {self.lo}")
        if text is not None:
            if self.regex is not None and self.regex.fullmatch(text) is None:
                out.append(f"Member must satisfy regular expression pattern: {self.pattern}")
            if self.enum is not None and text not in self.enum:
                out.append(f"Member must satisfy enum value set: {self.enum_text}")
            if self.text_fails(text):
                out.append(f"Member must satisfy regular expression pattern: {self.text_rule}")
        return out

    def describe(self, *, text_rule: bool = False) -> str:
        """Every model constraint, bracketed: the form AWS uses for list elements and map keys.

        ``text_rule`` adds ours (module docstring), for when it is the one an element broke.
        """
        parts: list[str] = []
        if self.hi is not None:
            parts.append(f"Member must have {self.unit} less than or equal to {self.hi}")
        if self.lo is not None:
            parts.append(f"Member must have {self.unit} greater than or equal to {self.lo}")
        if self.regex is not None:
            parts.append(f"Member must satisfy regular expression pattern: {self.pattern}")
        if self.enum is not None:
            parts.append(f"Member must satisfy enum value set: {self.enum_text}")
        if text_rule and self.text_ok is not None:
            parts.append(f"Member must satisfy regular expression pattern: {self.text_rule}")
        return "[" + ", ".join(parts) + "]"


@dataclass(frozen=True, slots=True)
class _Node:
    """A compiled shape: its converter, plus what containers need to know about it."""

    convert: _Converter
    kind: str  # "scalar" | "blob" | "list" | "map" | "structure"
    limits: _Limits | None  # for scalars and blobs: checked per element when inside a list/map
    secret: bool  # a blob or a sensitive shape: its value is never echoed
    sensitive: bool  # marked sensitive by the model: even its absence reads "Value at"
    passthrough: bool  # the converter returns its input unchanged (it only checks)


# --- request compilation ----------------------------------------------------------------


class _RequestCompiler:
    """Turns model shapes into converters, once; memoised by shape name and text rule.

    ``stored`` is set below a structure of ``_STORED_STRUCTURES``: there, encryption-context
    text is stored, so it follows the stored-text rule (the same shape compiles twice).
    """

    def __init__(self, shapes: Mapping[str, Mapping[str, Any]]) -> None:
        self._shapes = shapes
        self._done: dict[tuple[str, bool], _Node] = {}
        self._building: dict[tuple[str, bool], list[_Converter]] = {}

    def node(self, name: str, stored: bool = False) -> _Node:
        key = (name, stored)
        done = self._done.get(key)
        if done is not None:
            return done
        if key in self._building:  # a recursive shape: refer to it through a cell
            cell = self._building[key]
            return _Node(lambda v, e, p: cell[0](v, e, p), "structure", None, False, False, False)
        self._building[key] = []
        node = self._build(name, self._shapes[name], stored or name in _STORED_STRUCTURES)
        self._building.pop(key).append(node.convert)
        self._done[key] = node
        return node

    def _build(self, name: str, shape: Mapping[str, Any], stored: bool) -> _Node:
        kind = shape["type"]
        sens = bool(shape.get("sensitive"))
        if kind == "string":
            text_ok = _encodable if name in _HASHED_TEXT and not stored else _storable
            limits = _Limits.of(shape, "length", text_ok=text_ok)
            return _Node(_string(limits, sens), "scalar", limits, sens, sens, True)
        if kind in ("integer", "long"):
            limits = _Limits.of(shape, "value")
            target = "an Integer" if kind == "integer" else "a Long"
            return _Node(_integer(limits, target, sens), "scalar", limits, sens, sens, True)
        if kind == "boolean":
            return _Node(_boolean, "scalar", None, sens, sens, True)
        if kind in ("float", "double"):
            return _Node(_number, "scalar", None, sens, sens, False)
        if kind == "timestamp":
            return _Node(_timestamp, "scalar", None, sens, sens, False)
        if kind == "blob":
            limits = _Limits.of(shape, "length")
            return _Node(_blob(limits), "blob", limits, True, sens, False)
        if kind == "list":
            return _Node(self._list(shape, stored), "list", None, sens, sens, False)
        if kind == "map":
            return _Node(self._map(shape, stored), "map", None, sens, sens, False)
        if kind == "structure":
            return _Node(self._structure(shape, stored), "structure", None, sens, sens, False)
        raise ValueError(f"unsupported shape type {kind!r} in the KMS model")

    def _structure(self, shape: Mapping[str, Any], stored: bool) -> _Converter:
        required = frozenset(shape.get("required", ()))
        members: list[tuple[str, str, _Converter, bool, bool]] = []
        for name, ref in shape.get("members", {}).items():
            child = self.node(ref["shape"], stored)
            members.append((name, _lower_camel(name), child.convert, name in required, child.sensitive))
        plan = tuple(members)

        def convert(value: Any, errors: list[str], path: str) -> dict[str, Any]:
            if type(value) is not dict:
                raise _container_mismatch(value, "Expected null")
            out: dict[str, Any] = {}
            for name, segment, conv, is_required, sensitive in plan:
                v = value.get(name)
                if v is None:  # most members of most requests: no path to build
                    if is_required:
                        shown = "Value at" if sensitive else "Value null at"
                        child_path = f"{path}.{segment}" if path else segment
                        errors.append(f"{shown} '{child_path}' failed to satisfy constraint: Member must not be null")
                    continue
                out[name] = conv(v, errors, f"{path}.{segment}" if path else segment)
            return out

        return convert

    def _list(self, shape: Mapping[str, Any], stored: bool) -> _Converter:
        limits = _Limits.of(shape, "length")
        elem = self.node(shape["member"]["shape"], stored)
        elem_conv = elem.convert
        elem_limits = elem.limits if elem.limits is not None and not elem.limits.empty else None
        nested = elem.kind in ("list", "map", "structure")
        shows_values = not elem.secret and not nested

        def convert(value: Any, errors: list[str], path: str) -> list[Any]:
            if type(value) is not list:
                raise _container_mismatch(value, "Expected list or null")
            if nested:
                out = []
                for i, v in enumerate(value, 1):
                    if v is None:
                        raise SerializationException("Unexpected null element in a list")
                    out.append(elem_conv(v, errors, f"{path}.{i}.member"))
            else:
                sink: list[str] = []
                out = []
                for v in value:
                    if v is None:
                        raise SerializationException("Unexpected null element in a list")
                    out.append(elem_conv(v, sink, path))
                if sink and elem_limits is not None:  # only constrained elements can fail
                    described = elem_limits.describe(text_rule=_any_text_fails(elem_limits, value))
                    errors.append(
                        _violation(path, _shown(value, shows_values), f"Member must satisfy constraint: {described}")
                    )
            _check_count(limits, value, shows_values, path, errors)
            return out

        return convert

    def _map(self, shape: Mapping[str, Any], stored: bool) -> _Converter:
        limits = _Limits.of(shape, "length")
        key = self.node(shape["key"]["shape"], stored)
        val = self.node(shape["value"]["shape"], stored)
        key_limits = key.limits if key.limits is not None and not key.limits.empty else None
        val_conv = val.convert
        val_limits = val.limits if val.limits is not None and not val.limits.empty else None
        nested = val.kind in ("list", "map", "structure")
        plain_values = val.passthrough and val_limits is None
        shows_values = not val.secret and not nested and not key.secret

        def convert(value: Any, errors: list[str], path: str) -> dict[str, Any]:
            if type(value) is not dict:
                raise _container_mismatch(value, "Expected map or null")
            if plain_values:
                out = dict(value)
                for v in out.values():
                    if v is None:
                        raise SerializationException("Unexpected null value in a map")
                    val_conv(v, errors, path)  # type check only; these shapes have no constraints
            else:
                out = {}
                sink: list[str] = []
                for k, v in value.items():
                    if v is None:
                        raise SerializationException("Unexpected null value in a map")
                    out[k] = val_conv(v, errors if nested else sink, f"{path}.{k}" if nested else path)
                if sink and val_limits is not None:  # only constrained values can fail
                    described = val_limits.describe(text_rule=_any_text_fails(val_limits, value.values()))
                    shown = _shown(value, shows_values)
                    errors.append(_violation(path, shown, f"Map value must satisfy constraint: {described}"))
            if key_limits is not None and not all(key_limits.ok(len(k), k) for k in out):
                described = key_limits.describe(text_rule=_any_text_fails(key_limits, out))
                errors.append(
                    _violation(path, _shown(value, shows_values), f"Map keys must satisfy constraint: {described}")
                )
            _check_count(limits, value, shows_values, path, errors)
            return out

        if _text_only(key.limits) and _text_only(val.limits):
            return _text_map(convert, key.limits, val.limits, limits.empty)
        return convert


def _text_only(limits: _Limits | None) -> bool:
    """A string shape with no model constraint: only the text rule applies."""
    return (
        limits is not None and limits.text_ok is not None
        and limits.lo is None and limits.hi is None and limits.enum is None and limits.regex is None
    )  # fmt: skip


def _text_map(checked: _Converter, key: _Limits | None, val: _Limits | None, uncounted: bool) -> _Converter:
    """A map of unconstrained strings (the encryption context): one pass over it, and the full
    converter ``checked`` only when something may be wrong, to report it."""
    key_nul = key is not None and key.text_ok is _storable
    val_nul = val is not None and val.text_ok is _storable

    def convert(value: Any, errors: list[str], path: str) -> dict[str, Any]:
        if type(value) is not dict or not uncounted:
            return checked(value, errors, path)  # type: ignore[no-any-return]
        for k, v in value.items():
            if type(v) is not str:
                return checked(value, errors, path)  # type: ignore[no-any-return]
            if not (k.isascii() and v.isascii()) or (key_nul and "\x00" in k) or (val_nul and "\x00" in v):
                return checked(value, errors, path)  # type: ignore[no-any-return]
        return dict(value)

    return convert


def _shown(value: Any, shows_values: bool) -> str | None:
    """How a violation quotes a list or a map: Java's rendering, unless it may not be quoted."""
    return _echoable(_java_str(value)) if shows_values else None


def _any_text_fails(limits: _Limits, values: Iterable[Any]) -> bool:
    return limits.text_ok is not None and any(type(v) is str and limits.text_fails(v) for v in values)


def _check_count(limits: _Limits, value: Any, shows_values: bool, path: str, errors: list[str]) -> None:
    """The member-count constraints that lists and maps share."""
    n = len(value)
    if not limits.ok(n, None):
        shown = _shown(value, shows_values)
        errors.extend(_violation(path, shown, c) for c in limits.failures(n, None))


def _string(limits: _Limits, sensitive: bool) -> _Converter:
    # Every string shape has a text rule; the checks are inlined because KeyId and the
    # encryption context run through here on every hot-path request.
    lo, hi, enum, regex = limits.lo, limits.hi, limits.enum, limits.regex
    refuse_nul = limits.text_ok is _storable
    surrogates = _SURROGATES.search

    def convert(value: Any, errors: list[str], path: str) -> str:
        if type(value) is not str:
            raise _mismatch(value, "a String")
        n = len(value)
        if (
            (lo is not None and n < lo)
            or (hi is not None and n > hi)
            or (refuse_nul and "\x00" in value)
            or (not value.isascii() and surrogates(value) is not None)
            or (enum is not None and value not in enum)
            or (regex is not None and regex.fullmatch(value) is None)
        ):
            shown = None if sensitive else _echoable(value)
            errors.extend(_violation(path, shown, c) for c in limits.failures(n, value))
        return value

    return convert


def _integer(limits: _Limits, target: str, sensitive: bool) -> _Converter:
    ok = limits.ok

    def convert(value: Any, errors: list[str], path: str) -> int:
        # bool is a subclass of int in Python; JSON true is not a number.
        if type(value) is not int:
            raise _mismatch(value, target)
        if not ok(value, None):
            shown = None if sensitive else str(value)
            errors.extend(_violation(path, shown, c) for c in limits.failures(value, None))
        return value

    return convert


def _boolean(value: Any, errors: list[str], path: str) -> bool:
    if type(value) is bool:
        return value
    raise _mismatch(value, "an Boolean")  # sic: Coral's article


def _number(value: Any, errors: list[str], path: str) -> float:
    if type(value) is int or type(value) is float:
        return float(value)
    raise _mismatch(value, "a Double")


def _timestamp(value: Any, errors: list[str], path: str) -> datetime:
    """awsJson timestamps are epoch seconds; we hand the service an aware UTC datetime."""
    if type(value) is int or type(value) is float:
        try:
            return datetime.fromtimestamp(value, tz=UTC)
        except (OverflowError, OSError, ValueError):
            raise SerializationException(f"Timestamp out of range at '{path}'") from None
    raise _mismatch(value, "a Date")


def _blob(limits: _Limits) -> _Converter:
    ok = limits.ok
    a2b = binascii.a2b_base64

    def convert(value: Any, errors: list[str], path: str) -> bytes:
        if type(value) is not str:
            raise _mismatch(value, "a ByteBuffer")
        try:
            data = a2b(value, strict_mode=True)
        except ValueError:  # binascii.Error, or non-ASCII text
            # Name the member, never the content: it may be (broken) plaintext.
            raise SerializationException(f"Invalid base64 value at '{path}'") from None
        n = len(data)
        if not ok(n, None):
            errors.extend(_violation(path, None, c) for c in limits.failures(n, None))
        return data

    return convert


# --- response compilation ---------------------------------------------------------------


def _render_blob(value: Any) -> str:
    return binascii.b2a_base64(value, newline=False).decode("ascii")


def _render_timestamp(value: Any) -> Any:
    if isinstance(value, datetime):
        if value.tzinfo is None:
            # A naive datetime has no defined epoch; guessing would shift every date by the
            # server's UTC offset. The store returns aware datetimes, so this is a bug upstream.
            raise ValueError("naive datetime in a timestamp member; use an aware (UTC) datetime")
        return value.timestamp()
    return value  # already epoch seconds


class _ResponseCompiler:
    """Turns output shapes into renderers; ``None`` means "passes through unchanged"."""

    def __init__(self, shapes: Mapping[str, Mapping[str, Any]]) -> None:
        self._shapes = shapes
        self._done: dict[str, _Renderer | None] = {}
        self._building: dict[str, list[_Renderer]] = {}

    def renderer(self, name: str) -> _Renderer | None:
        if name in self._done:
            return self._done[name]
        if name in self._building:
            cell = self._building[name]
            return lambda v: cell[0](v)
        self._building[name] = []
        built = self._build(self._shapes[name])
        self._building.pop(name).append(built if built is not None else _identity)
        self._done[name] = built
        return built

    def _build(self, shape: Mapping[str, Any]) -> _Renderer | None:
        kind = shape["type"]
        if kind == "blob":
            return _render_blob
        if kind == "timestamp":
            return _render_timestamp
        if kind == "list":
            elem = self.renderer(shape["member"]["shape"])
            if elem is None:
                return None
            return lambda v: [elem(x) for x in v]
        if kind == "map":
            val = self.renderer(shape["value"]["shape"])
            if val is None:
                return None
            return lambda v: {k: val(x) for k, x in v.items()}
        if kind == "structure":
            return self.structure(shape)
        return None

    def structure(self, shape: Mapping[str, Any]) -> _Renderer:
        members: dict[str, _Renderer | None] = {
            name: self.renderer(ref["shape"]) for name, ref in shape.get("members", {}).items()
        }

        def render(value: Any) -> dict[str, Any]:
            out: dict[str, Any] = {}
            for k, v in value.items():
                if v is None or k not in members:
                    continue  # None is "absent"; undeclared members never reach the wire
                r = members[k]
                out[k] = v if r is None else r(v)
            return out

        return render


def _identity(value: Any) -> Any:
    return value


# --- compiled tables and the public API -------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Operation:
    validate: _Converter | None
    render: _Renderer | None


def _compile(model: Mapping[str, Any]) -> dict[str, _Operation]:
    shapes = model["shapes"]
    requests = _RequestCompiler(shapes)
    responses = _ResponseCompiler(shapes)
    table: dict[str, _Operation] = {}
    for name, op in model["operations"].items():
        validate = requests.node(op["input"]["shape"]).convert if "input" in op else None
        render = responses.structure(shapes[op["output"]["shape"]]) if "output" in op else None
        table[name] = _Operation(validate, render)
    return table


_OPERATIONS: Final = _compile(_load_model())
_NAMES: Final = frozenset(_OPERATIONS)


def operation_names() -> frozenset[str]:
    """Every operation of the KMS model (e.g. ``"Encrypt"``), without the target prefix."""
    return _NAMES


def is_kms_operation(name: str) -> bool:
    return name in _NAMES


def validate_request(operation: str, body: object) -> dict[str, Any]:
    """Validate a parsed JSON request body against ``operation``'s input shape.

    Returns a new dict holding only modelled members, with blobs decoded to ``bytes`` and
    timestamps as aware UTC datetimes; strings, numbers, lists and maps pass through.
    Raises ``UnknownOperationException``, ``SerializationException`` (wrong JSON types,
    bad base64, a body that is not an object) or ``ValidationException`` (constraints).
    """
    op = _OPERATIONS.get(operation)
    if op is None:
        raise UnknownOperationException()
    return _validate(op.validate, body)


def _validate(validate: _Converter | None, body: object) -> dict[str, Any]:
    if type(body) is not dict:
        if isinstance(body, list):
            raise SerializationException("Start of list found where not expected")
        raise SerializationException()
    if validate is None:
        return {}
    errors: list[str] = []
    out: dict[str, Any] = validate(body, errors, "")
    if errors:
        count = len(errors)
        noun = "validation error" if count == 1 else "validation errors"
        raise ValidationException(f"{count} {noun} detected: " + "; ".join(errors))
    return out


class RequestValidator:
    """``validate_request`` for another model in botocore's format, compiled once.

    The IAM-style admin operations (``regiond.protocol.iam_shapes``) validate with it, so
    every operation the node serves is checked by the same code, with the same wording.
    """

    def __init__(self, model: Mapping[str, Any]) -> None:
        requests = _RequestCompiler(model["shapes"])
        self._inputs: dict[str, _Converter | None] = {
            name: requests.node(op["input"]["shape"]).convert if "input" in op else None
            for name, op in model["operations"].items()
        }

    def validate(self, operation: str, body: object) -> dict[str, Any]:
        """As ``validate_request``; an operation the model lacks is ``UnknownOperationException``."""
        if operation not in self._inputs:
            raise UnknownOperationException()
        return _validate(self._inputs[operation], body)


def render_response(operation: str, result: Mapping[str, Any]) -> bytes:
    """Serialize ``result`` as ``operation``'s JSON output (see module docstring).

    Operations whose model has no output render as an empty body, which is what the
    awsJson protocol expects of a server (clients accept both empty and ``{}``).
    """
    op = _OPERATIONS.get(operation)
    if op is None:
        raise KeyError(f"not a KMS operation: {operation!r}")
    if op.render is None:
        return b""
    return orjson.dumps(op.render(result))
