"""KMS keys: the metadata model, backing key versions, and the one key-state machine.

Everything about a KMS key that is not key material lives here, named after botocore's KMS
model (``KeyMetadata``, ``KeyState``, ``KeySpec`` ...). Key material never enters the domain:
``BackingKeyVersion`` only names a version; the wrapped bytes stay in the store and crypto.

The state machine has two faces, both driven by tables so they can be read and tested:

``ALLOWED_STATES[operation]``
    which key states an API operation accepts, from the "Key states of AWS KMS keys" table of
    the KMS Developer Guide. ``require_state(operation, key)`` raises what AWS raises:

    - ``DisabledException("<key ARN> is disabled.")`` for a Disabled key in the operations whose
      model error list includes ``DisabledException`` (the cryptographic operations,
      CreateGrant, GetPublicKey, Enable/DisableKeyRotation, RotateKeyOnDemand, ReplicateKey,
      UpdatePrimaryRegion): footnote [1] of the table;
    - ``KMSInvalidStateException("<key ARN> is not pending deletion.")`` for CancelKeyDeletion:
      footnote [4];
    - ``KMSInvalidStateException("<key ARN> is <state>.")`` otherwise, with "pending deletion",
      "pending import", "unavailable", "disabled": footnotes [3], [5], [11]. AWS documents no
      text for the multi-Region transient states; we say "creating", "updating" and "pending
      replica deletion" in the same pattern. A cryptographic operation on a PendingDeletion key
      gets ``KMSInvalidStateException`` (the table allows either exception, footnotes [2] or
      [3]; LocalStack, whose snapshots are recorded against AWS, observed this one).

    Conditions the table marks "?" that depend on the key's origin or key store rather than
    its state (footnotes [6]-[9]: imported material, custom key stores) are the service's
    ``UnsupportedOperationException`` checks; the table here allows those states.

``transition(key, event)``
    the next ``KeyState`` for an event (API operations and background happenings such as
    expired imported material), or the same exceptions when the event is illegal in the
    current state. ``apply(key, event, now=...)`` returns the updated ``Key`` with the fields
    that move with the state (``DeletionDate``, ``PendingDeletionWindowInDays``).

States that the Developer Guide leaves thin, and what we decided from the API Reference:

- ``Creating``: a new multi-Region replica. ReplicateKey: "While the key state is Creating, you
  can manage key, but you cannot yet use it in cryptographic operations." Management
  operations (aliases, tags, description, policy, grants) are allowed; cryptographic
  operations, Enable/DisableKey, deletion, rotation and import are not.
- ``Updating``: both ends of UpdatePrimaryRegion. "While the key state is Updating, you can use
  the keys in cryptographic operations, but you cannot replicate the new primary key or perform
  certain management operations, such as enabling or disabling these keys. The original key
  state is restored when the update is complete." We only enter Updating from Enabled (a
  Disabled key gets ``DisabledException``, which UpdatePrimaryRegion lists), so the original
  state to restore is always Enabled. Deletion, rotation and import wait for the update too.
- ``PendingReplicaDeletion``: a primary scheduled for deletion while replicas exist. It behaves
  as PendingDeletion (no cryptographic use, deletion can be cancelled) until its last replica
  is deleted; then its waiting period starts and it becomes PendingDeletion.
- ``Unavailable``: AWS uses it for custom key stores, which regionkms does not have, so no
  event enters it. The table keeps AWS's column so the service's answers stay right if a
  future key store adds it; Enable/DisableKey succeed there without changing the state
  (footnote [12]).
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from types import MappingProxyType

from regiond.domain.ids import (
    MRK_PREFIX,
    is_valid_key_id,
    key_arn,
    require_account_id,
    require_region_name,
)
from regiond.errors import DisabledException, KMSInvalidStateException, ValidationException

__all__ = [
    "ALLOWED_STATES",
    "DEFAULT_PENDING_WINDOW_IN_DAYS",
    "DISABLED_EXCEPTION_OPERATIONS",
    "MAX_BACKING_VERSION",
    "MAX_PENDING_WINDOW_IN_DAYS",
    "MIN_PENDING_WINDOW_IN_DAYS",
    "TRANSITIONS",
    "BackingKeyVersion",
    "EncapsulationAlgorithm",
    "EncryptionAlgorithm",
    "ExpirationModel",
    "Key",
    "KeyAgreementAlgorithm",
    "KeyEvent",
    "KeyManager",
    "KeySpec",
    "KeyState",
    "KeyUsage",
    "MacAlgorithm",
    "MultiRegionConfiguration",
    "MultiRegionKey",
    "MultiRegionKeyType",
    "Origin",
    "SigningAlgorithm",
    "apply",
    "deletion_date",
    "pending_window_in_days",
    "require_state",
    "require_usable_for_crypto",
    "transition",
]


# --- enums: values are the model's enum strings, so they render to the wire unchanged ------------


class KeyState(enum.StrEnum):
    """``KeyState`` in the KMS model."""

    CREATING = "Creating"
    ENABLED = "Enabled"
    DISABLED = "Disabled"
    PENDING_DELETION = "PendingDeletion"
    PENDING_IMPORT = "PendingImport"
    PENDING_REPLICA_DELETION = "PendingReplicaDeletion"
    UNAVAILABLE = "Unavailable"
    UPDATING = "Updating"


class KeyUsage(enum.StrEnum):
    """``KeyUsageType``."""

    ENCRYPT_DECRYPT = "ENCRYPT_DECRYPT"
    SIGN_VERIFY = "SIGN_VERIFY"
    GENERATE_VERIFY_MAC = "GENERATE_VERIFY_MAC"
    KEY_AGREEMENT = "KEY_AGREEMENT"
    ENCAPSULATE_DECAPSULATE = "ENCAPSULATE_DECAPSULATE"


class KeySpec(enum.StrEnum):
    """``KeySpec`` (``CustomerMasterKeySpec`` is its deprecated twin with the same values)."""

    SYMMETRIC_DEFAULT = "SYMMETRIC_DEFAULT"
    RSA_2048 = "RSA_2048"
    RSA_3072 = "RSA_3072"
    RSA_4096 = "RSA_4096"
    ECC_NIST_P256 = "ECC_NIST_P256"
    ECC_NIST_P384 = "ECC_NIST_P384"
    ECC_NIST_P521 = "ECC_NIST_P521"
    ECC_SECG_P256K1 = "ECC_SECG_P256K1"
    ECC_NIST_EDWARDS25519 = "ECC_NIST_EDWARDS25519"
    HMAC_224 = "HMAC_224"
    HMAC_256 = "HMAC_256"
    HMAC_384 = "HMAC_384"
    HMAC_512 = "HMAC_512"
    SM2 = "SM2"
    ML_DSA_44 = "ML_DSA_44"
    ML_DSA_65 = "ML_DSA_65"
    ML_DSA_87 = "ML_DSA_87"
    ML_KEM_512 = "ML_KEM_512"
    ML_KEM_768 = "ML_KEM_768"
    ML_KEM_1024 = "ML_KEM_1024"


class Origin(enum.StrEnum):
    """``OriginType``: who made the key material."""

    AWS_KMS = "AWS_KMS"
    EXTERNAL = "EXTERNAL"
    AWS_CLOUDHSM = "AWS_CLOUDHSM"
    EXTERNAL_KEY_STORE = "EXTERNAL_KEY_STORE"


class KeyManager(enum.StrEnum):
    """``KeyManagerType``: AWS managed keys are the targets of ``alias/aws/...`` aliases."""

    AWS = "AWS"
    CUSTOMER = "CUSTOMER"


class EncryptionAlgorithm(enum.StrEnum):
    """``EncryptionAlgorithmSpec``."""

    SYMMETRIC_DEFAULT = "SYMMETRIC_DEFAULT"
    RSAES_OAEP_SHA_1 = "RSAES_OAEP_SHA_1"
    RSAES_OAEP_SHA_256 = "RSAES_OAEP_SHA_256"
    SM2PKE = "SM2PKE"


class SigningAlgorithm(enum.StrEnum):
    """``SigningAlgorithmSpec``."""

    RSASSA_PSS_SHA_256 = "RSASSA_PSS_SHA_256"
    RSASSA_PSS_SHA_384 = "RSASSA_PSS_SHA_384"
    RSASSA_PSS_SHA_512 = "RSASSA_PSS_SHA_512"
    RSASSA_PKCS1_V1_5_SHA_256 = "RSASSA_PKCS1_V1_5_SHA_256"
    RSASSA_PKCS1_V1_5_SHA_384 = "RSASSA_PKCS1_V1_5_SHA_384"
    RSASSA_PKCS1_V1_5_SHA_512 = "RSASSA_PKCS1_V1_5_SHA_512"
    ECDSA_SHA_256 = "ECDSA_SHA_256"
    ECDSA_SHA_384 = "ECDSA_SHA_384"
    ECDSA_SHA_512 = "ECDSA_SHA_512"
    SM2DSA = "SM2DSA"
    ML_DSA_SHAKE_256 = "ML_DSA_SHAKE_256"
    ED25519_SHA_512 = "ED25519_SHA_512"
    ED25519_PH_SHA_512 = "ED25519_PH_SHA_512"


class KeyAgreementAlgorithm(enum.StrEnum):
    """``KeyAgreementAlgorithmSpec``."""

    ECDH = "ECDH"


class EncapsulationAlgorithm(enum.StrEnum):
    """``EncapsulationAlgorithmSpec``."""

    ML_KEM = "ML_KEM"


class MacAlgorithm(enum.StrEnum):
    """``MacAlgorithmSpec``."""

    HMAC_SHA_224 = "HMAC_SHA_224"
    HMAC_SHA_256 = "HMAC_SHA_256"
    HMAC_SHA_384 = "HMAC_SHA_384"
    HMAC_SHA_512 = "HMAC_SHA_512"


class MultiRegionKeyType(enum.StrEnum):
    """``MultiRegionKeyType``."""

    PRIMARY = "PRIMARY"
    REPLICA = "REPLICA"


class ExpirationModel(enum.StrEnum):
    """``ExpirationModelType``: present only for ``Origin`` EXTERNAL."""

    KEY_MATERIAL_EXPIRES = "KEY_MATERIAL_EXPIRES"
    KEY_MATERIAL_DOES_NOT_EXPIRE = "KEY_MATERIAL_DOES_NOT_EXPIRE"


_RSA = frozenset({KeySpec.RSA_2048, KeySpec.RSA_3072, KeySpec.RSA_4096})
_RSA_SIGNING = (
    SigningAlgorithm.RSASSA_PSS_SHA_256,
    SigningAlgorithm.RSASSA_PSS_SHA_384,
    SigningAlgorithm.RSASSA_PSS_SHA_512,
    SigningAlgorithm.RSASSA_PKCS1_V1_5_SHA_256,
    SigningAlgorithm.RSASSA_PKCS1_V1_5_SHA_384,
    SigningAlgorithm.RSASSA_PKCS1_V1_5_SHA_512,
)
_SIGNING_BY_SPEC: Mapping[KeySpec, tuple[SigningAlgorithm, ...]] = MappingProxyType(
    {
        **{spec: _RSA_SIGNING for spec in _RSA},
        KeySpec.ECC_NIST_P256: (SigningAlgorithm.ECDSA_SHA_256,),
        KeySpec.ECC_NIST_P384: (SigningAlgorithm.ECDSA_SHA_384,),
        KeySpec.ECC_NIST_P521: (SigningAlgorithm.ECDSA_SHA_512,),
        KeySpec.ECC_SECG_P256K1: (SigningAlgorithm.ECDSA_SHA_256,),
        KeySpec.ECC_NIST_EDWARDS25519: (
            SigningAlgorithm.ED25519_SHA_512,
            SigningAlgorithm.ED25519_PH_SHA_512,
        ),
        KeySpec.SM2: (SigningAlgorithm.SM2DSA,),
        KeySpec.ML_DSA_44: (SigningAlgorithm.ML_DSA_SHAKE_256,),
        KeySpec.ML_DSA_65: (SigningAlgorithm.ML_DSA_SHAKE_256,),
        KeySpec.ML_DSA_87: (SigningAlgorithm.ML_DSA_SHAKE_256,),
    }
)
_ENCRYPTION_BY_SPEC: Mapping[KeySpec, tuple[EncryptionAlgorithm, ...]] = MappingProxyType(
    {
        KeySpec.SYMMETRIC_DEFAULT: (EncryptionAlgorithm.SYMMETRIC_DEFAULT,),
        **{spec: (EncryptionAlgorithm.RSAES_OAEP_SHA_1, EncryptionAlgorithm.RSAES_OAEP_SHA_256) for spec in _RSA},
        KeySpec.SM2: (EncryptionAlgorithm.SM2PKE,),
    }
)
_ECDH_SPECS = frozenset({KeySpec.ECC_NIST_P256, KeySpec.ECC_NIST_P384, KeySpec.ECC_NIST_P521, KeySpec.SM2})
_ML_KEM_SPECS = frozenset({KeySpec.ML_KEM_512, KeySpec.ML_KEM_768, KeySpec.ML_KEM_1024})
_MAC_BY_SPEC: Mapping[KeySpec, tuple[MacAlgorithm, ...]] = MappingProxyType(
    {
        KeySpec.HMAC_224: (MacAlgorithm.HMAC_SHA_224,),
        KeySpec.HMAC_256: (MacAlgorithm.HMAC_SHA_256,),
        KeySpec.HMAC_384: (MacAlgorithm.HMAC_SHA_384,),
        KeySpec.HMAC_512: (MacAlgorithm.HMAC_SHA_512,),
    }
)


# --- backing versions and multi-Region configuration ---------------------------------------------

MAX_BACKING_VERSION = 2**32 - 1
"""The ciphertext header stores the version as uint32 (ciphertext.py)."""


@dataclass(frozen=True, slots=True)
class BackingKeyVersion:
    """One generation of a key's material, by number only; rotation appends the next number.

    Version 1 is made with the key (or by its first import); old versions stay for Decrypt.
    The wrapped material is held by the store and unwrapped by crypto, never by the domain.
    """

    version: int
    created_at: datetime

    def __post_init__(self) -> None:
        if not 1 <= self.version <= MAX_BACKING_VERSION:
            raise ValueError(f"backing version out of range: {self.version}")
        _require_aware(self.created_at, "created_at")


@dataclass(frozen=True, slots=True)
class MultiRegionKey:
    """``MultiRegionKey``: one member of a multi-Region key set."""

    arn: str
    region: str


@dataclass(frozen=True, slots=True)
class MultiRegionConfiguration:
    """``MultiRegionConfiguration`` as DescribeKey shows it in one Region."""

    key_type: MultiRegionKeyType
    primary_key: MultiRegionKey
    replica_keys: tuple[MultiRegionKey, ...] = ()


# --- the key --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Key:
    """``KeyMetadata`` of one KMS key in one Region, minus what is derived from other fields.

    Derived, so they cannot disagree: ``arn``, ``enabled`` (true exactly when the state is
    Enabled, as the model says), ``multi_region`` (the ``mrk-`` prefix), the algorithm lists
    (from key spec and usage). Invariants checked on construction, so a ``Key`` in hand is
    consistent: ``DeletionDate`` is set exactly in PendingDeletion;
    ``PendingDeletionWindowInDays`` exactly in PendingReplicaDeletion; a multi-Region
    configuration exactly for ``mrk-`` keys; dates timezone-aware.
    """

    key_id: str
    account: str
    region: str
    creation_date: datetime
    key_state: KeyState
    description: str = ""
    key_usage: KeyUsage = KeyUsage.ENCRYPT_DECRYPT
    key_spec: KeySpec = KeySpec.SYMMETRIC_DEFAULT
    origin: Origin = Origin.AWS_KMS
    key_manager: KeyManager = KeyManager.CUSTOMER
    deletion_date: datetime | None = None
    pending_deletion_window_in_days: int | None = None
    valid_to: datetime | None = None
    expiration_model: ExpirationModel | None = None
    multi_region_configuration: MultiRegionConfiguration | None = None

    def __post_init__(self) -> None:
        if not is_valid_key_id(self.key_id):
            raise ValueError(f"not a canonical key id: {self.key_id!r}")
        require_account_id(self.account)
        require_region_name(self.region)
        _require_aware(self.creation_date, "creation_date")
        pending = self.key_state is KeyState.PENDING_DELETION
        if pending != (self.deletion_date is not None):
            raise ValueError("deletion_date is set exactly when the key state is PendingDeletion")
        if self.deletion_date is not None:
            _require_aware(self.deletion_date, "deletion_date")
        replica_pending = self.key_state is KeyState.PENDING_REPLICA_DELETION
        if replica_pending != (self.pending_deletion_window_in_days is not None):
            raise ValueError(
                "pending_deletion_window_in_days is set exactly when the key state is PendingReplicaDeletion"
            )
        window = self.pending_deletion_window_in_days
        if window is not None and not MIN_PENDING_WINDOW_IN_DAYS <= window <= MAX_PENDING_WINDOW_IN_DAYS:
            raise ValueError(f"pending_deletion_window_in_days out of range: {window}")
        if self.valid_to is not None:
            _require_aware(self.valid_to, "valid_to")
        if self.multi_region != (self.multi_region_configuration is not None):
            raise ValueError("a multi-Region configuration is present exactly for mrk- keys")

    @property
    def arn(self) -> str:
        return key_arn(self.region, self.account, self.key_id)

    @property
    def enabled(self) -> bool:
        return self.key_state is KeyState.ENABLED

    @property
    def multi_region(self) -> bool:
        return self.key_id.startswith(MRK_PREFIX)

    @property
    def is_primary_with_replicas(self) -> bool:
        config = self.multi_region_configuration
        return config is not None and config.key_type is MultiRegionKeyType.PRIMARY and bool(config.replica_keys)

    @property
    def encryption_algorithms(self) -> tuple[EncryptionAlgorithm, ...]:
        """Present only for ``ENCRYPT_DECRYPT`` keys (empty tuple otherwise: omit the field)."""
        if self.key_usage is not KeyUsage.ENCRYPT_DECRYPT:
            return ()
        return _ENCRYPTION_BY_SPEC.get(self.key_spec, ())

    @property
    def signing_algorithms(self) -> tuple[SigningAlgorithm, ...]:
        """Present only for ``SIGN_VERIFY`` keys."""
        if self.key_usage is not KeyUsage.SIGN_VERIFY:
            return ()
        return _SIGNING_BY_SPEC.get(self.key_spec, ())

    @property
    def mac_algorithms(self) -> tuple[MacAlgorithm, ...]:
        """Present only for ``GENERATE_VERIFY_MAC`` keys."""
        if self.key_usage is not KeyUsage.GENERATE_VERIFY_MAC:
            return ()
        return _MAC_BY_SPEC.get(self.key_spec, ())

    @property
    def key_agreement_algorithms(self) -> tuple[KeyAgreementAlgorithm, ...]:
        """Present only for ``KEY_AGREEMENT`` keys."""
        if self.key_usage is not KeyUsage.KEY_AGREEMENT or self.key_spec not in _ECDH_SPECS:
            return ()
        return (KeyAgreementAlgorithm.ECDH,)

    @property
    def encapsulation_algorithms(self) -> tuple[EncapsulationAlgorithm, ...]:
        """Present only for ``ENCAPSULATE_DECAPSULATE`` keys."""
        if self.key_usage is not KeyUsage.ENCAPSULATE_DECAPSULATE or self.key_spec not in _ML_KEM_SPECS:
            return ()
        return (EncapsulationAlgorithm.ML_KEM,)


def _require_aware(value: datetime, name: str) -> None:
    # Naive datetimes are ambiguous across nodes in different zones; KMS dates are instants.
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{name} must be timezone-aware")


# --- scheduled deletion ---------------------------------------------------------------------------

MIN_PENDING_WINDOW_IN_DAYS = 7
MAX_PENDING_WINDOW_IN_DAYS = 30
DEFAULT_PENDING_WINDOW_IN_DAYS = 30
"""ScheduleKeyDeletion: "If you include a value, it must be between 7 and 30, inclusive. If you
do not include a value, it defaults to 30." The model's shape allows 1-365; KMS narrows it."""


def pending_window_in_days(requested: int | None) -> int:
    """The waiting period to use: the default for ``None``, else 7-30 or ``ValidationException``.

    The message is the one LocalStack records for this case from AWS.
    """
    if requested is None:
        return DEFAULT_PENDING_WINDOW_IN_DAYS
    if not MIN_PENDING_WINDOW_IN_DAYS <= requested <= MAX_PENDING_WINDOW_IN_DAYS:
        raise ValidationException(
            f"PendingWindowInDays should be between {MIN_PENDING_WINDOW_IN_DAYS} and "
            f"{MAX_PENDING_WINDOW_IN_DAYS}, but it is {requested}"
        )
    return requested


def deletion_date(now: datetime, days: int | None) -> datetime:
    """When a key scheduled now with a ``days`` waiting period (``None``: 30) is deleted."""
    _require_aware(now, "now")
    return now + timedelta(days=pending_window_in_days(days))


# --- which operations each state allows -----------------------------------------------------------

_E = KeyState.ENABLED
_D = KeyState.DISABLED
_PI = KeyState.PENDING_IMPORT
_PD = KeyState.PENDING_DELETION
_PRD = KeyState.PENDING_REPLICA_DELETION
_U = KeyState.UNAVAILABLE
_C = KeyState.CREATING
_UP = KeyState.UPDATING

_ALL = frozenset(KeyState)
_CRYPTO = frozenset({_E, _UP})
_MANAGE = frozenset({_E, _D, _PI, _U, _C, _UP})  # key management, refused only while deleting

_CRYPTO_OPERATIONS = (
    "Decapsulate",
    "Decrypt",
    "DeriveSharedSecret",
    "Encapsulate",
    "Encrypt",
    "GenerateDataKey",
    "GenerateDataKeyPair",
    "GenerateDataKeyPairWithoutPlaintext",
    "GenerateDataKeyWithoutPlaintext",
    "GenerateMac",
    "ReEncrypt",
    "Sign",
    "Verify",
    "VerifyMac",
)

ALLOWED_STATES: Mapping[str, frozenset[KeyState]] = MappingProxyType(
    {
        **{operation: _CRYPTO for operation in _CRYPTO_OPERATIONS},
        # Read-only and cleanup operations work in every state ("DescribeKey ✓" everywhere).
        **{
            operation: _ALL
            for operation in (
                "DeleteAlias",
                "DescribeKey",
                "GetKeyLastUsage",
                "GetKeyPolicy",
                "GetKeyRotationStatus",
                "ListAliases",
                "ListGrants",
                "ListKeyPolicies",
                "ListKeyRotations",
                "ListResourceTags",
                "PutKeyPolicy",
                "RetireGrant",
                "RevokeGrant",
            )
        },
        # Table: ✓ in Enabled, Disabled, PendingImport, Unavailable; X [3] in PendingDeletion.
        # For UpdateAlias this is the *target* key (footnote [10]: the old target may be pending
        # deletion). Creating and Updating: "you can manage key".
        **{
            operation: _MANAGE
            for operation in (
                "CreateAlias",
                "TagResource",
                "UntagResource",
                "UpdateAlias",
                "UpdateKeyDescription",
            )
        },
        "CancelKeyDeletion": frozenset({_PD, _PRD}),
        # Disabled: X [1]; PendingImport: X [5]; Unavailable: ✓.
        "CreateGrant": frozenset({_E, _U, _C, _UP}),
        # PendingImport: ✓ "no effect"; PendingDeletion: the state does not change (API reference).
        "DeleteImportedKeyMaterial": frozenset({_E, _D, _PI, _PD, _PRD}),
        # Unavailable: ✓ [12]; Updating: "cannot ... enabling or disabling these keys".
        "DisableKey": frozenset({_E, _D, _U}),
        "EnableKey": frozenset({_E, _D, _U}),
        # Disabled: X [1]; origin/key-store conditions [7] are the service's checks.
        "DisableKeyRotation": frozenset({_E}),
        "EnableKeyRotation": frozenset({_E}),
        "RotateKeyOnDemand": frozenset({_E}),
        # The table says X [1] for Disabled, but AWS answers GetPublicKey for disabled keys
        # (recorded by LocalStack's snapshot tests); we follow the observed behaviour.
        "GetPublicKey": frozenset({_E, _D, _UP}),
        # PendingDeletion: X [8]; origin check [9] is the service's.
        "GetParametersForImport": frozenset({_E, _D, _PI}),
        "ImportKeyMaterial": frozenset({_E, _D, _PI}),
        # ✓ in Enabled, Disabled, PendingImport, Unavailable; X [3] in PendingDeletion.
        "ScheduleKeyDeletion": frozenset({_E, _D, _PI, _U}),
        # ReplicateKey/UpdatePrimaryRegion list DisabledException; "you cannot replicate the new
        # primary key" while Updating. A PendingImport primary replicates into PendingImport.
        "ReplicateKey": frozenset({_E, _PI}),
        "UpdatePrimaryRegion": frozenset({_E}),
    }
)
"""API operation name -> key states in which it may proceed (key-state table, see module docstring)."""

DISABLED_EXCEPTION_OPERATIONS = frozenset(
    {
        *_CRYPTO_OPERATIONS,
        "CreateGrant",
        "DisableKeyRotation",
        "EnableKeyRotation",
        "GetPublicKey",
        "ReplicateKey",
        "RotateKeyOnDemand",
        "UpdatePrimaryRegion",
    }
)
"""Operations whose model error list has ``DisabledException``: a Disabled key gets that, not
``KMSInvalidStateException``."""

_STATE_PHRASE: Mapping[KeyState, str] = MappingProxyType(
    {
        _E: "enabled",
        _D: "disabled",
        _PI: "pending import",
        _PD: "pending deletion",
        _PRD: "pending replica deletion",
        _U: "unavailable",
        _C: "creating",
        _UP: "updating",
    }
)


def _refusal(operation: str, key: Key) -> DisabledException | KMSInvalidStateException:
    state = key.key_state
    if state is _D and operation in DISABLED_EXCEPTION_OPERATIONS:
        return DisabledException(f"{key.arn} is disabled.")
    if operation == "CancelKeyDeletion":
        return KMSInvalidStateException(f"{key.arn} is not pending deletion.")
    return KMSInvalidStateException(f"{key.arn} is {_STATE_PHRASE[state]}.")


def require_state(operation: str, key: Key) -> None:
    """Raise AWS's exception unless ``operation`` may run on ``key`` in its current state.

    ``operation`` is the API name (``"Encrypt"``); an unknown name is a bug (``KeyError``),
    so a new operation cannot silently skip the check.
    """
    if key.key_state not in ALLOWED_STATES[operation]:
        raise _refusal(operation, key)


def require_usable_for_crypto(key: Key, operation: str = "Encrypt") -> None:
    """The hot-path check before any cryptographic operation: Enabled (or Updating) only.

    Disabled -> ``DisabledException("<arn> is disabled.")``; PendingDeletion, PendingImport,
    Creating, ... -> ``KMSInvalidStateException("<arn> is pending deletion.")`` and so on.
    """
    if operation not in _CRYPTO_OPERATIONS:
        raise ValueError(f"{operation} is not a cryptographic operation")
    require_state(operation, key)


# --- transitions ----------------------------------------------------------------------------------


class KeyEvent(enum.StrEnum):
    """Everything that changes a key's state: API operations and background happenings."""

    ENABLE = "Enable"  # EnableKey
    DISABLE = "Disable"  # DisableKey
    SCHEDULE_DELETION = "ScheduleDeletion"  # ScheduleKeyDeletion
    CANCEL_DELETION = "CancelDeletion"  # CancelKeyDeletion
    IMPORT_MATERIAL = "ImportMaterial"  # ImportKeyMaterial
    DELETE_IMPORTED_MATERIAL = "DeleteImportedMaterial"  # DeleteImportedKeyMaterial
    MATERIAL_EXPIRED = "MaterialExpired"  # import-expiry sweeper: ValidTo has passed
    REPLICA_CREATED = "ReplicaCreated"  # replication finished creating a replica
    PRIMARY_UPDATE_START = "PrimaryUpdateStart"  # UpdatePrimaryRegion began
    PRIMARY_UPDATE_END = "PrimaryUpdateEnd"  # UpdatePrimaryRegion finished in this Region
    LAST_REPLICA_DELETED = "LastReplicaDeleted"  # a PendingReplicaDeletion primary's waiting period starts
    DESTROY = "Destroy"  # deletion sweeper: the waiting period is over


_EVENT_OPERATION: Mapping[KeyEvent, str] = MappingProxyType(
    {
        KeyEvent.ENABLE: "EnableKey",
        KeyEvent.DISABLE: "DisableKey",
        KeyEvent.SCHEDULE_DELETION: "ScheduleKeyDeletion",
        KeyEvent.CANCEL_DELETION: "CancelKeyDeletion",
        KeyEvent.IMPORT_MATERIAL: "ImportKeyMaterial",
        KeyEvent.DELETE_IMPORTED_MATERIAL: "DeleteImportedKeyMaterial",
        KeyEvent.PRIMARY_UPDATE_START: "UpdatePrimaryRegion",
    }
)
"""Events that are API operations: their refusals are the operation's refusals."""

TRANSITIONS: Mapping[KeyEvent, Mapping[KeyState, KeyState]] = MappingProxyType(
    {
        # EnableKey/DisableKey are idempotent in AWS; Unavailable keeps its state [12].
        KeyEvent.ENABLE: MappingProxyType({_E: _E, _D: _E, _U: _U}),
        KeyEvent.DISABLE: MappingProxyType({_E: _D, _D: _D, _U: _U}),
        # A primary with replicas goes to PendingReplicaDeletion instead (see transition()).
        KeyEvent.SCHEDULE_DELETION: MappingProxyType({_E: _PD, _D: _PD, _PI: _PD, _U: _PD}),
        # "After you cancel the pending deletion of a KMS key, the key state ... is Disabled."
        KeyEvent.CANCEL_DELETION: MappingProxyType({_PD: _D, _PRD: _D}),
        # Reimporting the same material into a usable key changes only its expiration.
        KeyEvent.IMPORT_MATERIAL: MappingProxyType({_PI: _E, _E: _E, _D: _D}),
        # "When the specified KMS key is in the PendingDeletion state, this operation does not
        # change the KMS key's state. Otherwise, it changes the KMS key's state to PendingImport."
        KeyEvent.DELETE_IMPORTED_MATERIAL: MappingProxyType({_E: _PI, _D: _PI, _PI: _PI, _PD: _PD, _PRD: _PRD}),
        KeyEvent.MATERIAL_EXPIRED: MappingProxyType({_E: _PI, _D: _PI, _PI: _PI, _PD: _PD, _PRD: _PRD}),
        # "changes to Enabled (or PendingImport)": PendingImport for EXTERNAL origin (see transition()).
        KeyEvent.REPLICA_CREATED: MappingProxyType({_C: _E}),
        KeyEvent.PRIMARY_UPDATE_START: MappingProxyType({_E: _UP}),
        KeyEvent.PRIMARY_UPDATE_END: MappingProxyType({_UP: _E}),
        KeyEvent.LAST_REPLICA_DELETED: MappingProxyType({_PRD: _PD}),
        # The store deletes the key; PendingDeletion is the last state it ever had.
        KeyEvent.DESTROY: MappingProxyType({_PD: _PD}),
    }
)
"""Event -> (current state -> next state); a missing entry is an illegal transition."""


def transition(key: Key, event: KeyEvent) -> KeyState:
    """The state ``key`` moves to on ``event``, or AWS's exception if the event is illegal now.

    Events that are API operations refuse exactly as ``require_state`` does for that operation
    (``DisabledException`` where AWS uses it); background events refuse with
    ``KMSInvalidStateException("<arn> is <state>.")`` (DESTROY: "is not pending deletion.").
    """
    targets = TRANSITIONS[event]
    state = key.key_state
    if state not in targets:
        operation = _EVENT_OPERATION.get(event)
        if operation is not None:
            raise _refusal(operation, key)
        if event is KeyEvent.DESTROY:
            raise KMSInvalidStateException(f"{key.arn} is not pending deletion.")
        raise KMSInvalidStateException(f"{key.arn} is {_STATE_PHRASE[state]}.")
    target = targets[state]
    if event is KeyEvent.SCHEDULE_DELETION and key.is_primary_with_replicas:
        return _PRD
    if event is KeyEvent.REPLICA_CREATED and key.origin is Origin.EXTERNAL:
        return _PI
    return target


def apply(
    key: Key,
    event: KeyEvent,
    *,
    now: datetime | None = None,
    pending_window: int | None = None,
) -> Key:
    """``key`` after ``event``: the new state plus the fields that move with it.

    SCHEDULE_DELETION needs ``now`` and takes ``pending_window`` (``None``: 30 days): it sets
    ``DeletionDate`` (PendingDeletion) or ``PendingDeletionWindowInDays`` (PendingReplicaDeletion,
    whose waiting period starts only when the last replica is gone). LAST_REPLICA_DELETED needs
    ``now`` and turns the stored window into a ``DeletionDate``. Leaving a pending state clears
    both fields. Other fields (``ValidTo``, ``ExpirationModel``) belong to the service's import
    handling, which knows their new values.
    """
    target = transition(key, event)
    deletion: datetime | None = None
    window: int | None = None
    if target is _PD:
        if key.key_state is _PD:
            deletion = key.deletion_date
        elif event is KeyEvent.SCHEDULE_DELETION:
            deletion = deletion_date(_required_now(now, event), pending_window)
        else:  # LAST_REPLICA_DELETED
            deletion = deletion_date(_required_now(now, event), key.pending_deletion_window_in_days)
    elif target is _PRD:
        window = (
            key.pending_deletion_window_in_days if key.key_state is _PRD else pending_window_in_days(pending_window)
        )
    return dataclasses.replace(key, key_state=target, deletion_date=deletion, pending_deletion_window_in_days=window)


def _required_now(now: datetime | None, event: KeyEvent) -> datetime:
    if now is None:
        raise ValueError(f"{event} needs now=")
    return now
