"""The ``Condition`` element of the AWS policy language, compiled once at parse time.

A condition block is ``{operator: {key: value | [values]}}``. Every operator below is
compiled into a :class:`Condition` holding a precompiled "does this request value match
any policy value" function, so evaluating a policy on the hot path is set lookups and
regex matches, never parsing.

Semantics follow the AWS IAM documentation:

* Values listed for one key are OR'd; keys inside one operator, and operators inside one
  block, are AND'd.
* Without a set qualifier, a positive operator is true when any request value matches any
  policy value; a negated operator (``StringNotEquals``, ``NotIpAddress``, ...) is the
  negation of its positive twin, so it is *true* when the key is missing.
* ``ForAnyValue:`` is true when at least one request value satisfies the operator (false
  when the key is missing or empty); ``ForAllValues:`` is true when every request value
  does (true when the key is missing or empty). With a negated operator the negation is
  applied per request value: ``ForAllValues:StringNotEquals`` means "no request value is
  one of these".
* ``...IfExists``: a missing key makes the condition true; otherwise it is the operator.
* ``Null``: ``true`` means "the key is absent", ``false`` means "the key is present".
* A request value that cannot be read as the operator's type (a non-number for
  ``Numeric*``, a non-date for ``Date*``, a non-IP for ``IpAddress``) makes the whole
  condition false, as AWS does. Request values come from the service, not the caller's
  policy, so this is a service bug signal rather than a bypass.

Condition key names are case-insensitive in AWS (``aws:SourceIp`` == ``aws:sourceip``),
including the ``<k>`` suffix of ``kms:EncryptionContext:<k>`` (AWS KMS documents that the
context *key* in that condition key is not case-sensitive; callers needing case-sensitive
keys use ``kms:EncryptionContextKeys``, whose values are compared like any string). So keys
are lower-cased here once, and the request context stores its keys lower-cased. Values keep
their case; only the ``...IgnoreCase`` operators fold it. Encryption context keys are
case-sensitive, so a request can give one single-valued condition key two values
(``{"tenant": ..., "Tenant": ...}``); ``regiond.domain.policy`` makes every condition on such a
key fail closed.

Policy variables (``${aws:username}``) are not substituted: they match literally.
"""

from __future__ import annotations

import ipaddress
import operator
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from enum import Enum
from typing import Any

from regiond.errors import MalformedPolicyDocumentException

MAX_CONDITION_KEY_CHARS = 256

ValueMatcher = Callable[[str], bool]
"""True when one request value matches any of the condition's policy values."""

_Factory = Callable[[tuple[str, ...], str], ValueMatcher]
"""Compiles a condition's policy values (raising Malformed...) into a ValueMatcher."""


class SetQualifier(Enum):
    """The ``ForAnyValue:`` / ``ForAllValues:`` prefixes for multi-valued keys."""

    FOR_ANY_VALUE = "ForAnyValue"
    FOR_ALL_VALUES = "ForAllValues"


class Incomparable(Exception):
    """A request value is not of the operator's type; the condition is false."""


def shorten(value: object, limit: int = 48) -> str:
    """Quote a piece of the input for an error message without echoing a huge document."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def wildcard_regex(patterns: Iterable[str], *, star: str = ".*", one: str = ".") -> str:
    """Translate ``*`` / ``?`` globs into one alternation; everything else is literal."""
    alternatives = []
    for pattern in patterns:
        parts = []
        for ch in pattern:
            if ch == "*":
                parts.append(star)
            elif ch == "?":
                parts.append(one)
            else:
                parts.append(re.escape(ch))
        alternatives.append("".join(parts))
    return "(?:" + "|".join(alternatives) + ")"


def compile_wildcards(patterns: Iterable[str], *, ignore_case: bool) -> re.Pattern[str]:
    """Compile globs for ``fullmatch``; ``*`` may span any characters, newlines included."""
    flags = re.DOTALL | (re.IGNORECASE if ignore_case else 0)
    return re.compile(wildcard_regex(patterns), flags)


# --- value matchers, one factory per operator family --------------------------------------------


def _string_equals(values: tuple[str, ...], _: str) -> ValueMatcher:
    allowed = frozenset(values)
    return allowed.__contains__


def _string_equals_ignore_case(values: tuple[str, ...], _: str) -> ValueMatcher:
    allowed = frozenset(v.casefold() for v in values)
    return lambda v: v.casefold() in allowed


def _string_like(values: tuple[str, ...], _: str) -> ValueMatcher:
    rx = compile_wildcards(values, ignore_case=False)
    return lambda v: rx.fullmatch(v) is not None


def _to_decimal(text: str) -> Decimal:
    try:
        number = Decimal(text.strip())
    except InvalidOperation:
        raise Incomparable from None
    if not number.is_finite():
        raise Incomparable
    return number


def _to_datetime(text: str) -> datetime:
    """ISO 8601 (``2024-01-31``, ``2024-01-31T12:00:00Z``) or epoch seconds, naive = UTC."""
    text = text.strip()
    try:
        if re.fullmatch(r"\d+(?:\.\d+)?", text):
            return datetime.fromtimestamp(float(text), tz=UTC)
        moment = datetime.fromisoformat(text)
    except (ValueError, OverflowError, OSError):
        raise Incomparable from None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


_RELATIONS: Mapping[str, Callable[[Any, Any], Any]] = {
    "eq": operator.eq,
    "lt": operator.lt,
    "le": operator.le,
    "gt": operator.gt,
    "ge": operator.ge,
}


def _ordered(parse: Callable[[str], Decimal | datetime], type_name: str, relation: str) -> _Factory:
    """Numeric/Date family: parse the policy values now, each request value when evaluated."""
    compare = _RELATIONS[relation]

    def factory(values: tuple[str, ...], operator_name: str) -> ValueMatcher:
        try:
            bounds = tuple(parse(v) for v in values)
        except Incomparable:
            raise MalformedPolicyDocumentException(
                f"condition operator {operator_name}: value is not a valid {type_name}"
            ) from None

        def match(v: str) -> bool:
            x = parse(v)
            return any(bool(compare(x, b)) for b in bounds)

        return match

    return factory


def _bool(values: tuple[str, ...], op_name: str) -> ValueMatcher:
    lowered = frozenset(v.lower() for v in values)
    if not lowered <= {"true", "false"}:
        raise MalformedPolicyDocumentException(f"condition operator {op_name}: values must be true or false")
    return lambda v: v.lower() in lowered


def _ip_address(values: tuple[str, ...], op_name: str) -> ValueMatcher:
    try:
        networks = tuple(ipaddress.ip_network(v.strip(), strict=False) for v in values)
    except ValueError:
        raise MalformedPolicyDocumentException(
            f"condition operator {op_name}: value is not an IP address or CIDR block"
        ) from None

    def match(v: str) -> bool:
        try:
            address = ipaddress.ip_address(v.strip())
        except ValueError:
            raise Incomparable from None
        return any(address in network for network in networks)

    return match


def _arn_like(values: tuple[str, ...], op_name: str) -> ValueMatcher:
    """ARN operators match each of the six colon-separated parts separately, so a ``*`` in
    the account part cannot swallow the region; only the resource part may contain colons.
    ``ArnEquals`` and ``ArnLike`` are the same operator in AWS (both accept wildcards)."""
    alternatives = []
    for value in values:
        if value == "*":
            alternatives.append(".*")
            continue
        parts = value.split(":", 5)
        if len(parts) != 6 or parts[0] != "arn":
            raise MalformedPolicyDocumentException(
                f"condition operator {op_name}: value {shorten(value)} is not an ARN"
            )
        head = [wildcard_regex([p], star="[^:]*", one="[^:]") for p in parts[:5]]
        alternatives.append(":".join([*head, wildcard_regex([parts[5]])]))
    rx = re.compile("|".join(f"(?:{a})" for a in alternatives), re.DOTALL)
    return lambda v: rx.fullmatch(v) is not None


# base operator -> (matcher factory, negated)
_OPERATORS: Mapping[str, tuple[_Factory, bool]] = {
    "StringEquals": (_string_equals, False),
    "StringNotEquals": (_string_equals, True),
    "StringEqualsIgnoreCase": (_string_equals_ignore_case, False),
    "StringNotEqualsIgnoreCase": (_string_equals_ignore_case, True),
    "StringLike": (_string_like, False),
    "StringNotLike": (_string_like, True),
    "NumericEquals": (_ordered(_to_decimal, "number", "eq"), False),
    "NumericNotEquals": (_ordered(_to_decimal, "number", "eq"), True),
    "NumericLessThan": (_ordered(_to_decimal, "number", "lt"), False),
    "NumericLessThanEquals": (_ordered(_to_decimal, "number", "le"), False),
    "NumericGreaterThan": (_ordered(_to_decimal, "number", "gt"), False),
    "NumericGreaterThanEquals": (_ordered(_to_decimal, "number", "ge"), False),
    "DateEquals": (_ordered(_to_datetime, "date", "eq"), False),
    "DateNotEquals": (_ordered(_to_datetime, "date", "eq"), True),
    "DateLessThan": (_ordered(_to_datetime, "date", "lt"), False),
    "DateLessThanEquals": (_ordered(_to_datetime, "date", "le"), False),
    "DateGreaterThan": (_ordered(_to_datetime, "date", "gt"), False),
    "DateGreaterThanEquals": (_ordered(_to_datetime, "date", "ge"), False),
    "Bool": (_bool, False),
    "IpAddress": (_ip_address, False),
    "NotIpAddress": (_ip_address, True),
    "ArnEquals": (_arn_like, False),
    "ArnLike": (_arn_like, False),
    "ArnNotEquals": (_arn_like, True),
    "ArnNotLike": (_arn_like, True),
}

NULL_OPERATOR = "Null"
OPERATOR_NAMES = frozenset([*_OPERATORS, NULL_OPERATOR])


@dataclass(frozen=True, slots=True)
class Condition:
    """One ``operator: {key: values}`` pair, compiled. ``key`` is lower-cased."""

    operator: str  # as written, e.g. "ForAllValues:StringLikeIfExists", for simulators
    key: str
    values: tuple[str, ...]
    qualifier: SetQualifier | None
    if_exists: bool
    negated: bool
    is_null: bool
    match: ValueMatcher

    def evaluate(self, context: Mapping[str, tuple[str, ...]]) -> bool:
        present = context.get(self.key)
        if self.is_null:
            return ("false" if present else "true") in self.values
        if not present:
            if self.if_exists or self.qualifier is SetQualifier.FOR_ALL_VALUES:
                return True
            if self.qualifier is SetQualifier.FOR_ANY_VALUE:
                return False
            return self.negated
        match = self.match
        try:
            if self.qualifier is None:
                hit = any(match(v) for v in present)
                return hit != self.negated
            if self.qualifier is SetQualifier.FOR_ANY_VALUE:
                return any(match(v) != self.negated for v in present)
            return all(match(v) != self.negated for v in present)
        except Incomparable:
            return False


def _split_operator(name: str) -> tuple[SetQualifier | None, str, bool]:
    qualifier = None
    base = name
    for q in SetQualifier:
        if name.startswith(q.value + ":"):
            qualifier, base = q, name[len(q.value) + 1 :]
            break
    if_exists = False
    if base.endswith("IfExists"):
        base, if_exists = base[: -len("IfExists")], True
    if base not in OPERATOR_NAMES:
        raise MalformedPolicyDocumentException(f"unknown condition operator {shorten(name)}")
    if base == NULL_OPERATOR and (if_exists or qualifier is not None):
        raise MalformedPolicyDocumentException("condition operator Null takes neither IfExists nor a set qualifier")
    return qualifier, base, if_exists


def _scalar(value: object, where: str) -> str:
    """Policy values may be JSON strings, numbers or booleans; AWS compares them as text."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value
    if isinstance(value, int | float):
        return str(value)
    raise MalformedPolicyDocumentException(f"{where}: condition values must be strings, numbers or booleans")


def _values(raw: object, where: str) -> tuple[str, ...]:
    if isinstance(raw, list):
        if not raw:
            raise MalformedPolicyDocumentException(f"{where}: condition value list is empty")
        return tuple(_scalar(v, where) for v in raw)
    return (_scalar(raw, where),)


def _check_key(key: str, where: str) -> str:
    prefix, sep, rest = key.partition(":")
    if not sep or not prefix or not rest or len(key) > MAX_CONDITION_KEY_CHARS:
        raise MalformedPolicyDocumentException(f"{where}: invalid condition key {shorten(key)}")
    return key.lower()


def parse_condition_block(block: object, where: str) -> tuple[Condition, ...]:
    """Compile a statement's ``Condition`` element; ``where`` names the statement in errors."""
    if not isinstance(block, dict):
        raise MalformedPolicyDocumentException(f"{where}: Condition must be an object")
    conditions = []
    for op_name, keys in block.items():
        qualifier, base, if_exists = _split_operator(op_name)
        if not isinstance(keys, dict) or not keys:
            raise MalformedPolicyDocumentException(
                f"{where}: condition operator {shorten(op_name)} must map condition keys to values"
            )
        for raw_key, raw_values in keys.items():
            key = _check_key(raw_key, where)
            values = _values(raw_values, where)
            if base == NULL_OPERATOR:
                _bool(values, op_name)  # validates true/false
                values = tuple(v.lower() for v in values)
                match: ValueMatcher = _string_equals(values, op_name)
                negated = False
            else:
                factory, negated = _OPERATORS[base]
                match = factory(values, op_name)
            conditions.append(
                Condition(
                    operator=op_name,
                    key=key,
                    values=values,
                    qualifier=qualifier,
                    if_exists=if_exists,
                    negated=negated,
                    is_null=base == NULL_OPERATOR,
                    match=match,
                )
            )
    return tuple(conditions)
