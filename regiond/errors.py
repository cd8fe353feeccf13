"""The error tree: every failure a client can see, with its AWS wire identity.

Each class knows the ``__type`` it renders as (``code``) and its HTTP status, so
``protocol/routes.py`` (``handle``, the one request function; there is no middleware stack)
turns any ``KmsError`` into ``{"__type": e.code, "message": str(e)}`` without a lookup table.
Anything that is not a ``KmsError`` is logged and answered as KMSInternalException (500)
without detail. Messages must never contain key material, plaintext or secrets.

``KmsError`` itself is abstract: it is never raised, and if it were it would render as the
server fault it would be (KMSInternalException, 500). Every subclass names its own ``code``;
its status is 400 unless it says otherwise (as AWS: client faults are 400 for this protocol).

    KmsError (abstract; 500 KMSInternalException if raised)
    ├── protocol (400):  SerializationException, UnknownOperationException, ValidationException,
    │                    ThrottlingException; RequestEntityTooLargeException (413), RequestTimeoutException (408)
    ├── auth (400):      MissingAuthenticationToken, IncompleteSignature, InvalidSignatureException,
    │                    UnrecognizedClientException, AccessDeniedException
    ├── kms (400):       NotFoundException, AlreadyExistsException, DisabledException, KMSInvalidStateException,
    │                    InvalidCiphertextException, IncorrectKeyException, InvalidKeyUsageException,
    │                    InvalidAliasNameException, InvalidArnException, InvalidMarkerException,
    │                    InvalidGrantIdException, InvalidGrantTokenException, MalformedPolicyDocumentException,
    │                    TagException, LimitExceededException, UnsupportedOperationException,
    │                    ConflictException, DryRunOperationException, IncorrectKeyMaterialException,
    │                    ExpiredImportTokenException, InvalidImportTokenException, KeyUnavailableException,
    │                    KMSInvalidSignatureException, KMSInvalidMacException, NotAuthorizedException
    ├── iam (400):       EntityAlreadyExists, NoSuchEntity (the IAM admin API's names)
    └── server:          KMSInternalException (500), DependencyTimeoutException (503), ServiceUnavailable (503)

(tests/unit/test_errors.py checks that this drawing names every class and each status.)
"""

from __future__ import annotations

from typing import ClassVar


class KmsError(Exception):
    """Base of every client-visible failure; ``code`` is the AWS ``__type``. Raise a subclass."""

    code: ClassVar[str] = "KMSInternalException"
    status: ClassVar[int] = 500

    def __init_subclass__(cls, **kwargs: object) -> None:
        super().__init_subclass__(**kwargs)
        if KmsError in cls.__bases__:
            if "code" not in cls.__dict__:
                raise TypeError(f"{cls.__name__} must name its AWS __type in code")
            if "status" not in cls.__dict__:
                cls.status = 400

    def __init__(self, message: str = "") -> None:
        super().__init__(message or self.code)

    @property
    def message(self) -> str:
        return str(self.args[0])


# Protocol
class SerializationException(KmsError):
    code, status = "SerializationException", 400


class UnknownOperationException(KmsError):
    code, status = "UnknownOperationException", 400


class ValidationException(KmsError):
    code, status = "ValidationException", 400


class RequestEntityTooLargeException(KmsError):
    code, status = "RequestEntityTooLargeException", 413


class ThrottlingException(KmsError):
    code, status = "ThrottlingException", 400


class RequestTimeoutException(KmsError):
    """The request's body did not arrive in time (regiond.runtime.listener); the AWS SDKs retry this code."""

    code, status = "RequestTimeoutException", 408


# Authentication and authorization
class MissingAuthenticationToken(KmsError):
    code, status = "MissingAuthenticationTokenException", 400


class IncompleteSignature(KmsError):
    code, status = "IncompleteSignatureException", 400


class InvalidSignatureException(KmsError):
    code, status = "InvalidSignatureException", 400


class UnrecognizedClientException(KmsError):
    code, status = "UnrecognizedClientException", 400


class AccessDeniedException(KmsError):
    code, status = "AccessDeniedException", 400

    def __init__(self, message: str = "", *, resource: str | None = None) -> None:
        super().__init__(message)
        # The ARN the caller was refused on, so the audit event names it as AWS's does.
        self.resource = resource


# KMS
class NotFoundException(KmsError):
    code = "NotFoundException"


class AlreadyExistsException(KmsError):
    code = "AlreadyExistsException"


class DisabledException(KmsError):
    code = "DisabledException"


class KMSInvalidStateException(KmsError):
    code = "KMSInvalidStateException"


class InvalidCiphertextException(KmsError):
    code = "InvalidCiphertextException"


class IncorrectKeyException(KmsError):
    code = "IncorrectKeyException"


class InvalidKeyUsageException(KmsError):
    code = "InvalidKeyUsageException"


class InvalidAliasNameException(KmsError):
    code = "InvalidAliasNameException"


class InvalidArnException(KmsError):
    code = "InvalidArnException"


class InvalidMarkerException(KmsError):
    code = "InvalidMarkerException"


class InvalidGrantIdException(KmsError):
    code = "InvalidGrantIdException"


class InvalidGrantTokenException(KmsError):
    code = "InvalidGrantTokenException"


class MalformedPolicyDocumentException(KmsError):
    code = "MalformedPolicyDocumentException"


class TagException(KmsError):
    code = "TagException"


class LimitExceededException(KmsError):
    code = "LimitExceededException"


class UnsupportedOperationException(KmsError):
    code = "UnsupportedOperationException"


class ConflictException(KmsError):
    code = "ConflictException"


class DryRunOperationException(KmsError):
    code = "DryRunOperationException"


class IncorrectKeyMaterialException(KmsError):
    code = "IncorrectKeyMaterialException"


class ExpiredImportTokenException(KmsError):
    code = "ExpiredImportTokenException"


class InvalidImportTokenException(KmsError):
    code = "InvalidImportTokenException"


class KeyUnavailableException(KmsError):
    code = "KeyUnavailableException"


class KMSInvalidSignatureException(KmsError):
    """Verify: the signature is not valid for the key, message and algorithm (never a false result)."""

    code = "KMSInvalidSignatureException"


class KMSInvalidMacException(KmsError):
    """VerifyMac: the MAC is not valid for the key, message and algorithm."""

    code = "KMSInvalidMacException"


# IAM admin API (IAM error names, as the AWS IAM API spells them)
class EntityAlreadyExists(KmsError):
    code = "EntityAlreadyExistsException"


class NoSuchEntity(KmsError):
    code = "NoSuchEntityException"


# Server faults
class KMSInternalException(KmsError):
    code, status = "KMSInternalException", 500


class DependencyTimeoutException(KmsError):
    code, status = "DependencyTimeoutException", 503


class ServiceUnavailable(KmsError):
    code, status = "ServiceUnavailableException", 503


class NotAuthorizedException(KmsError):
    """AWS's answer to creating or changing an alias under the reserved ``alias/aws/`` prefix."""

    code = "NotAuthorizedException"
