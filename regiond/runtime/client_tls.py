"""TLS on the client endpoint: the node's server certificate, read from files and replaced whole on reload.

The certificate chain and its private key are PEM files the operator provides (from the
organisation's CA, a cert-manager Secret, or for ``regiond dev`` the cluster CA). They are read
at start and again on SIGHUP (``regiond.runtime.serve``); a reload builds a complete new context and
only then replaces the old one, so a bad file (half-written, a key that does not match) is
logged and refused while the node keeps serving with the certificate it has. Connections open
at the reload keep their session: only handshakes after it use the new certificate
(``regiond.runtime.listener`` asks for ``context`` at each handshake).

The context: TLS 1.2 and 1.3 only (``minimum_version``), Python's default cipher list
(forward-secret AEAD suites only at security level 2), no compression, no renegotiation (a
client could otherwise restart handshakes on an open connection, outside the handshake bound),
ALPN ``http/1.1``. No client certificate is asked for: clients authenticate with SigV4.
"""

from __future__ import annotations

import ssl
import stat
from pathlib import Path

import structlog

from regiond.runtime.metrics import TLS_RELOADS

log = structlog.get_logger(__name__)

__all__ = ["ServerCertificate", "TlsConfigError", "server_context"]


class TlsConfigError(ValueError):
    """A certificate or key file that cannot be read or used; the message names the file, never its contents."""


def server_context(cert_file: Path, key_file: Path) -> ssl.SSLContext:
    """A TLS 1.2+ server context holding ``cert_file`` (the chain, leaf first) and ``key_file``."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.options |= ssl.OP_NO_COMPRESSION | ssl.OP_NO_RENEGOTIATION | ssl.OP_CIPHER_SERVER_PREFERENCE
    ctx.set_alpn_protocols(["http/1.1"])
    for path in (cert_file, key_file):  # OpenSSL's own error would not say which file
        try:
            with path.open("rb"):
                pass
        except FileNotFoundError:
            raise TlsConfigError(f"TLS file not found: {path}") from None
        except OSError as exc:
            raise TlsConfigError(f"TLS file {path} cannot be read by this process: {exc.strerror}") from None
    try:
        ctx.load_cert_chain(cert_file, key_file)
    except OSError as exc:  # ssl.SSLError; or a file replaced between the check and the load
        reason = getattr(exc, "reason", None) or exc.strerror or "unreadable"
        raise TlsConfigError(
            f"TLS certificate {cert_file} with key {key_file} cannot be used ({reason}): both must be PEM, the key"
            " unencrypted and matching the first certificate"
        ) from None
    return ctx


def _warn_if_readable_by_others(key_file: Path) -> None:
    try:
        mode = key_file.stat().st_mode
    except OSError:
        return
    if mode & stat.S_IROTH:
        log.warning("tls.key_file_world_readable", key_file=str(key_file), hint="chmod o-r (0600 or 0640)")


class ServerCertificate:
    """The client endpoint's current TLS context, from ``cert_file`` and ``key_file``.

    Raises ``TlsConfigError`` at construction if the files do not make a context (a node must not
    start without its certificate); ``reload`` never raises.
    """

    def __init__(self, cert_file: Path, key_file: Path) -> None:
        self.cert_file = cert_file
        self.key_file = key_file
        _warn_if_readable_by_others(key_file)
        self._context = server_context(cert_file, key_file)

    def context(self) -> ssl.SSLContext:
        """The context for the next handshake."""
        return self._context

    def reload(self) -> bool:
        """Read both files again and use them for new handshakes; on failure keep the current ones."""
        try:
            fresh = server_context(self.cert_file, self.key_file)
        except TlsConfigError as exc:
            TLS_RELOADS.labels("failed").inc()
            log.error("tls.reload_failed", error=str(exc), keeping="the certificate loaded before")
            return False
        _warn_if_readable_by_others(self.key_file)
        self._context = fresh
        TLS_RELOADS.labels("ok").inc()
        log.info("tls.reloaded", cert_file=str(self.cert_file))
        return True
