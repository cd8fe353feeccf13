"""The error tree: every failure a client can see, with its AWS wire identity.

Each class knows the ``__type`` it renders as and its HTTP status, so the protocol
middleware can turn any ``KmsError`` into ``{"__type": e.code, "message": str(e)}``
without a lookup table. Messages must never contain key material, plaintext or secrets.

    KmsError (400)
    ├── protocol:   SerializationException, UnknownOperationException, ValidationException,
    │               RequestEntityTooLargeException (413), ThrottlingException, RequestTimeoutException (408)
    ├── auth:       MissingAuthenticationToken (403), IncompleteSignature, InvalidSignatureException,
    │               UnrecognizedClientException, AccessDeniedException
    ├── kms 4xx:    NotFoundException, AlreadyExistsException, DisabledException, KMSInvalidStateException,
    │               InvalidCiphertextException, IncorrectKeyException, InvalidKeyUsageException,
    │               InvalidAliasNameException, InvalidArnException, InvalidMarkerException,
    │               InvalidGrantIdException, InvalidGrantTokenException, MalformedPolicyDocumentException,
    │               TagException, LimitExceededException, UnsupportedOperationException,
    │               ConflictException, DryRunOperationException, IncorrectKeyMaterialException,
    │               ExpiredImportTokenException, InvalidImportTokenException, KeyUnavailableException,
    │               KMSInvalidSignatureException, KMSInvalidMacException
    ├── iam:        EntityAlreadyExists, NoSuchEntity, MalformedPolicyDocument (IAM admin API)
    └── server 5xx: KMSInternalException (500), DependencyTimeoutException (503), ServiceUnavailable (503)
"""

from __future__ import annotations


class KmsError(Exception):
    """Base of every client-visible failure; ``code`` is the AWS ``__type``."""

    code = "KMSInternalException"
    status = 400

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
    """The request's body did not arrive in time (regiond.listener); the AWS SDKs retry this code."""

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
