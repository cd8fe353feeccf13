"""Every string slot of every operation's input, and a valid request around each one.

A *slot* is one place in a request body where the client puts text: a string member, an
element of a list of strings, a key or a value of a map of strings, at any depth. The
tables of tests/unit/test_text_validation.py and tests/integration/test_text_inputs.py are
built from these, so a model upgrade that adds a member adds it to the tables.

``request_with(operation, slot, text)`` builds a body that satisfies the model everywhere
except, possibly, at the slot; the examples for patterned shapes are listed here by shape
name (``EXAMPLES``), and a unit test checks that every base request validates.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

# A valid value for every string shape that has a pattern (or an exact length) in the KMS
# model or in the IAM model shapes the admin operations use. Unlisted shapes get "a" * min.
EXAMPLES: dict[str, str] = {
    # KMS
    "AccountIdType": "111122223333",
    "AliasNameType": "alias/example",
    "BackingKeyIdType": "ab" * 32,
    "BackingKeyIdResponseType": "ab" * 32,
    "CloudHsmClusterIdType": "cluster-abcdefghijk",
    "GrantConstraintSourceArnType": "arn:aws:s3:us-east-1:111122223333:bucket",
    "GrantNameType": "grant-name",
    "KeyMaterialDescriptionType": "material one",
    "KeyStorePasswordType": "password",
    "MarkerType": "marker",
    "PolicyNameType": "default",
    "PolicyType": '{"Version": "2012-10-17", "Statement": []}',
    "PrincipalIdType": "arn:aws:iam::111122223333:user/alice",
    "RegionType": "eu-west-1",
    "ServicePrincipalType": "ec2.amazonaws.com",
    "XksKeyIdType": "xks-key-1",
    "XksProxyAuthenticationAccessKeyIdType": "ABCDEFGHIJKLMNOPQRST",
    "XksProxyAuthenticationRawSecretAccessKeyType": "a" * 43,
    "XksProxyUriEndpointType": "https://xks.example.com",
    "XksProxyUriPathType": "/kms/xks/v1",
    "XksProxyVpcEndpointServiceNameType": "com.amazonaws.vpce.us-east-1.vpce-svc-0abc",
    "CustomKeyStoreNameType": "store",
    "TrustAnchorCertificateType": "certificate",
    # IAM
    "userNameType": "alice",
    "existingUserNameType": "alice",
    "roleNameType": "reader",
    "policyNameType": "inline",
    "accessKeyIdType": "AKIAAAAAAAAAAAAAAAAA",
    "policyDocumentType": '{"Version": "2012-10-17", "Statement": []}',
}


@dataclass(frozen=True, slots=True)
class Slot:
    """One place for text in an operation's input.

    ``steps`` leads from the body to the slot: a member name, ``"[]"`` (the one element of a
    list) or ``"{key}"`` / ``"{value}"`` (the one entry of a map). ``shape`` is the string
    shape, ``report`` the lowerCamel path an AWS ValidationException names.
    """

    operation: str
    steps: tuple[str, ...]
    shape: str
    report: str

    @property
    def id(self) -> str:
        return self.operation + ":" + ".".join(self.steps)

    @property
    def in_encryption_context(self) -> bool:
        """A key or value of an encryption-context map (only hashed, never stored as text)."""
        return self.shape in ("EncryptionContextKey", "EncryptionContextValue")


def _lower_camel(name: str) -> str:
    return name[:1].lower() + name[1:]


def string_slots(model: Mapping[str, Any], operations: Mapping[str, str | None]) -> Iterator[Slot]:
    """Every string slot of each operation's input shape (``operations``: name -> input shape)."""
    shapes = model["shapes"]

    def walk(op: str, name: str, steps: tuple[str, ...], report: str, seen: frozenset[str]) -> Iterator[Slot]:
        shape = shapes[name]
        kind = shape["type"]
        if kind == "string":
            yield Slot(op, steps, name, report)
        elif kind == "structure" and name not in seen:
            for member, ref in shape.get("members", {}).items():
                child = f"{report}.{_lower_camel(member)}" if report else _lower_camel(member)
                yield from walk(op, ref["shape"], (*steps, member), child, seen | {name})
        elif kind == "list":
            elem = shape["member"]["shape"]
            inner = f"{report}.1.member" if shapes[elem]["type"] == "structure" else report
            yield from walk(op, elem, (*steps, "[]"), inner, seen)
        elif kind == "map":
            yield from walk(op, shape["key"]["shape"], (*steps, "{key}"), report, seen)
            yield from walk(op, shape["value"]["shape"], (*steps, "{value}"), report, seen)

    for op, input_shape in operations.items():
        if input_shape is not None:
            yield from walk(op, input_shape, (), "", frozenset())


def example(shapes: Mapping[str, Any], name: str, overrides: Mapping[str, str] | None = None) -> Any:
    """A valid value of shape ``name`` with its required members (and nothing else)."""
    shape = shapes[name]
    kind = shape["type"]
    if kind == "string":
        if overrides and name in overrides:
            return overrides[name]
        if "enum" in shape:
            return shape["enum"][0]
        if name in EXAMPLES:
            return EXAMPLES[name]
        return "a" * max(shape.get("min", 1), 1)
    if kind in ("integer", "long"):
        return max(shape.get("min", 1), 1)
    if kind == "boolean":
        return False
    if kind in ("float", "double", "timestamp"):
        return 1
    if kind == "blob":
        return "AAAAAAAAAAAAAAAAAAAAAA=="  # 16 zero bytes
    if kind == "list":
        return [example(shapes, shape["member"]["shape"], overrides)] * max(shape.get("min", 0), 0)
    if kind == "map":
        return {}
    required = shape.get("required", ())
    return {m: example(shapes, ref["shape"], overrides) for m, ref in shape["members"].items() if m in required}


def request_with(
    model: Mapping[str, Any],
    input_shape: str,
    slot: Slot,
    text: str,
    overrides: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """A body valid but for ``text`` at ``slot`` (the slot is filled even if optional)."""
    shapes = model["shapes"]

    def build(name: str, steps: tuple[str, ...]) -> Any:
        if not steps:
            return text
        shape = shapes[name]
        step, rest = steps[0], steps[1:]
        if shape["type"] == "structure":
            value = example(shapes, name, overrides)
            value[step] = build(shape["members"][step]["shape"], rest)
            return value
        if shape["type"] == "list":
            return [build(shape["member"]["shape"], rest)]
        key_shape, value_shape = shape["key"]["shape"], shape["value"]["shape"]
        if step == "{key}":
            return {build(key_shape, rest): example(shapes, value_shape, overrides)}
        return {example(shapes, key_shape, overrides): build(value_shape, rest)}

    body: dict[str, Any] = build(input_shape, slot.steps)
    return body


def base_text(model: Mapping[str, Any], slot: Slot, overrides: Mapping[str, str] | None = None) -> str:
    """The valid text the slot holds in a base request."""
    value = example(model["shapes"], slot.shape, overrides)
    assert isinstance(value, str)
    return value


def with_nul(text: str) -> str:
    """``text`` with its last character replaced by U+0000: same length, so only the NUL is wrong."""
    return text[:-1] + "\x00"


def with_lone_surrogate(text: str) -> str:
    """``text`` with its last character replaced by an unpaired high surrogate."""
    return text[:-1] + "\ud800"


def over_long(model: Mapping[str, Any], slot: Slot) -> str | None:
    """A value one character over the slot's maximum length, or None if the shape has none."""
    shape = model["shapes"][slot.shape]
    if "max" not in shape or "enum" in shape:
        return None
    base: str = base_text(model, slot)
    return base + base[-1] * (int(shape["max"]) + 1 - len(base))
