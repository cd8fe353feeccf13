"""Settings, read once at the edge: one definition of each, four sources.

Every setting of a node is one field of ``Settings`` below, declared with ``setting(...)``: its
default, its help text and whether it is a secret live there and nowhere else. From that one
declaration come its three spellings and the docs:

    TOML key  ``cache_ttl``          in the node's configuration file (``regiond serve --config FILE``)
    variable  ``REGIOND_CACHE_TTL``  in the environment
    flag      ``--cache-ttl``        on the command line

and the table of docs/CONFIGURATION.md (``markdown_table``; a test keeps the two in step).
``load`` resolves them with the precedence flags > environment > file > default, so a file holds
a node's configuration and a deployment overrides one value without editing it (a Kubernetes
Secret as ``REGIOND_DATABASE_URL``, a flag in a test). ``regiond config check FILE`` prints what
``load`` made of it (``render``), secrets redacted.

A file is refused, with a one-line ``ConfigError``, for an unknown key (a typo would otherwise
silently leave the default in force), a value of the wrong type, or a value out of range; the same
checks apply to variables and flags. Nothing below this module reads ``os.environ``: ``load`` is
given the environment, and ``env`` is the one reader for the other commands' fallbacks.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
import tomllib
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

ENV_PREFIX = "REGIOND_"
CONFIG_ENV = ENV_PREFIX + "CONFIG"
"""The configuration file when ``--config`` is not given (itself not a setting: it names where they are)."""

Check = Literal["", "positive", "nonnegative"]
Source = Literal["default", "file", "env", "flag"]
_SPEC = "regiond.setting"


def env(name: str, default: str | None = None) -> str | None:
    """The one reader of the environment (``REGIOND_<NAME>``) for commands other than ``serve``."""
    return os.environ.get(ENV_PREFIX + name, default)


class ConfigError(ValueError):
    """A setting that cannot be used, in one line that names the setting and where it came from."""


@dataclass(frozen=True, slots=True)
class Spec:
    """What ``setting`` records about a field beyond its type and default."""

    key: str | None
    help: str
    secret: Literal["", "value", "url"] = ""
    check: Check = ""
    choices: tuple[str, ...] = ()
    required: bool = False


def setting(
    default: Any, help: str, *, key: str | None = None, secret: Literal["", "value", "url"] = "",
    check: Check = "", choices: tuple[str, ...] = (),
) -> Any:  # fmt: skip
    """A ``Settings`` field that is a setting (key: the field's name unless given)."""
    return field(default=default, metadata={_SPEC: Spec(key, help, secret, check, choices)})


def required(help: str, *, key: str | None = None, secret: Literal["", "value", "url"] = "") -> Any:
    """A setting without a default: ``load`` refuses a configuration that does not give it."""
    return field(metadata={_SPEC: Spec(key, help, secret, required=True)})


def parse_listen(value: str) -> tuple[str, int]:
    host, _, port = value.rpartition(":")
    if not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"listen must be HOST:PORT, got {value!r}")
    return host.strip("[]"), int(port)


@dataclass(frozen=True, kw_only=True)
class Settings:
    region: str = required("the AWS region this node serves (its database holds that region only)")
    database_url: str = required(
        "the region's PostgreSQL database (libpq URL; several hosts with target_session_attrs=read-write"
        " for a primary with standbys)", secret="url",
    )  # fmt: skip
    state_dir: Path | None = setting(
        None, "the region's state directory made by `regiond init` (root key, identity and TLS keys)"
    )
    # The client endpoint's address: one setting, ``listen`` (HOST:PORT), sets both (``_LISTEN``).
    listen_host: str = "127.0.0.1"
    listen_port: int = 8080
    workers: int = setting(1, "worker processes on the node's port (SO_REUSEPORT); a dead one is respawned",
                           check="positive")  # fmt: skip
    # Replication (replication/): the cluster's peers file, this region's mTLS receiver address
    # (HOST:PORT; None: no receiver), and the sender's retry cap and idle heartbeat.
    peers_file: Path | None = setting(
        None, "replication: the cluster's peers file (none: this node does not replicate)"
    )
    replication_listen: str | None = setting(None, "replication: HOST:PORT of this region's mTLS receiver")
    replication_backoff_cap_s: float = setting(
        5.0,
        "replication: seconds, the cap of a sender's retry backoff",
        key="replication_backoff_cap",
        check="positive",
    )
    replication_heartbeat_s: float = setting(
        5.0, "replication: seconds between an idle sender's heartbeats", key="replication_heartbeat", check="positive"
    )
    home_region: str | None = setting(None, "replication: the IAM home region (default: the peers file's)")
    forward_timeout_s: float = setting(
        30.0, "seconds a request signed for another region, forwarded there, may take to be answered;"
        " then DependencyTimeoutException", key="forward_timeout", check="positive",
    )  # fmt: skip
    root_key_b64: str | None = setting(
        None, "the root key, base64 of the state directory's root.key (32 bytes, or a keyring once rotated),"
        " instead of it", key="root_key",
        secret="value",
    )  # fmt: skip
    log_level: str = setting("info", "log level", choices=("debug", "info", "warning", "error"))
    log_json: bool = setting(True, "logs as one JSON object a line (false: human-readable)")
    max_clock_skew_s: int = setting(
        900, "seconds a request's SigV4 time may differ from the node's clock", key="max_clock_skew", check="positive"
    )
    # Slow and greedy clients (regiond.runtime.listener): a request's headers and its body each within their
    # bound, a kept-alive connection idle at most idle_timeout (above a load balancer's, usually 60 s),
    # and at most http_max_connections open connections per worker process.
    http_header_timeout_s: float = setting(
        10.0, "seconds a request's header block may take, from its first byte", key="http_header_timeout",
        check="positive",
    )  # fmt: skip
    http_body_timeout_s: float = setting(
        30.0, "seconds a request's whole body may take after its headers; then 408", key="http_body_timeout",
        check="positive",
    )  # fmt: skip
    http_idle_timeout_s: float = setting(
        75.0, "seconds a kept-alive connection may wait for its next request (keep it above a load balancer's)",
        key="http_idle_timeout", check="positive",
    )  # fmt: skip
    http_max_connections: int = setting(1024, "open client connections per worker process; more are refused",
                                        check="positive")  # fmt: skip
    # TLS on the client endpoint (regiond.runtime.client_tls): the certificate chain and key files, re-read on
    # SIGHUP, and the bound on a handshake. `regiond serve` refuses to start without them unless
    # plain_http says plain HTTP on purpose (behind a TLS-terminating proxy, or on loopback for tests).
    tls_cert_file: Path | None = setting(
        None, "client endpoint: PEM certificate chain, leaf first (re-read on SIGHUP)", key="tls_cert"
    )
    tls_key_file: Path | None = setting(None, "client endpoint: PEM private key (re-read on SIGHUP)", key="tls_key")
    plain_http: bool = setting(
        False, "serve the client endpoint over plain HTTP (behind a TLS-terminating proxy, or on loopback)"
    )
    tls_handshake_timeout_s: float = setting(
        10.0, "seconds a client's TLS handshake may take from its connection", key="tls_handshake_timeout",
        check="positive",
    )  # fmt: skip
    trusted_proxies: tuple[str, ...] = setting(
        (), "addresses or CIDRs of proxies whose X-Forwarded-For names the client (comma-separated in a"
        " variable or flag)",
    )  # fmt: skip
    # Failed authentications a source may make before its failures are answered ThrottlingException,
    # and how many per second it gets back (regiond.auth.failures; per worker; 0 turns it off).
    auth_failure_burst: int = setting(
        20, "failed authentications a source may make before further failures are throttled (0: no throttle)",
        check="nonnegative",
    )  # fmt: skip
    auth_failure_refill_per_s: float = setting(
        0.5, "failed authentications per second a throttled source gets back", key="auth_failure_refill",
        check="positive",
    )  # fmt: skip
    # LISTEN/NOTIFY is what invalidates caches (its connection is pinged every second, so a dead one
    # empties them within seconds); the TTL is only the backstop for a change never notified. Each
    # expiry is a reload on the request path, and with many keys a short TTL means reloads without
    # end on every worker, so the backstop is an hour (figures: benchmarks/README.md).
    cache_ttl_s: float = setting(
        3600.0, "seconds a cached key, policy or credential may live without a change notification (backstop)",
        key="cache_ttl", check="positive",
    )  # fmt: skip
    # Keys each worker loads into its caches in the background at start and after every cache drop
    # (regiond.service.preload), so that first requests do not load them; 0 turns it off. Every
    # worker holds its own copy (a few KiB per key), and never more than its key cache's 100,000.
    cache_preload_max_keys: int = setting(
        100_000, "keys each worker loads into its caches at start and after losing its change notifications"
        " (0: off)", check="nonnegative",
    )  # fmt: skip
    audit_enabled: bool = setting(True, "the audit trail (false: benchmarks only)", key="audit")
    # Audit writer (regiond.audit.writer; docs/AUDIT.md): each group-commit batch is one segment. The
    # linger applies under load only; the write timeout fails the waiting calls closed.
    audit_durability: str = setting(
        "sync", "audit: sync answers a call once its event is durable; async once it is queued (bounded"
        " by audit_async_queue_events, refused when full)", choices=("sync", "async"),
    )  # fmt: skip
    audit_async_queue_events: int = setting(
        10_000, "audit, async only: events accepted but not yet durable at most (the loss window of a crash)",
        check="positive",
    )  # fmt: skip
    audit_batch_linger_ms: float = setting(
        0.4, "audit: milliseconds a batch waits for company under load (an idle node never waits)",
        check="nonnegative",
    )  # fmt: skip
    audit_max_batch_events: int = setting(1000, "audit: events per segment at most", check="positive")
    # Batches a worker has in flight at once: while one waits for its commit, the next one starts.
    audit_max_in_flight: int = setting(2, "audit: batches a worker has in flight at once", check="positive")
    audit_write_timeout_s: float = setting(
        5.0, "audit: seconds a batch may take to become durable; then its calls fail closed",
        key="audit_write_timeout", check="positive",
    )  # fmt: skip
    # Audit trail v2 digests (regiond.audit.digests): one process of the region signs the heads of
    # every writer's chain this often while any moved; a writer whose liveness lease and newest
    # segment are both older than the close-after time is closed by the next digest (its final head).
    audit_digest_interval_s: float = setting(
        5.0, "audit: seconds between signed digests of every writer's chain head (while any moved)",
        key="audit_digest_interval", check="positive",
    )  # fmt: skip
    audit_writer_close_after_s: float = setting(
        30.0, "audit: seconds without a lease renewal or a segment after which a writer is closed as gone",
        key="audit_writer_close_after", check="positive",
    )  # fmt: skip
    leader_poll_s: float = setting(
        1.0, "seconds between a process's tries for the locks of region-wide background tasks it does not run,"
        " and between the leader's checks of its lock session (failover takes about this long)",
        key="leader_poll", check="positive",
    )  # fmt: skip
    pool_max_size: int = setting(10, "database connections per worker process at most", check="positive")
    # Test and benchmark knobs (background intervals): not settings, never read from a file.
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def root_key_path(self) -> Path | None:
        return self.state_dir / "root.key" if self.state_dir else None


DEFAULT_LISTEN = f"{Settings.listen_host}:{Settings.listen_port}"


# --- the table of settings -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Entry:
    """One setting as the sources see it: its key, the field(s) it sets, its type and default."""

    key: str
    kind: str  # "str", "int", "float", "bool", "path", "list"
    optional: bool
    default: Any
    spec: Spec
    assign: Callable[[Any], dict[str, Any]]

    @property
    def env(self) -> str:
        return ENV_PREFIX + self.key.upper()

    @property
    def flag(self) -> str:
        return "--" + self.key.replace("_", "-")

    @property
    def has_flag(self) -> bool:
        """A secret has no flag: a command line is readable by every user of the machine (``ps``)."""
        return self.spec.secret != "value"

    @property
    def required(self) -> bool:
        return self.spec.required


_KINDS: dict[Any, str] = {str: "str", int: "int", float: "float", bool: "bool", Path: "path"}


def _kind(annotation: Any) -> tuple[str, bool]:
    args = typing.get_args(annotation)
    if typing.get_origin(annotation) is tuple:
        return "list", False
    if type(None) in args:
        (inner,) = (a for a in args if a is not type(None))
        return _KINDS[inner], True
    return _KINDS[annotation], False


def _entries() -> tuple[Entry, ...]:
    hints = typing.get_type_hints(Settings)
    out: list[Entry] = []
    for f in dataclasses.fields(Settings):
        if f.name == "listen_host":
            out.append(_LISTEN)
        spec = f.metadata.get(_SPEC)
        if spec is None:
            continue
        kind, optional = _kind(hints[f.name])
        default = None if f.default is dataclasses.MISSING else f.default
        out.append(Entry(spec.key or f.name, kind, optional, default, spec, _assign_to(f.name)))
    return tuple(out)


def _assign_to(name: str) -> Callable[[Any], dict[str, Any]]:
    def assign(value: Any) -> dict[str, Any]:
        return {name: value}

    return assign


def _assign_listen(value: str) -> dict[str, Any]:
    host, port = parse_listen(value)
    return {"listen_host": host, "listen_port": port}


_LISTEN = Entry(
    "listen", "str", False, DEFAULT_LISTEN,
    Spec(None, "HOST:PORT of the client endpoint (port 0: any free port)"), _assign_listen,
)  # fmt: skip
SETTINGS: tuple[Entry, ...] = _entries()
BY_KEY: dict[str, Entry] = {e.key: e for e in SETTINGS}


# --- values ----------------------------------------------------------------------------------

_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")


def parse_text(entry: Entry, text: str) -> Any:
    """A variable's or flag's text as ``entry``'s type; ValueError with a reason if it is not one."""
    kind = entry.kind
    if kind == "bool":
        lowered = text.strip().lower()
        if lowered in _TRUE or lowered in _FALSE:
            return lowered in _TRUE
        raise ValueError(f"must be true or false, got {text!r}")
    if kind == "int":
        try:
            return int(text)
        except ValueError:
            raise ValueError(f"must be an integer, got {text!r}") from None
    if kind == "float":
        try:
            return float(text)
        except ValueError:
            raise ValueError(f"must be a number, got {text!r}") from None
    if kind == "list":
        return tuple(p.strip() for p in text.split(",") if p.strip())
    return text


_TOML_TYPES = {"str": "a string", "path": "a string (a path)", "int": "an integer", "float": "a number",
               "bool": "true or false", "list": "an array of strings"}  # fmt: skip


def _from_toml(entry: Entry, value: Any) -> Any:
    kind = entry.kind
    ok = {
        "str": isinstance(value, str), "path": isinstance(value, str),
        "int": isinstance(value, int) and not isinstance(value, bool),
        "float": isinstance(value, int | float) and not isinstance(value, bool),
        "bool": isinstance(value, bool),
        "list": isinstance(value, list) and all(isinstance(v, str) for v in value),
    }[kind]  # fmt: skip
    if not ok:
        raise ValueError(f"must be {_TOML_TYPES[kind]}, got {_toml_type(value)}")
    if kind == "float":
        return float(value)
    if kind == "list":
        return tuple(value)
    return value


def _toml_type(value: Any) -> str:
    return {bool: "a boolean", int: "an integer", float: "a number", str: "a string", list: "an array",
            dict: "a table"}.get(type(value), type(value).__name__)  # fmt: skip


def _checked(entry: Entry, value: Any) -> Any:
    """``value`` typed for its field, or ValueError: out of range, not a choice, not HOST:PORT."""
    spec = entry.spec
    if entry.kind in ("int", "float"):
        if not math.isfinite(value):
            raise ValueError(f"must be finite, got {value!r}")
        if spec.check == "positive" and not value > 0:
            raise ValueError(f"must be greater than 0, got {value!r}")
        if spec.check == "nonnegative" and value < 0:
            raise ValueError(f"must be 0 or more, got {value!r}")
    if spec.choices and value not in spec.choices:
        raise ValueError(f"must be one of {', '.join(spec.choices)}, got {value!r}")
    if entry.kind == "path":
        return Path(value) if value else None
    if entry.kind == "str" and entry.optional and value == "":
        return None
    return value


# --- loading ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Effective:
    """What ``load`` made: the settings, and where each key's value came from."""

    settings: Settings
    values: dict[str, Any]
    sources: dict[str, Source]


def read_file(path: Path) -> dict[str, Any]:
    """The file's settings as TOML values, or ConfigError: unreadable, not TOML, or an unknown key."""
    try:
        with path.open("rb") as f:
            data = tomllib.load(f)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    for key in data:
        if key not in BY_KEY:
            raise ConfigError(f"{path}: unknown setting {key!r} (docs/CONFIGURATION.md lists them)")
    return data


def load(
    file: Path | None = None, environ: Mapping[str, str] | None = None, flags: Mapping[str, Any] | None = None
) -> Effective:
    """The effective settings: each key from its flag, else its variable, else the file, else its default.

    ``flags`` maps keys to values already typed (argparse did, ``add_flags``); a variable set to
    the empty string counts as unset. ConfigError, one line, for anything that cannot be used.
    """
    data = read_file(file) if file is not None else {}
    environ = environ or {}
    flags = flags or {}
    values: dict[str, Any] = {}
    sources: dict[str, Source] = {}
    fields: dict[str, Any] = {}
    for entry in SETTINGS:
        where: str
        try:
            if entry.key in flags:
                source: Source = "flag"
                where = entry.flag
                value = flags[entry.key]
            elif environ.get(entry.env, "") != "":
                source, where = "env", entry.env
                value = parse_text(entry, environ[entry.env])
            elif entry.key in data:
                source, where = "file", f"{file}: {entry.key}"
                value = _from_toml(entry, data[entry.key])
            elif entry.required:
                raise ConfigError(f"{entry.key} is required (in the file, as {entry.env} or {entry.flag})")
            else:
                source, where = "default", entry.key
                value = entry.default
            if source != "default":
                value = _checked(entry, value)
                fields.update(entry.assign(value))
        except ValueError as exc:
            if isinstance(exc, ConfigError):
                raise
            raise ConfigError(f"{where} {exc}") from None
        values[entry.key] = value
        sources[entry.key] = source
    return Effective(Settings(**fields), values, sources)


def add_flags(parser: Any) -> None:
    """A flag per setting on an argparse parser; only flags given reach ``flags_from``."""
    import argparse

    for entry in SETTINGS:
        if not entry.has_flag:
            continue
        dest = "setting_" + entry.key
        text = entry.spec.help + ("" if entry.default in (None, ()) else f" (default {_display(entry.default)})")
        if entry.kind == "bool":
            parser.add_argument(entry.flag, dest=dest, action=argparse.BooleanOptionalAction,
                                default=argparse.SUPPRESS, help=text)  # fmt: skip
            continue

        def typed(raw: str, entry: Entry = entry) -> Any:
            try:
                return _checked(entry, parse_text(entry, raw))
            except ValueError as exc:
                raise argparse.ArgumentTypeError(str(exc)) from None

        typed.__name__ = entry.kind  # argparse names the type in its error message
        parser.add_argument(entry.flag, dest=dest, type=typed, default=argparse.SUPPRESS, help=text)


def flags_from(namespace: Any) -> dict[str, Any]:
    """The settings given as flags in an argparse namespace (``add_flags``), by key."""
    return {k.removeprefix("setting_"): v for k, v in vars(namespace).items() if k.startswith("setting_")}


# --- showing -----------------------------------------------------------------------------

REDACTED = "<redacted>"
_URL_PASSWORD = re.compile(r"(://[^:/@?#,]*:)[^@/?#]*@")
_QUERY_PASSWORD = re.compile(r"((?:^|[?&\s])password=)[^&\s]*", re.IGNORECASE)


def redact(entry: Entry, value: Any) -> Any:
    """``value`` as it may be shown: a secret replaced, a URL's password removed."""
    if value is None or entry.spec.secret == "":
        return value
    if entry.spec.secret == "value":
        return REDACTED
    return _QUERY_PASSWORD.sub(rf"\g<1>{REDACTED}", _URL_PASSWORD.sub(rf"\g<1>{REDACTED}@", str(value)))


def _display(value: Any) -> str:
    """A value as TOML writes it."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, tuple | list):
        return "[" + ", ".join(json.dumps(v) for v in value) + "]"
    if isinstance(value, Path):
        return json.dumps(str(value))
    if isinstance(value, str):
        return json.dumps(value)
    return repr(value)


def render(effective: Effective) -> str:
    """The effective configuration as a TOML file would hold it, each line saying its source."""
    lines = []
    for entry in SETTINGS:
        value = redact(entry, effective.values[entry.key])
        source = effective.sources[entry.key]
        if value is None:
            lines.append(f"# {entry.key} is unset  ({source})")
        else:
            lines.append(f"{entry.key} = {_display(value)}  # {source}")
    return "\n".join(lines) + "\n"


def markdown_table() -> str:
    """The table of docs/CONFIGURATION.md, from the one definition of each setting."""
    rows = ["| key | variable / flag | type | default | meaning |", "|---|---|---|---|---|"]
    for e in SETTINGS:
        default = "required" if e.required else ("unset" if e.default is None else _display(e.default))
        names = f"`{e.env}` `{e.flag}`" if e.has_flag else f"`{e.env}` (no flag: a secret)"
        kind = e.kind + (" (secret)" if e.spec.secret == "value" else "")
        if e.spec.choices:
            kind += ": " + " / ".join(e.spec.choices)
        rows.append(f"| `{e.key}` | {names} | {kind} | `{default}` | {e.spec.help} |")
    return "\n".join(rows) + "\n"


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
