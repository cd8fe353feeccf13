"""Settings, read once at the edge.

``Settings`` is built by ``regiond.__main__`` from command-line flags with environment
fallbacks; nothing below this module reads ``os.environ``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

ENV_PREFIX = "REGIOND_"
DEFAULT_LISTEN = "127.0.0.1:8080"


def env(name: str, default: str | None = None) -> str | None:
    """The one reader of the environment (``REGIOND_<NAME>``)."""
    return os.environ.get(ENV_PREFIX + name, default)


def parse_listen(value: str) -> tuple[str, int]:
    host, _, port = value.rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"--listen must be HOST:PORT, got {value!r}")
    return host.strip("[]"), int(port)


@dataclass(frozen=True)
class Settings:
    region: str
    database_url: str
    state_dir: Path | None = None
    listen_host: str = "127.0.0.1"
    listen_port: int = 8080
    workers: int = 1
    # Replication (replication/): the cluster's peers file, this region's mTLS receiver address
    # (HOST:PORT; None: no receiver), and the sender's retry cap and idle heartbeat.
    peers_file: Path | None = None
    replication_listen: str | None = None
    replication_backoff_cap_s: float = 5.0
    replication_heartbeat_s: float = 5.0
    root_key_b64: str | None = None
    log_level: str = "info"
    log_json: bool = True
    max_clock_skew_s: int = 900
    # Slow and greedy clients (regiond.runtime.listener): a request's headers and its body each within their
    # bound, a kept-alive connection idle at most idle_timeout (above a load balancer's, usually 60 s),
    # and at most http_max_connections open connections per worker process.
    http_header_timeout_s: float = 10.0
    http_body_timeout_s: float = 30.0
    http_idle_timeout_s: float = 75.0
    http_max_connections: int = 1024
    # TLS on the client endpoint (regiond.runtime.client_tls): the certificate chain and key files, re-read on
    # SIGHUP, and the bound on a handshake. `regiond serve` refuses to start without them unless
    # plain_http says plain HTTP on purpose (behind a TLS-terminating proxy, or on loopback for tests).
    tls_cert_file: Path | None = None
    tls_key_file: Path | None = None
    plain_http: bool = False
    tls_handshake_timeout_s: float = 10.0
    trusted_proxies: tuple[str, ...] = ()
    # Failed authentications a source may make before its failures are answered ThrottlingException,
    # and how many per second it gets back (regiond.auth.failures; per worker; 0 turns it off).
    auth_failure_burst: int = 20
    auth_failure_refill_per_s: float = 0.5
    home_region: str | None = None
    # LISTEN/NOTIFY is what invalidates caches (its connection is pinged every second, so a dead one
    # empties them within seconds); the TTL is only the backstop for a change never notified. Each
    # expiry is a reload on the request path, and with many keys a short TTL means reloads without
    # end on every worker, so the backstop is an hour (figures: benchmarks/README.md).
    cache_ttl_s: float = 3600.0
    # Keys each worker loads into its caches in the background at start and after every cache drop
    # (regiond.service.preload), so that first requests do not load them; 0 turns it off. Every
    # worker holds its own copy (a few KiB per key), and never more than its key cache's 100,000.
    cache_preload_max_keys: int = 100_000
    audit_enabled: bool = True
    # Audit group commit (regiond.audit.committer): how long a batch waits for company (0: it
    # takes whatever queued while the previous write was in flight), its cap, the write timeout
    # after which the waiting calls fail closed, signed checkpoints and retention (0 = forever).
    audit_batch_linger_ms: float = 0.0
    audit_max_batch_events: int = 1000
    # Batches a worker has in flight at once: while one waits for its WAL flush, the next starts.
    audit_max_in_flight: int = 2
    audit_write_timeout_s: float = 5.0
    audit_checkpoint_events: int = 1000
    audit_checkpoint_interval_s: float = 300.0
    audit_retention_days: int = 0
    pool_max_size: int = 10
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def root_key_path(self) -> Path | None:
        return self.state_dir / "root.key" if self.state_dir else None


def client_endpoint_problem(settings: Settings) -> str | None:
    """Why ``settings`` cannot serve its client endpoint, or None: TLS, or plain HTTP said explicitly."""
    cert, key = settings.tls_cert_file, settings.tls_key_file
    if (cert is None) != (key is None):
        return "TLS needs both a certificate file and a key file"
    if cert is not None and settings.plain_http:
        return "plain HTTP and a TLS certificate are both configured: choose one"
    if cert is None and not settings.plain_http:
        return (
            "the client endpoint needs a TLS certificate and key (--tls-cert, --tls-key), or --plain-http to"
            " serve plain HTTP on purpose (behind a TLS-terminating proxy, or on loopback)"
        )
    return None
