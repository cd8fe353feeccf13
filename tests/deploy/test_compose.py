"""deploy/compose: three regions wired as ``regiond dev`` wires them, checked without a container engine.

The init job's ``regiond`` commands are run for real into directories standing for its volumes,
and every node is then checked against what they made: its settings (regiond's own loader over
its file and variables) name files that exist in the volumes it mounts, its TLS certificate and
key load, the peers file reaches every region at its node's replication port, and the regions,
home region, database and ports are those of ``regiond dev`` (read from its code, not copied).
"""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys
import time
import urllib.parse
from contextlib import redirect_stdout
from pathlib import Path, PurePosixPath
from typing import Any

import pytest

from regiond import statedir
from regiond.cli.cluster import cmd_cluster
from regiond.config import Settings, parse_listen
from regiond.crypto import pki
from regiond.devtools import dev
from regiond.devtools.launcher import CLIENT_TLS_DIR
from regiond.devtools.postgres import free_port
from regiond.runtime.client_tls import ServerCertificate
from replication.peers import load_topology
from tests.deploy.files import COMPOSE_DIR, DEPLOY, compose_file, node_settings, regiond_args, script_commands

COMPOSE = COMPOSE_DIR / "compose.yaml"
VARIABLES = {"POSTGRES_PASSWORD": "not-a-real-password"}


def _dev_regions() -> list[str]:
    regions: str = regiond_args(["dev"]).regions
    return regions.split(",")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return compose_file(COMPOSE, VARIABLES)


def _mounts(service: dict[str, Any]) -> list[tuple[str, str, bool]]:
    """(container path, source, is a named volume) of each of the service's volumes (short syntax)."""
    out = []
    for spec in service.get("volumes", []):
        source, target = spec.split(":")[:2]
        out.append((target, source, not source.startswith((".", "/"))))
    return out


class Volumes:
    """Directories standing for the project's named volumes, and the paths a service sees in them."""

    def __init__(self, root: Path, names: list[str]) -> None:
        self.root = root
        for name in names:
            (root / name).mkdir(parents=True, exist_ok=True)

    def host_path(self, service: dict[str, Any], container_path: str) -> Path:
        best: tuple[str, Path] | None = None
        for target, source, named in _mounts(service):
            if PurePosixPath(container_path).is_relative_to(target) and (best is None or len(target) > len(best[0])):
                best = (target, self.root / source if named else COMPOSE_DIR / source)
        assert best is not None, f"{container_path} is on no volume of the service"
        return best[1] / PurePosixPath(container_path).relative_to(best[0])

    def nest(self, service: dict[str, Any]) -> None:
        """A volume mounted inside another's mount point appears in it (as a symbolic link here)."""
        for target, source, named in _mounts(service):
            parent = PurePosixPath(target).parent
            if named and any(t == str(parent) for t, _, _ in _mounts(service)):
                link = self.host_path(service, str(parent)) / PurePosixPath(target).name
                if not link.exists():
                    link.symlink_to(self.root / source, target_is_directory=True)


@pytest.fixture(scope="module")
def volumes(compose: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> Volumes:
    """The init job's commands, run: what the nodes find in their volumes when they start."""
    vols = Volumes(tmp_path_factory.mktemp("volumes"), list(compose["volumes"]))
    init = compose["services"]["init"]
    vols.nest(init)
    assert init["entrypoint"] == ["/bin/sh", "-ec"]
    (script,) = init["command"]
    for argv in script_commands(script):
        if argv[0] == "chown":
            continue
        assert argv[0] == "regiond", argv
        mapped = [str(vols.host_path(init, a)) if a.startswith("/") else a for a in argv[1:]]
        args = regiond_args(mapped)
        with redirect_stdout(io.StringIO()):
            assert cmd_cluster(args) == 0, argv
    return vols


def _init_commands(compose: dict[str, Any]) -> list[list[str]]:
    (script,) = compose["services"]["init"]["command"]
    return script_commands(script)


def test_every_reference_resolves(compose: dict[str, Any]) -> None:
    services = compose["services"]
    built = {s["image"] for s in services.values() if "build" in s}
    for name, service in services.items():
        for _, source, named in _mounts(service):
            if named:
                assert source in compose["volumes"], f"{name}: volume {source} is not declared"
            else:
                assert (COMPOSE_DIR / source).exists(), f"{name}: {source} does not exist"
        for dependency in service.get("depends_on", {}):
            assert dependency in services, f"{name} depends on {dependency}, no such service"
        if "build" in service:
            build = service["build"]
            assert (COMPOSE_DIR / build["context"] / build["dockerfile"]).is_file()
        else:  # a public image, at a fixed major version; ours only when it is built here
            image = service["image"]
            assert image in built or re.fullmatch(r"[a-z0-9./-]+:\d+(\.\d+)*", image), f"{name}: {image}"
    unused = set(compose["volumes"]) - {src for s in services.values() for _, src, named in _mounts(s) if named}
    assert not unused, f"declared, mounted by no service: {sorted(unused)}"


def test_the_init_job_makes_what_the_dev_cluster_has(compose: dict[str, Any]) -> None:
    """The regions of ``regiond dev``, in its order (its first is the IAM home), with the names the
    nodes are reached at on their certificates; the volumes handed to the node's user."""
    commands = _init_commands(compose)
    (init,) = [c for c in commands if c[0] == "regiond"]
    args = regiond_args(init[1:])
    assert (args.command, args.cluster_command) == ("cluster", "init")
    regions = [spec.partition("=")[0] for spec in args.region]
    assert regions == _dev_regions()
    assert args.home_region is None or args.home_region == regions[0]
    assert sorted(args.hostname) == sorted(f"{r}=regiond-{r}" for r in regions)
    chowns = [c for c in commands if c[0] == "chown"]
    uid = re.search(r"^USER (\d+):(\d+)$", (DEPLOY / "Dockerfile").read_text(), re.MULTILINE)
    assert uid is not None
    assert chowns == [["chown", "-R", f"{uid[1]}:{uid[2]}", args.dir]]


def _node(compose: dict[str, Any], region: str) -> tuple[dict[str, Any], Settings]:
    service = compose["services"][f"regiond-{region}"]
    config_path = service["command"][service["command"].index("--config") + 1]
    (source,) = [src for target, src, named in _mounts(service) if target == config_path and not named]
    return service, node_settings(service["command"], service["environment"], COMPOSE_DIR / source)


def test_every_node_starts_with_the_files_the_init_job_made(compose: dict[str, Any], volumes: Volumes) -> None:
    regions = _dev_regions()
    for region in regions:
        service, settings = _node(compose, region)
        assert settings.region == region
        assert settings.state_dir is not None and settings.peers_file is not None
        assert settings.tls_cert_file is not None and settings.tls_key_file is not None
        state = volumes.host_path(service, str(settings.state_dir))
        assert (state / "region").read_text().strip() == region
        assert settings.root_key_b64 is None and (state / "root.key").is_file()
        keyring = statedir.load_root_keyring(state)
        assert statedir.load_region_tls(state, keyring) is not None, "no replication certificate"
        cert = volumes.host_path(service, str(settings.tls_cert_file))
        ServerCertificate(cert, volumes.host_path(service, str(settings.tls_key_file)))  # loads, or raises
        assert cert.parent == state / CLIENT_TLS_DIR
        assert {"localhost", f"regiond-{region}"} <= pki.cert_hostnames(cert.read_bytes())
        topology = load_topology(volumes.host_path(service, str(settings.peers_file)), region)
        assert topology.iam_home_region == regions[0]
        assert topology.regions[region].identity_public_key == statedir.identity_public_key(state)
        assert sorted(topology.regions) == sorted(regions)
        for peer in topology.peers:
            _, peer_settings = _node(compose, peer.region)
            assert peer_settings.replication_listen is not None
            port = parse_listen(peer_settings.replication_listen)[1]
            assert peer.endpoint == f"https://regiond-{peer.region}:{port}"


def test_every_node_has_its_own_database(compose: dict[str, Any]) -> None:
    for region in _dev_regions():
        _, settings = _node(compose, region)
        url = urllib.parse.urlsplit(settings.database_url)
        assert url.password is None, "the password belongs in PGPASSWORD, not in the URL"
        database = compose["services"][url.hostname or ""]
        assert url.hostname == f"postgres-{region}"
        assert url.path == f"/{dev.DATABASE}"
        assert database["environment"]["POSTGRES_DB"] == dev.DATABASE
        assert database["environment"]["POSTGRES_USER"] == url.username
        node_env = compose["services"][f"regiond-{region}"]["environment"]
        assert node_env["PGPASSWORD"] == database["environment"]["POSTGRES_PASSWORD"]
        depends = compose["services"][f"regiond-{region}"]["depends_on"]
        assert depends[url.hostname] == {"condition": "service_healthy"}
        assert depends["init"] == {"condition": "service_completed_successfully"}


def test_ports_are_those_regiond_dev_gives_its_regions(compose: dict[str, Any]) -> None:
    """Published on loopback only, at ``regiond dev --base-port B``'s client and replication ports."""
    regions = _dev_regions()
    published: list[dict[int, int]] = []
    for region in regions:
        service, settings = _node(compose, region)
        ports = {}
        for spec in service["ports"]:
            host, host_port, container_port = spec.split(":")
            assert host == "127.0.0.1", spec
            ports[int(container_port)] = int(host_port)
        assert settings.replication_listen is not None
        published.append({0: ports[settings.listen_port], 1: ports[parse_listen(settings.replication_listen)[1]]})
    base = published[0][0]
    for i, ports in enumerate(published):
        assert (ports[0], ports[1]) == dev.base_ports(base, i), regions[i]


def test_every_node_checks_health_and_readiness_over_verified_tls(compose: dict[str, Any], volumes: Volumes) -> None:
    for region in _dev_regions():
        service, settings = _node(compose, region)
        test = service["healthcheck"]["test"]
        assert test[:3] == ["CMD", "python", "-c"]
        code = test[3]
        compile(code, "healthcheck", "exec")
        assert "'/healthz'" in code and "'/readyz'" in code
        assert f"https://localhost:{settings.listen_port}'" in code
        (cafile,) = re.findall(r"cafile='([^']+)'", code)
        ca = volumes.host_path(service, cafile).read_bytes()
        cert = volumes.host_path(service, str(settings.tls_cert_file)).read_bytes()
        assert pki.issued_by(cert, ca), "the healthcheck's CA did not issue the node's certificate"
        assert service["read_only"] is True and service["cap_drop"] == ["ALL"]
        assert "no-new-privileges:true" in service["security_opt"]


def test_a_node_starts_from_what_the_init_job_made_and_passes_its_healthcheck(
    compose: dict[str, Any], volumes: Volumes, database_url: str, tmp_path: Path
) -> None:
    """``regiond serve --config regiond.toml`` as the us-east-1 container runs it, on this machine: its
    variables, with the paths of its volumes and loopback ports over the file's (as a variable
    overrides a file), its database one of the test server's. Its own healthcheck command, with
    those paths and port, must then pass: TLS verified against the init job's CA."""
    region = _dev_regions()[0]
    service, settings = _node(compose, region)
    assert settings.state_dir and settings.tls_cert_file and settings.tls_key_file and settings.peers_file
    port, replication_port = free_port(), free_port()
    environ = {k: v for k, v in os.environ.items() if not k.startswith("REGIOND_")}
    environ |= {k: v for k, v in service["environment"].items() if k.startswith("REGIOND_")}
    environ |= {
        "REGIOND_DATABASE_URL": database_url,
        "REGIOND_LISTEN": f"127.0.0.1:{port}",
        "REGIOND_REPLICATION_LISTEN": f"127.0.0.1:{replication_port}",
        "REGIOND_STATE_DIR": str(volumes.host_path(service, str(settings.state_dir))),
        "REGIOND_TLS_CERT": str(volumes.host_path(service, str(settings.tls_cert_file))),
        "REGIOND_TLS_KEY": str(volumes.host_path(service, str(settings.tls_key_file))),
        "REGIOND_PEERS_FILE": str(volumes.host_path(service, str(settings.peers_file))),
    }
    config_path = service["command"][service["command"].index("--config") + 1]
    argv = [a if a != config_path else str(COMPOSE_DIR / "regiond.toml") for a in service["command"]]
    code = service["healthcheck"]["test"][3]
    (cafile,) = re.findall(r"cafile='([^']+)'", code)
    code = code.replace(cafile, str(volumes.host_path(service, cafile)))
    code = code.replace(f"https://localhost:{settings.listen_port}'", f"https://localhost:{port}'")
    log = tmp_path / "node.log"
    with log.open("wb") as out:
        node = subprocess.Popen([sys.executable, "-m", "regiond", *argv], env=environ, stdout=out, stderr=out)
    try:
        deadline = time.monotonic() + 60
        while True:
            assert node.poll() is None, f"the node exited with {node.returncode}: {log.read_text()[-2000:]}"
            check = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=30)
            if check.returncode == 0:
                break
            assert time.monotonic() < deadline, f"healthcheck never passed: {check.stderr.decode()[-500:]}"
            time.sleep(0.5)
    finally:
        node.terminate()
        node.wait(timeout=30)
