"""The secret scan: every secret a test run handles, searched for in everything the run wrote down.

Secrets (key material, plaintext, data keys, MACs, shared secrets, secret access keys,
private keys) must never appear in a log line, an audit record, an error message or a
database column that is not sealed (issue 13). This pytest plugin turns that into a check
over a whole run: it fails the run if any secret is found, in any of the forms below.
It is registered from tests/conftest.py, so ``make test`` always runs it, and
tests/unit/test_secret_scan.py proves that a deliberately leaked secret fails a run.

**What is recorded as a secret** (``Recorder.secret``):

- members of every response a test client receives (boto3, through a hook on every botocore
  client; ``kmsclient``, the admin CLI's client included; the raw client of
  tests/support/raw.py): ``Plaintext`` (Decrypt, GenerateDataKey*, GenerateRandom),
  ``PrivateKeyPlaintext``, ``SharedSecret``, ``Mac``, ``SecretAccessKey``, ``KeyMaterial``,
  ``RawSecretAccessKey``, ``KeyStorePassword``, at any depth;
- the same members of every request (the Plaintext a test encrypts, the MAC it verifies);
- everything a root key seals or unseals (``AesRootKeyring.wrap``/``unwrap``: backing key
  material, private keys of asymmetric keys, imported material, access-key secrets, the
  region identity and TLS keys) and every root key itself;
- the private files a run leaves in temporary directories: PEM private keys (``*.key``) and
  the credentials in ``cluster.json`` files;
- anything a test hands to ``register()``.

**What is scanned** (``Recorder.add``): every log line of the run (regiond's structlog
output, JSON as in production, at debug level, in-process nodes and CLI commands alike; the
warnings and errors of stdlib loggers, tracebacks included), every ``*.log`` file under the
run's temporary directories (subprocess nodes, ``regiond dev``, the test PostgreSQL server's
own log), the message of every error response a client received, and, before each test
database is dropped, every row of every table (as JSON text, bytea as hex) and every bytea
value as raw bytes, and inflated where it is a zlib stream (audit segment bodies). Sealed columns
are scanned too: a sealed value can match a secret only if it was not sealed.

**Forms**: raw bytes, the body of Python's bytes ``repr``, standard base64 (padded and not),
base64url without padding, and hex in both cases. A secret is found only whole, in one of these
forms (a secret base64-encoded at an unaligned offset inside a larger blob is not).
**Secrets shorter than 8 bytes are not searched** (``MIN_SECRET_BYTES``): tests encrypt short
plaintexts such as ``b"p"``, and an 8-byte floor keeps chance matches out while every real
secret (keys, data keys, MACs, secret access keys) is far longer. Nor are values of fewer than
4 distinct bytes (``MIN_DISTINCT_BYTES``: fillers like ``b"\\0" * 16`` or ``"a" * 43`` that
tests send where a request needs a blob), which occur in the run's output by chance.
A test's plaintext must not also be a public string of the run: encrypting the text
``RSAES_OAEP_SHA_256`` makes every place that names the algorithm a "leak".

Cost: the hooks only copy references; the corpus is spooled to a temporary file; the scan at
the end is one Aho-Corasick pass (pyahocorasick) over the spool.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import logging
import struct
import sys
import tempfile
import time
import zlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, TextIO, cast

import ahocorasick
import pytest

MIN_SECRET_BYTES = 8
MIN_DISTINCT_BYTES = 4
SECRET_MEMBERS = frozenset(
    {
        "Plaintext", "PrivateKeyPlaintext", "SharedSecret", "Mac", "SecretAccessKey", "KeyMaterial",
        "RawSecretAccessKey", "KeyStorePassword", "secret_access_key",
    }
)  # fmt: skip
"""Members (at any depth of a request or a response) whose values are secrets."""

_CONTEXT_BYTES = 40
_FLUSH_BYTES = 1 << 20
_RECORD = struct.Struct(">HI")


def _inflated(blob: bytes) -> bytes | None:
    """A bytea value's content if it is a zlib stream (audit segment bodies, regiond.audit.segment),
    so what a compressed column holds is scanned as well as its raw bytes."""
    if blob[:1] != b"\x78":
        return None
    try:
        return zlib.decompressobj().decompress(blob, 256 * 1024 * 1024)
    except zlib.error:
        return None


@dataclass(frozen=True, slots=True)
class Secret:
    kind: str
    origin: str  # the test that handled it first

    def describe(self, value: bytes) -> str:
        # The report names a secret by a fingerprint, never by its value.
        return f"{self.kind} of {self.origin} (sha256 {hashlib.sha256(value).hexdigest()[:12]}, {len(value)} bytes)"


@dataclass(slots=True)
class Hit:
    where: str
    form: str
    secret: str
    context: str  # around the first occurrence, the secret replaced by "<secret>"
    count: int = 1

    def __str__(self) -> str:
        times = f" ({self.count} times)" if self.count > 1 else ""
        return f"{self.where}: {self.secret} as {self.form}{times}: ...{self.context}..."


def forms(value: bytes) -> dict[str, bytes]:
    """Every form of ``value`` the scan looks for, by name."""
    b64 = base64.b64encode(value)
    out = {
        "raw": value,
        "bytes repr": repr(value)[2:-1].encode("ascii"),
        "base64": b64,
        "base64 unpadded": b64.rstrip(b"="),
        "base64url": base64.urlsafe_b64encode(value).rstrip(b"="),
        "hex": value.hex().encode("ascii"),
        "HEX": value.hex().upper().encode("ascii"),
    }
    return {name: form for name, form in out.items() if len(form) >= MIN_SECRET_BYTES}


class Recorder:
    """The secrets of a run and a spool of everything it wrote down; ``scan`` matches them."""

    def __init__(self) -> None:
        self.active = False
        self.current_test = "session"
        self._secrets: dict[bytes, Secret] = {}
        self._spool: IO[bytes] | None = None
        self._pending: list[tuple[str, bytes]] = []
        self._pending_bytes = 0
        self.spooled_bytes = 0
        self.spent_s = 0.0  # in collect_database, collect_tree and scan: the plugin's own cost

    # --- recording ----------------------------------------------------------------------

    def start(self, spool: IO[bytes] | None = None) -> None:
        """Begin recording; the corpus is spooled to ``spool`` (a temporary file by default)."""
        self._spool = spool if spool is not None else tempfile.TemporaryFile(prefix="regionkms-secret-scan-")  # noqa: SIM115
        self.active = True

    def secret(self, value: bytes | bytearray | str, kind: str) -> None:
        """Record ``value`` as a secret (see the module docstring for what is recorded)."""
        if not self.active:
            return
        raw = value.encode() if isinstance(value, str) else bytes(value)
        if len(raw) >= MIN_SECRET_BYTES and len(set(raw)) >= MIN_DISTINCT_BYTES and raw not in self._secrets:
            self._secrets[raw] = Secret(kind, self.current_test)

    def harvest(self, value: Any, kind: str) -> None:
        """Record the secret members of a request or response (decoded or base64 blobs)."""
        if not self.active:
            return
        for member, found in _secret_members(value):
            if isinstance(found, bytes | bytearray):
                self.secret(found, f"{kind} {member}")
            elif isinstance(found, str):
                self.secret(found, f"{kind} {member}")
                decoded = _b64(found)
                if decoded is not None:
                    self.secret(decoded, f"{kind} {member}")

    def add(self, where: str, data: bytes | str) -> None:
        """Spool ``data`` for the scan, labelled ``where`` in the report."""
        if not self.active or not data:
            return
        raw = data.encode("utf-8", "surrogateescape") if isinstance(data, str) else bytes(data)
        self._pending.append((where[:1000], raw))
        self._pending_bytes += len(raw)
        self.spooled_bytes += len(raw)
        if self._pending_bytes >= _FLUSH_BYTES:
            self.flush()

    def flush(self) -> None:
        assert self._spool is not None
        for where, raw in self._pending:
            label = where.encode("utf-8", "replace")[:60000]
            self._spool.write(_RECORD.pack(len(label), len(raw)) + label + raw)
        self._pending.clear()
        self._pending_bytes = 0

    def add_file(self, path: Path) -> None:
        with contextlib.suppress(OSError):
            self.add(f"file {path.name} ({path.parent.name})", path.read_bytes())

    def collect_tree(self, root: Path) -> None:
        """Scan every ``*.log`` under ``root``; record private keys and cluster credentials found there."""
        if not self.active or not root.is_dir():
            return
        started = time.perf_counter()
        for path in root.rglob("*"):
            if not path.is_file():
                continue
            if path.suffix == ".log":
                self.add_file(path)
            elif path.suffix == ".key":
                with contextlib.suppress(OSError):
                    self._record_pem(path.read_bytes())
            elif path.name == "cluster.json":
                with contextlib.suppress(OSError, ValueError):
                    self.harvest(json.loads(path.read_text()), "cluster.json")
        self.spent_s += time.perf_counter() - started

    def _record_pem(self, data: bytes) -> None:
        if b"PRIVATE KEY-----" not in data:
            return
        self.secret(data.strip(), "PEM private key")
        body = b"".join(line for line in data.splitlines() if line and not line.startswith(b"-----"))
        der = _b64(body.decode("ascii", "replace"))
        if der is not None:
            self.secret(der, "private key (DER)")

    async def collect_database(self, url: str) -> None:
        """Spool every row of every table of ``url``, and its bytea values raw (before it is dropped)."""
        if not self.active:
            return
        import asyncpg

        started = time.perf_counter()
        try:
            con = await asyncpg.connect(url)
        except asyncpg.InvalidCatalogNameError:
            return  # dropped already (drop_database is idempotent): nothing left to scan
        try:
            tables = await con.fetch(
                "SELECT c.oid::regclass::text AS name,"
                " coalesce(array_agg(a.attname::text) FILTER (WHERE a.atttypid = 'bytea'::regtype), '{}') AS blobs"
                " FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
                " LEFT JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped"
                " WHERE c.relkind = 'r' AND n.nspname NOT IN ('pg_catalog', 'information_schema')"
                " AND n.nspname NOT LIKE 'pg_toast%' GROUP BY 1"
            )
            parts: list[str] = []
            for i, table in enumerate(tables):
                parts.append(f"SELECT {i}, row_to_json(t)::text, NULL::bytea FROM {table['name']} t")
                parts.extend(
                    f"SELECT {i}, NULL, {_ident(col)} FROM {table['name']} WHERE {_ident(col)} IS NOT NULL"
                    for col in table["blobs"]
                )
            rows = await con.fetch(" UNION ALL ".join(parts)) if parts else []
        finally:
            await con.close()
        database = url.rsplit("/", 1)[-1]
        chunks: dict[int, list[bytes]] = {}
        for index, text, blob in rows:
            chunks.setdefault(index, []).append(text.encode() if text is not None else blob)
            if blob is not None and (inflated := _inflated(blob)) is not None:
                chunks[index].append(inflated)  # audit segment bodies are stored compressed
        for index, values in chunks.items():
            self.add(f"database {database} table {tables[index]['name']}", b"\n".join(values))
        self.spent_s += time.perf_counter() - started

    # --- scanning -----------------------------------------------------------------------

    def secrets(self) -> int:
        return len(self._secrets)

    def kinds(self) -> dict[str, int]:
        """How many secrets of each kind were recorded (response members, sealed values, ...)."""
        counts: dict[str, int] = {}
        for secret in self._secrets.values():
            counts[secret.kind] = counts.get(secret.kind, 0) + 1
        return dict(sorted(counts.items(), key=lambda kv: -kv[1]))

    def scan(self) -> list[Hit]:
        """Every place a recorded secret occurs in the spool, in any of its forms."""
        if self._spool is None:
            return []
        started = time.perf_counter()
        try:
            return self._scan()
        finally:
            self.spent_s += time.perf_counter() - started

    def _scan(self) -> list[Hit]:
        assert self._spool is not None
        self.flush()
        automaton = ahocorasick.Automaton()
        for value, secret in self._secrets.items():
            for name, form in forms(value).items():
                word = form.decode("latin-1")  # one character per byte: a bytes search on a str build
                if word not in automaton:
                    automaton.add_word(word, (len(word), name, secret.describe(value)))
        if len(automaton) == 0:
            return []
        automaton.make_automaton()
        hits: dict[tuple[str, str, str], Hit] = {}
        for where, data in self._records():
            text = data.decode("latin-1")
            matches = automaton.iter(text)
            found = sorted(((end - n + 1, end + 1, form, what) for end, (n, form, what) in matches), key=_longest_first)
            covered: dict[str, int] = {}  # secret -> end of its last reported match
            for start, end, form, described in found:
                if covered.get(described, -1) >= end:
                    continue  # inside a longer form of the same secret (unpadded base64 in padded)
                covered[described] = end
                seen = hits.get((where, form, described))
                if seen is not None:
                    seen.count += 1
                    continue
                before = text[max(0, start - _CONTEXT_BYTES) : start]
                after = text[end : end + _CONTEXT_BYTES]
                context = (before + "<secret>" + after).encode("latin-1").decode("utf-8", "replace")
                hits[where, form, described] = Hit(where, form, described, repr(context)[1:-1])
        return list(hits.values())

    def _records(self) -> Iterator[tuple[str, bytes]]:
        assert self._spool is not None
        self._spool.seek(0)
        while header := self._spool.read(_RECORD.size):
            label_len, data_len = _RECORD.unpack(header)
            where = self._spool.read(label_len).decode("utf-8", "replace")
            yield where, self._spool.read(data_len)

    def close(self) -> None:
        if self._spool is not None:
            self._spool.close()
        self.active = False


def _longest_first(match: tuple[int, int, str, str]) -> tuple[int, int]:
    return match[0], match[0] - match[1]


def _secret_members(value: Any, depth: int = 0) -> Iterator[tuple[str, Any]]:
    if depth > 8:
        return
    if isinstance(value, Mapping):
        for key, item in value.items():
            if key in SECRET_MEMBERS:
                yield key, item
            elif isinstance(item, Mapping | list):
                yield from _secret_members(item, depth + 1)
    elif isinstance(value, list):
        for item in value:
            yield from _secret_members(item, depth + 1)


def _b64(text: str) -> bytes | None:
    try:
        return base64.b64decode(text, validate=True)
    except ValueError:
        return None


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


RECORDER = Recorder()


def harvest_json(body: bytes, kind: str) -> None:
    """Record the secret members of a JSON body (a request a test built by hand)."""
    if RECORDER.active:
        with contextlib.suppress(ValueError):
            RECORDER.harvest(json.loads(body), kind)


def register(value: bytes | str, kind: str = "test secret") -> None:
    """Record a secret a test made itself (key material it imports, a password it sets)."""
    RECORDER.secret(value, kind)


# --- capture: where the hooks attach -------------------------------------------------------


class _LogTee:
    """The file structlog prints to: a copy goes to the spool, the line itself to stderr."""

    def write(self, text: str) -> int:
        if not text.isspace():  # print() writes the line, then its newline
            RECORDER.add("log", text)
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


class _SpoolHandler(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        with contextlib.suppress(Exception):
            RECORDER.add(f"stdlib log {record.name}", self.format(record))


def _capture_structlog(patch: pytest.MonkeyPatch) -> None:
    """Render regiond's logs as production does (JSON, redaction) into the tee, whoever configures."""
    import structlog

    from regiond import logging as regiond_logging

    original = regiond_logging.configure
    tee = cast(TextIO, _LogTee())

    def configure(level: str = "info", *, json: bool = True) -> None:
        original("debug", json=True)
        structlog.configure(logger_factory=structlog.PrintLoggerFactory(file=tee))

    patch.setattr(regiond_logging, "configure", configure)
    configure()


def _hook_clients(patch: pytest.MonkeyPatch) -> None:
    """Harvest the requests and responses of every botocore client and of ``kmsclient``."""
    import botocore.session

    import kmsclient.client
    from kmsclient.errors import KmsClientError

    def on_params(params: Mapping[str, Any], **_: Any) -> None:
        RECORDER.harvest(params, "request")

    def on_response(parsed: Mapping[str, Any], model: Any = None, **_: Any) -> None:
        name = getattr(model, "name", "?")
        RECORDER.harvest(parsed, f"{name} response")
        error = parsed.get("Error") if isinstance(parsed, Mapping) else None
        if isinstance(error, Mapping) and error.get("Message"):
            RECORDER.add(f"error message of {name}", str(error["Message"]))

    create_client = botocore.session.Session.create_client

    def hooked_create_client(self: Any, *args: Any, **kwargs: Any) -> Any:
        client = create_client(self, *args, **kwargs)
        client.meta.events.register("provide-client-params", on_params)
        client.meta.events.register("after-call", on_response)
        return client

    call_in = kmsclient.client.KmsClient.call_in

    async def hooked_call_in(self: Any, endpoint: Any, operation: str, params: Mapping[str, Any], **kw: Any) -> Any:
        RECORDER.harvest(params, "kmsclient request")
        try:
            result = await call_in(self, endpoint, operation, params, **kw)
        except KmsClientError as exc:
            RECORDER.add(f"error message of {operation}", str(exc))
            raise
        RECORDER.harvest(result, f"kmsclient {operation} response")
        return result

    patch.setattr(botocore.session.Session, "create_client", hooked_create_client)
    patch.setattr(kmsclient.client.KmsClient, "call_in", hooked_call_in)


def _hook_keyring(patch: pytest.MonkeyPatch) -> None:
    """Everything the root key seals or unseals is secret, and so is the root key."""
    from regiond.crypto.keyring import AesRootKeyring

    init, wrap, unwrap = AesRootKeyring.__init__, AesRootKeyring.wrap, AesRootKeyring.unwrap

    def hooked_init(self: AesRootKeyring, key: bytes | None = None, **kwargs: Any) -> None:
        for material in [key, *kwargs.get("versions", {}).values()]:
            if material:
                RECORDER.secret(material, "root key")
        init(self, key, **kwargs)

    def hooked_wrap(self: AesRootKeyring, plaintext: bytes, aad: bytes) -> bytes:
        RECORDER.secret(plaintext, "value sealed under the root key")
        return wrap(self, plaintext, aad)

    def hooked_unwrap(self: AesRootKeyring, wrapped: bytes, aad: bytes) -> bytes:
        plaintext = unwrap(self, wrapped, aad)
        RECORDER.secret(plaintext, "value sealed under the root key")
        return plaintext

    patch.setattr(AesRootKeyring, "__init__", hooked_init)
    patch.setattr(AesRootKeyring, "wrap", hooked_wrap)
    patch.setattr(AesRootKeyring, "unwrap", hooked_unwrap)


# --- pytest hooks ---------------------------------------------------------------------------

_PATCH = pytest.MonkeyPatch()
_HANDLER = _SpoolHandler()
_RESULT: list[Hit] = []
_BASETEMPS: list[Path] = []


def pytest_configure(config: pytest.Config) -> None:
    RECORDER.start()
    _capture_structlog(_PATCH)
    _hook_clients(_PATCH)
    _hook_keyring(_PATCH)
    _HANDLER.setLevel(logging.WARNING)
    logging.getLogger().addHandler(_HANDLER)


@pytest.fixture(scope="session", autouse=True)
def _secret_scan_basetemp(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Where the run's temporary directories are: their log files and private keys are collected."""
    _BASETEMPS.append(tmp_path_factory.getbasetemp())


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> Any:
    RECORDER.current_test = item.nodeid
    try:
        return (yield)
    finally:
        RECORDER.current_test = "session"


@pytest.hookimpl(tryfirst=True)
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if not RECORDER.active:
        return
    for basetemp in _BASETEMPS:
        RECORDER.collect_tree(basetemp)
    _RESULT[:] = RECORDER.scan()
    if _RESULT and session.exitstatus == pytest.ExitCode.OK:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not RECORDER.active:
        return
    summary = (
        f"{RECORDER.secrets():,} secrets searched for in {RECORDER.spooled_bytes:,} bytes;"
        f" dumps and scan took {RECORDER.spent_s:.1f} s"
    )
    if config_verbose(terminalreporter) > 0:
        kinds = ", ".join(f"{kind}: {n}" for kind, n in RECORDER.kinds().items())
        terminalreporter.write_line(f"secret scan: recorded {kinds}")
    if not _RESULT:
        terminalreporter.write_line(f"secret scan: no secret found ({summary})")
    else:
        terminalreporter.section("secret scan", sep="=", red=True, bold=True)
        for hit in _RESULT[:200]:
            terminalreporter.write_line(str(hit))
        terminalreporter.write_line(f"secret scan: {len(_RESULT)} leaks ({summary}); the run fails")


def config_verbose(terminalreporter: Any) -> int:
    return int(terminalreporter.config.getoption("verbose"))


def pytest_unconfigure(config: pytest.Config) -> None:
    logging.getLogger().removeHandler(_HANDLER)
    _PATCH.undo()
    RECORDER.close()
