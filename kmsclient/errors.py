"""Every failure kmsclient raises, in one tree whose leaves mirror the AWS ``__type`` codes.

    KmsClientError                      code, message, status (0: no answer), region
    ├── ServiceError                    the service answered with an AWS error (``error_for`` picks the leaf)
    │   ├── NotFoundException, AccessDeniedException, InvalidCiphertextException, DisabledException,
    │   │   KMSInvalidStateException, IncorrectKeyException, InvalidKeyUsageException, ValidationException,
    │   │   InvalidGrantTokenException, KeyUnavailableException, UnrecognizedClientException,
    │   │   InvalidSignatureException, AlreadyExistsException, LimitExceededException, ...
    │   └── RetryableServiceError       throttling and server faults: another try (or region) may succeed
    │       └── ThrottlingException, KMSInternalException, DependencyTimeoutException, ServiceUnavailable
    ├── TransportError                  no usable answer (``sent`` tells whether the request may have arrived)
    ├── NoRegionAvailableError          every region that may serve the call failed
    ├── ConfigurationError              bad key identifier, missing credentials, region without endpoint
    ├── MessageError                    an encrypted message is malformed, truncated or was modified
    │   └── SignatureError              the footer signature does not verify
    ├── MaterialsError                  no keyring could produce or open the data key; context rules
    │   └── RequiredContextError        a required encryption context key is missing or differs
    └── AdminApiError                   (alias of ServiceError for the RegionKmsIam admin targets)

A ``MessageError`` never says which byte was wrong or why (as ``InvalidTag``): a tampered frame, a
reordered frame and a changed header look the same to the caller.
"""

from __future__ import annotations

from typing import ClassVar


class KmsClientError(Exception):
    """A failed call: ``code`` is the AWS error code (or kmsclient's own), ``status`` the HTTP status."""

    default_code: ClassVar[str] = "KmsClientError"

    def __init__(self, message: str, *, code: str | None = None, status: int = 0, region: str | None = None) -> None:
        self.code = code or self.default_code
        self.message = message
        self.status = status
        self.region = region
        where = f" (in {region})" if region else ""
        super().__init__(f"{self.code}: {message}{where}" if message else f"{self.code}{where}")

    @property
    def retryable(self) -> bool:
        """True when a second attempt (here or in another region) may succeed."""
        return False

    @property
    def surely_not_applied(self) -> bool:
        """True when the service certainly did not act on the request (safe to retry any call)."""
        return False


class ServiceError(KmsClientError):
    """The service answered with an AWS error code."""

    default_code = "ServiceError"

    @property
    def surely_not_applied(self) -> bool:
        return self.status < 500


class RetryableServiceError(ServiceError):
    @property
    def retryable(self) -> bool:
        return True

    @property
    def surely_not_applied(self) -> bool:
        return self.code == "ThrottlingException"


class TransportError(KmsClientError):
    """No answer: ``sent`` is False when the connection failed before the request could leave."""

    default_code = "ConnectionError"

    def __init__(self, message: str, *, sent: bool, region: str | None = None) -> None:
        super().__init__(message, region=region)
        self.sent = sent

    @property
    def retryable(self) -> bool:
        return True

    @property
    def surely_not_applied(self) -> bool:
        return not self.sent


class NoRegionAvailableError(KmsClientError):
    default_code = "NoRegionAvailable"


class ConfigurationError(KmsClientError):
    default_code = "ConfigurationError"


class MessageError(KmsClientError):
    default_code = "InvalidMessage"

    def __init__(self, message: str = "the message is not a valid encrypted message or was modified") -> None:
        super().__init__(message)


class SignatureError(MessageError):
    default_code = "InvalidSignature"

    def __init__(self, message: str = "the message signature does not verify: the message was modified") -> None:
        super().__init__(message)


class MaterialsError(KmsClientError):
    default_code = "MaterialsError"


class RequiredContextError(MaterialsError):
    default_code = "RequiredEncryptionContext"


AdminApiError = ServiceError
"""The admin (``RegionKmsIam.*``) API answers with the same error shape as KMS."""

_RETRYABLE_CODES = (
    "ThrottlingException",
    "KMSInternalException",
    "DependencyTimeoutException",
    "ServiceUnavailableException",
    "InternalFailure",
)
_CODES = (
    "AccessDeniedException",
    "AlreadyExistsException",
    "DisabledException",
    "IncorrectKeyException",
    "InvalidAliasNameException",
    "InvalidArnException",
    "InvalidCiphertextException",
    "InvalidGrantTokenException",
    "InvalidKeyUsageException",
    "InvalidSignatureException",
    "KMSInvalidStateException",
    "KeyUnavailableException",
    "LimitExceededException",
    "MissingAuthenticationToken",
    "NotFoundException",
    "SerializationException",
    "UnrecognizedClientException",
    "UnsupportedOperationException",
    "ValidationException",
)


def _leaf(code: str, base: type[ServiceError]) -> type[ServiceError]:
    return type(code, (base,), {"default_code": code, "__doc__": f"The service answered ``{code}``."})


SERVICE_ERRORS: dict[str, type[ServiceError]] = {c: _leaf(c, ServiceError) for c in _CODES}
SERVICE_ERRORS.update({c: _leaf(c, RetryableServiceError) for c in _RETRYABLE_CODES})

NotFoundException = SERVICE_ERRORS["NotFoundException"]
AccessDeniedException = SERVICE_ERRORS["AccessDeniedException"]
InvalidCiphertextException = SERVICE_ERRORS["InvalidCiphertextException"]
ThrottlingException = SERVICE_ERRORS["ThrottlingException"]
KMSInternalException = SERVICE_ERRORS["KMSInternalException"]


def error_for(code: str, message: str, *, status: int, region: str | None) -> ServiceError:
    """The exception for an AWS error answer: the named leaf, or a generic one keyed by status."""
    cls = SERVICE_ERRORS.get(code)
    if cls is None:
        cls = RetryableServiceError if status >= 500 or status == 429 else ServiceError
    return cls(message, code=code, status=status, region=region)


# Kept for callers of kmsclient 1.
EnvelopeError = MessageError
NoHealthyRegionError = NoRegionAvailableError
