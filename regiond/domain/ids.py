"""Key ids, key ARNs, alias names and alias ARNs: the identifiers a KMS client may send.

AWS KMS accepts four spellings wherever an operation takes a ``KeyId`` parameter (the
``KeyIdType`` shape: a string of 1-2048 characters, no pattern in the model):

    key id      1234abcd-12ab-34cd-56ef-1234567890ab          single-Region key (a UUID)
                mrk-1234abcd12ab34cd56ef1234567890ab          multi-Region key (``mrk-`` + 32 hex)
    key ARN     arn:aws:kms:<region>:<account>:key/<key id>
    alias name  alias/<name>
    alias ARN   arn:aws:kms:<region>:<account>:alias/<name>

``parse_key_reference`` classifies one of them into a ``KeyRef`` without touching the store;
the service then resolves it. The rejections copy what AWS answers, so boto3 callers see
the same ``__type`` and message they see against AWS (evidence in brackets):

- a string that is none of the four, or a key ARN whose key id is not a key id:
  ``NotFoundException("Invalid keyId '<value>'")`` [LocalStack's KMS provider, whose snapshot
  tests run against AWS; the same text in recorded AWS responses in client test suites];
- a string that starts with ``arn:`` but is not a KMS key or alias ARN (wrong field count,
  service other than ``kms``, account not 12 digits, resource neither ``key/`` nor ``alias/``):
  ``InvalidArnException("Invalid arn <value>")``. ``InvalidArnException`` is in the model's
  error list of every key operation; the message is our wording, AWS does not document one;
- a well-formed ARN of another Region: ``NotFoundException("Invalid arn <region>")``, raised by
  ``KeyRef.require_region`` because only the service knows its Region [the exact text AWS
  returned in pulumi/pulumi#17022 and nakedible/openssl-engine-kms#1];
- an alias where the operation takes only a key id or key ARN (ScheduleKeyDeletion,
  CreateGrant, ...): ``InvalidArnException("Key Aliases are not supported for this
  operation.")``, raised by ``KeyRef.require_key`` [AWS's text quoted in
  hashicorp/terraform#20813 and ministryofjustice/modernisation-platform#8298].

Key ids are matched case-insensitively when classifying (as LocalStack does) but never
normalised: AWS key ids are lowercase, so an uppercase id is classified as a key id and then
simply not found (``Key '<arn>' does not exist``, the service's message). Only the canonical
lowercase forms that ``new_key_id`` makes can be packed into a ciphertext blob.

Alias names are validated for *creation* by ``validate_new_alias_name`` (CreateAlias,
UpdateAlias); lookups accept any ``alias/`` string and let the store answer NotFound, since
AWS-managed aliases such as ``alias/aws/ebs`` must stay resolvable.
"""

from __future__ import annotations

import enum
import re
import uuid
from dataclasses import dataclass

from regiond.errors import (
    InvalidAliasNameException,
    InvalidArnException,
    NotFoundException,
    ValidationException,
)

__all__ = [
    "ACCOUNT_ID_PATTERN",
    "ALIAS_NAME_MAX_CHARS",
    "ALIAS_NAME_PATTERN",
    "ALIAS_PREFIX",
    "ARN_PARTITION",
    "AWS_MANAGED_ALIAS_PREFIX",
    "MRK_PREFIX",
    "REGION_PATTERN",
    "KeyIdKind",
    "KeyRef",
    "RefKind",
    "alias_arn",
    "alias_arn_text",
    "is_valid_key_id",
    "key_arn",
    "key_id_kind",
    "new_key_id",
    "parse_key_reference",
    "require_account_id",
    "require_region_name",
    "validate_new_alias_name",
]

ARN_PARTITION = "aws"
"""The only partition regionkms speaks; boto3 and the CLI build ``arn:aws:...`` for custom endpoints."""

MRK_PREFIX = "mrk-"
"""AWS: "multi-Region keys have a distinctive key ID that begins with mrk-"."""

ALIAS_PREFIX = "alias/"
AWS_MANAGED_ALIAS_PREFIX = "alias/aws/"
"""Reserved for AWS managed keys; customers cannot create or update aliases under it."""

ALIAS_NAME_MAX_CHARS = 256
ALIAS_NAME_PATTERN = re.compile(r"^[a-zA-Z0-9:/_-]+$")
"""``AliasNameType`` in botocore's KMS model: 1-256 characters of this class."""

ACCOUNT_ID_PATTERN = re.compile(r"^[0-9]{12}$")
"""``AccountIdType``: exactly 12 digits."""

REGION_PATTERN = re.compile(r"^([a-z]+-){2,3}\d+$")
"""``RegionType`` in the model (max 32 characters): us-east-1, ap-southeast-2, us-gov-west-1."""

REGION_MAX_CHARS = 32

_UUID_PATTERN = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
_MRK_PATTERN = re.compile(r"^mrk-[0-9a-fA-F]{32}$")

_ALIAS_DOC_URL = "https://docs.aws.amazon.com/kms/latest/developerguide/kms-alias.html"


class KeyIdKind(enum.Enum):
    """Which kind of KMS key an id names; the id alone tells, as AWS designed it."""

    SINGLE_REGION = "single-region"
    MULTI_REGION = "multi-region"


class RefKind(enum.Enum):
    """The four spellings of a ``KeyId`` parameter."""

    KEY_ID = "key id"
    KEY_ARN = "key ARN"
    ALIAS_NAME = "alias name"
    ALIAS_ARN = "alias ARN"


def new_key_id(multi_region: bool) -> str:
    """A fresh key id: a random (version 4) UUID, or ``mrk-`` + 32 lowercase hex for multi-Region.

    Both carry 122 random bits from ``uuid.uuid4`` (os.urandom), so ids are unguessable and
    never collide across Regions, which multi-Region replicas rely on: a replica keeps its
    primary's id in every Region.
    """
    value = uuid.uuid4()
    return MRK_PREFIX + value.hex if multi_region else str(value)


def key_id_kind(key_id: str) -> KeyIdKind | None:
    """Classify a bare key id, or ``None`` if it is not shaped like one (any hex case)."""
    if _UUID_PATTERN.match(key_id):
        return KeyIdKind.SINGLE_REGION
    if _MRK_PATTERN.match(key_id):
        return KeyIdKind.MULTI_REGION
    return None


def is_valid_key_id(key_id: str) -> bool:
    """True for the canonical lowercase ids this service issues (and can pack into a blob)."""
    return key_id_kind(key_id) is not None and key_id == key_id.lower()


def require_account_id(account: str) -> str:
    """Return ``account`` if it is 12 digits (``AccountIdType``), else raise ``ValueError``.

    A ``ValueError`` and not a ``KmsError``: account ids reach the domain from configuration
    and the store, never unchecked from a request, so a bad one is a bug.
    """
    if not ACCOUNT_ID_PATTERN.match(account):
        raise ValueError(f"account id must be 12 digits, got {account!r}")
    return account


def require_region_name(region: str) -> str:
    """Return ``region`` if it matches ``RegionType``, else raise ``ValueError`` (see above)."""
    if len(region) > REGION_MAX_CHARS or not REGION_PATTERN.match(region):
        raise ValueError(f"not a region name: {region!r}")
    return region


def key_arn(region: str, account: str, key_id: str) -> str:
    """``arn:aws:kms:<region>:<account>:key/<key id>``, the form DescribeKey returns as ``Arn``."""
    require_region_name(region)
    require_account_id(account)
    if key_id_kind(key_id) is None:
        raise ValueError(f"not a key id: {key_id!r}")
    return f"arn:{ARN_PARTITION}:kms:{region}:{account}:key/{key_id}"


def alias_arn(region: str, account: str, alias_name: str) -> str:
    """``arn:aws:kms:<region>:<account>:alias/<name>``, the ``AliasArn`` of ListAliases.

    ``alias_name`` includes its ``alias/`` prefix, exactly as clients send it, so the ARN is
    the name appended after the account field.
    """
    require_region_name(region)
    require_account_id(account)
    if not alias_name.startswith(ALIAS_PREFIX) or len(alias_name) == len(ALIAS_PREFIX):
        raise ValueError(f"not an alias name: {alias_name!r}")
    return f"arn:{ARN_PARTITION}:kms:{region}:{account}:{alias_name}"


def alias_arn_text(region: str, account: str, alias_name: str) -> str:
    """The alias ARN a message names, spelt from ``alias_name`` as the caller sent it, unchecked:
    a refusal must be able to name even a name no alias can have (``alias/``), where
    ``alias_arn`` raises."""
    return f"arn:{ARN_PARTITION}:kms:{region}:{account}:{alias_name}"


def validate_new_alias_name(alias_name: str) -> str:
    """Check an ``AliasName`` for CreateAlias/UpdateAlias and return it unchanged.

    Checks run in the order AWS reports them, each with AWS's exception and text:

    1. no ``alias/`` prefix: ``ValidationException('Alias must start with the prefix
       "alias/". Please see <guide URL>')`` [AWS's text in aws-controllers-k8s/community#1878];
    2. the model's length (1-256) and pattern ``^[a-zA-Z0-9:/_-]+$``: ``ValidationException``
       in AWS's "1 validation error detected" form (the protocol's shape validation normally
       catches these first; repeated here so the domain never trusts its caller);
    3. a ``:``, which the pattern allows but KMS rejects ("alphanumeric characters, forward
       slashes, underscores, and dashes" in the CreateAlias docs):
       ``ValidationException("<name> contains invalid characters for an alias")`` [AWS's text in
       hashicorp/terraform-provider-aws#12891];
    4. nothing after the prefix: ``InvalidAliasNameException`` (our choice; AWS's answer is
       not documented);
    5. the reserved ``alias/aws/`` prefix: ``InvalidAliasNameException``. AWS answers
       ``NotAuthorizedException`` here (moto reproduces it), a type that is neither in the KMS
       model nor in our error tree; ``InvalidAliasNameException`` is the modelled CreateAlias
       error that means "the specified alias name is not valid".
    """
    if not alias_name.startswith(ALIAS_PREFIX):
        raise ValidationException(f'Alias must start with the prefix "alias/". Please see {_ALIAS_DOC_URL}')
    if len(alias_name) > ALIAS_NAME_MAX_CHARS:
        raise ValidationException(
            f"1 validation error detected: Value '{alias_name}' at 'aliasName' failed to satisfy "
            f"constraint: Member must have length less than or equal to {ALIAS_NAME_MAX_CHARS}"
        )
    if not ALIAS_NAME_PATTERN.match(alias_name):
        raise ValidationException(
            f"1 validation error detected: Value '{alias_name}' at 'aliasName' failed to satisfy "
            f"constraint: Member must satisfy regular expression pattern: {ALIAS_NAME_PATTERN.pattern}"
        )
    if ":" in alias_name:
        raise ValidationException(f"{alias_name} contains invalid characters for an alias")
    if alias_name == ALIAS_PREFIX:
        raise InvalidAliasNameException(f"{alias_name} is not a valid alias name: the name after alias/ is empty")
    if alias_name.startswith(AWS_MANAGED_ALIAS_PREFIX):
        raise InvalidAliasNameException(
            f"{alias_name} is reserved: the alias/aws/ prefix is reserved for AWS managed keys"
        )
    return alias_name


@dataclass(frozen=True, slots=True)
class KeyRef:
    """A classified ``KeyId`` parameter: what the client named, before the store resolves it.

    Exactly one of ``key_id`` and ``alias_name`` is set. ``region`` and ``account`` are set
    only for the two ARN kinds; a bare id or alias name means "the caller's account in this
    Region", which the service knows and the domain does not.
    """

    kind: RefKind
    raw: str
    key_id: str | None = None
    alias_name: str | None = None
    region: str | None = None
    account: str | None = None

    @property
    def is_alias(self) -> bool:
        return self.kind in (RefKind.ALIAS_NAME, RefKind.ALIAS_ARN)

    @property
    def is_arn(self) -> bool:
        return self.kind in (RefKind.KEY_ARN, RefKind.ALIAS_ARN)

    def require_region(self, region: str) -> None:
        """Refuse an ARN of another Region as AWS does: ``NotFoundException("Invalid arn <region>")``.

        Keys are regional: even a multi-Region key's replica is a distinct key with its own
        ARN, so naming ``us-west-2``'s replica in ``us-east-1`` is a miss, not a redirect.
        """
        if self.region is not None and self.region != region:
            raise NotFoundException(f"Invalid arn {self.region}")

    def require_key(self) -> str:
        """The key id, for operations that accept only a key id or key ARN (no aliases)."""
        if self.key_id is None:
            raise InvalidArnException("Key Aliases are not supported for this operation.")
        return self.key_id


def parse_key_reference(value: str) -> KeyRef:
    """Classify a ``KeyId`` parameter as key id, key ARN, alias name or alias ARN.

    Raises ``NotFoundException`` or ``InvalidArnException`` as described in the module
    docstring. Does not check the Region or account of an ARN against the caller: see
    ``KeyRef.require_region``; cross-account access is decided by authorization.
    """
    if value.startswith("arn:"):
        return _parse_arn(value)
    if value.startswith(ALIAS_PREFIX):
        return KeyRef(RefKind.ALIAS_NAME, value, alias_name=value)
    if key_id_kind(value) is None:
        raise NotFoundException(f"Invalid keyId '{value}'")
    return KeyRef(RefKind.KEY_ID, value, key_id=value)


def _parse_arn(value: str) -> KeyRef:
    # arn:partition:service:region:account:resource; an alias name may contain ":" (the
    # model's pattern allows it), so split at most five times and keep the rest whole.
    parts = value.split(":", 5)
    if len(parts) != 6:
        raise InvalidArnException(f"Invalid arn {value}")
    _, partition, service, region, account, resource = parts
    if (
        partition != ARN_PARTITION
        or service != "kms"
        or len(region) > REGION_MAX_CHARS
        or not REGION_PATTERN.match(region)
        or not ACCOUNT_ID_PATTERN.match(account)
    ):
        raise InvalidArnException(f"Invalid arn {value}")
    if resource.startswith("key/"):
        key_id = resource[len("key/") :]
        if key_id_kind(key_id) is None:
            raise NotFoundException(f"Invalid keyId '{key_id}'")
        return KeyRef(RefKind.KEY_ARN, value, key_id=key_id, region=region, account=account)
    if resource.startswith(ALIAS_PREFIX) and len(resource) > len(ALIAS_PREFIX):
        return KeyRef(RefKind.ALIAS_ARN, value, alias_name=resource, region=region, account=account)
    raise InvalidArnException(f"Invalid arn {value}")
