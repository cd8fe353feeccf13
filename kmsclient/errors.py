"""Client-side errors, mirroring the AWS ``__type`` codes the service answers with."""

from __future__ import annotations


class KmsClientError(Exception):
    """A failed call: ``code`` is the AWS error code, ``status`` the HTTP status (0: no answer)."""

    def __init__(self, code: str, message: str, *, status: int = 0, region: str | None = None) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.status = status
        self.region = region

    @property
    def retryable_elsewhere(self) -> bool:
        """True when another region may succeed: no answer, a server fault or throttling."""
        return self.status == 0 or self.status >= 500 or self.code in RETRYABLE_CODES


class NoHealthyRegionError(KmsClientError):
    def __init__(self, message: str) -> None:
        super().__init__("NoHealthyRegion", message)


class EnvelopeError(KmsClientError):
    """A sealed message is malformed, truncated or was tampered with."""

    def __init__(self, message: str = "the message is not a valid regionkms envelope or was modified") -> None:
        super().__init__("InvalidEnvelope", message)


RETRYABLE_CODES = frozenset(
    {"ThrottlingException", "KMSInternalException", "DependencyTimeoutException", "ServiceUnavailableException"}
)
