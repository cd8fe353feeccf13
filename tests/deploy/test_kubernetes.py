"""deploy/kubernetes: the base and one overlay per region of ``regiond dev``, checked without a cluster.

Each overlay's node is resolved as the kubelet would start it: its command line and its
ConfigMap's regiond.toml through regiond's own parser and loader, its variables from Secrets,
every file its settings name found on a volume (a Secret or ConfigMap key that the templates or
CloudNativePG provide), the probes on the routes regiond serves for liveness and readiness, a
non-root read-only security context, and policies that let through exactly the ports the
settings listen on. ``kustomize build`` runs where kubectl or kustomize is installed.
"""

from __future__ import annotations

import base64
import io
import re
import shutil
import subprocess
import urllib.parse
from contextlib import redirect_stdout
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
import yaml

import regiond
from regiond import app as regiond_app
from regiond.cli.cluster import cmd_cluster
from regiond.config import Settings, parse_listen
from regiond.crypto.keyring import env_keyring
from tests.deploy.files import KUBERNETES, node_settings, regiond_args, yaml_documents

BASE = KUBERNETES / "base"
OVERLAYS = KUBERNETES / "overlays"
TEMPLATES = KUBERNETES / "secrets.template.yaml"
ROOT_KEY = base64.b64encode(bytes(32)).decode()  # a placeholder of the right shape, never a real key


def _dev_regions() -> list[str]:
    regions: str = regiond_args(["dev"]).regions
    return regions.split(",")


def _kustomization(directory: Path) -> dict[str, Any]:
    document = yaml.safe_load((directory / "kustomization.yaml").read_text())
    assert isinstance(document, dict)
    return document


def _base_objects() -> list[dict[str, Any]]:
    objects = []
    for resource in _kustomization(BASE)["resources"]:
        assert (BASE / resource).is_file(), resource
        objects += yaml_documents(BASE / resource)
    return objects


def _one(objects: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    found = [o for o in objects if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)]
    assert len(found) == 1, f"{kind} {name or ''}: {len(found)} found"
    return found[0]


def _provided() -> dict[tuple[str, str], set[str]]:
    """(kind, name) -> keys of every Secret and ConfigMap the nodes may reference: the templates',
    and those CloudNativePG makes for each Cluster (``<name>-app``, ``<name>-ca``)."""
    out: dict[tuple[str, str], set[str]] = {}
    for doc in yaml_documents(TEMPLATES):
        out[(doc["kind"], doc["metadata"]["name"])] = set(doc.get("stringData", {})) | set(doc.get("data", {}))
    for cluster in (o for o in _base_objects() if o["kind"] == "Cluster"):
        name = cluster["metadata"]["name"]
        out[("Secret", f"{name}-app")] = {"username", "password", "uri", "host", "port", "dbname"}
        out[("Secret", f"{name}-ca")] = {"ca.crt", "ca.key"}
    return out


def _container(deployment: dict[str, Any]) -> dict[str, Any]:
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    return dict(container)


def _volume_source(pod: dict[str, Any], name: str) -> dict[str, Any]:
    (volume,) = [v for v in pod["volumes"] if v["name"] == name]
    return dict(volume)


def _file_on(pod: dict[str, Any], container: dict[str, Any], path: str, generated: dict[str, str]) -> str:
    """What provides the file at ``path`` in the container: ``kind/name:key`` of a Secret or ConfigMap
    (the test fails unless the key is provided), or ``emptyDir`` for a writable directory."""
    best = None
    for mount in container["volumeMounts"]:
        if PurePosixPath(path).is_relative_to(mount["mountPath"]) and (
            best is None or len(mount["mountPath"]) > len(best["mountPath"])
        ):
            best = mount
    assert best is not None, f"{path} is on no volume"
    volume = _volume_source(pod, best["name"])
    if "emptyDir" in volume:
        return "emptyDir"
    kind, source = ("Secret", volume["secret"]["secretName"]) if "secret" in volume else (
        "ConfigMap", volume["configMap"]["name"])  # fmt: skip
    items = {i["path"]: i["key"] for i in (volume.get("secret") or volume["configMap"]).get("items", [])}
    relative = best.get("subPath") or str(PurePosixPath(path).relative_to(best["mountPath"]))
    key = items.get(relative, relative) if items else relative
    if items:
        assert relative in items, f"{path}: {kind} {source} projects no {relative}"
    keys = {"regiond.toml"} if (kind, source) == ("ConfigMap", "regiond-config") else _provided().get((kind, source))
    assert keys is not None, f"{path}: {kind} {source} is neither templated nor made by an operator"
    assert key in keys, f"{path}: {kind} {source} has no key {key}"
    return f"{kind}/{source}:{key}" if (kind, source) != ("ConfigMap", "regiond-config") else generated[key]


def _node(region: str) -> tuple[dict[str, Any], dict[str, Any], Settings]:
    deployment = _one(_base_objects(), "Deployment", "regiond")
    pod, container = deployment["spec"]["template"]["spec"], _container(deployment)
    overlay = _kustomization(OVERLAYS / region)
    (generator,) = [g for g in overlay["configMapGenerator"] if g["name"] == "regiond-config"]
    generated = {Path(f).name: str(OVERLAYS / region / f) for f in generator["files"]}
    environ = {}
    for var in container["env"]:
        ref = var["valueFrom"]["secretKeyRef"]
        assert ref["key"] in _provided().get(("Secret", ref["name"]), set()), var
        environ[var["name"]] = ROOT_KEY if var["name"] == "REGIOND_ROOT_KEY" else "placeholder"
    args = regiond_args(container["args"])
    config_file = _file_on(pod, container, args.config, generated)
    return pod, container, node_settings(container["args"], environ, Path(config_file))


def test_every_region_of_regiond_dev_has_an_overlay() -> None:
    assert sorted(p.name for p in OVERLAYS.iterdir()) == sorted(_dev_regions())
    for region in _dev_regions():
        overlay = _kustomization(OVERLAYS / region)
        assert overlay["resources"] == ["../../base"]
        assert overlay["namespace"] == f"regionkms-{region}"
        assert _node(region)[2].region == region


def test_every_file_and_variable_of_a_node_is_provided() -> None:
    for region in _dev_regions():
        pod, container, settings = _node(region)
        assert settings.tls_cert_file and settings.tls_key_file and settings.peers_file and settings.state_dir
        assert _file_on(pod, container, str(settings.tls_cert_file), {}) == "Secret/regiond-tls:tls.crt"
        assert _file_on(pod, container, str(settings.tls_key_file), {}) == "Secret/regiond-tls:tls.key"
        assert _file_on(pod, container, str(settings.peers_file), {}) == "ConfigMap/regiond-peers:peers.json"
        assert _file_on(pod, container, str(settings.state_dir), {}) == "emptyDir"
        assert settings.root_key_b64 == ROOT_KEY  # from the Secret: never a file others could read
        env_keyring(settings.root_key_b64)
        names = {m["name"] for m in container["volumeMounts"]}
        assert names <= {v["name"] for v in pod["volumes"]}
        assert {v["name"] for v in pod["volumes"]} <= names, "a volume no container mounts"


def test_the_state_directory_holds_what_regiond_cluster_init_makes(tmp_path: Path) -> None:
    """The region's key files, one mount each, are the files ``regiond cluster init`` writes (the
    root key aside: it comes as REGIOND_ROOT_KEY; the client certificate aside: regiond-tls)."""
    args = regiond_args(["cluster", "init", "--dir", str(tmp_path), "--region", "us-east-1=https://r:9443"])
    with redirect_stdout(io.StringIO()):
        assert cmd_cluster(args) == 0
    state = tmp_path / "us-east-1"
    made = {str(p.relative_to(state)) for p in state.rglob("*") if p.is_file()}
    expected = made - {"root.key", "region"} - {m for m in made if m.startswith("client-tls/")}
    pod, container, settings = _node("us-east-1")
    mounted = {
        str(PurePosixPath(m["mountPath"]).relative_to(str(settings.state_dir)))
        for m in container["volumeMounts"]
        if "subPath" in m and PurePosixPath(m["mountPath"]).is_relative_to(str(settings.state_dir))
    }
    assert mounted == expected
    for name in mounted:
        assert _file_on(pod, container, f"{settings.state_dir}/{name}", {}).startswith("Secret/regiond-state:")


def test_the_database_is_the_cloudnativepg_clusters_read_write_service() -> None:
    cluster = _one(_base_objects(), "Cluster")
    name, spec = cluster["metadata"]["name"], cluster["spec"]
    assert spec["instances"] >= 2
    synchronous = spec["postgresql"]["synchronous"]
    assert synchronous["number"] >= 1 and synchronous["number"] < spec["instances"]
    for region in _dev_regions():
        pod, container, settings = _node(region)
        url = urllib.parse.urlsplit(settings.database_url)
        assert url.hostname == f"{name}-rw" and url.password is None
        assert url.path == "/" + spec["bootstrap"]["initdb"]["database"]
        assert url.username == spec["bootstrap"]["initdb"]["owner"]
        query = urllib.parse.parse_qs(url.query)
        assert query["sslmode"] == ["verify-full"]
        assert _file_on(pod, container, query["sslrootcert"][0], {}) == f"Secret/{name}-ca:ca.crt"
        (password,) = [v for v in container["env"] if v["name"] == "PGPASSWORD"]
        assert password["valueFrom"]["secretKeyRef"] == {"name": f"{name}-app", "key": "password"}


def _routes() -> dict[object, str]:
    app = regiond_app.create_app(Settings(region="us-east-1", database_url="postgresql://h/db"), env_keyring(ROOT_KEY))
    return {r.handler: r.resource.canonical for r in app.router.routes() if r.method == "GET" and r.resource}


def test_probes_are_on_the_routes_regiond_serves_for_them() -> None:
    routes = _routes()
    _, container, settings = _node("us-east-1")
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    for probe, handler in (("livenessProbe", regiond_app.healthz), ("startupProbe", regiond_app.healthz),
                           ("readinessProbe", regiond_app.readyz)):  # fmt: skip
        get = container[probe]["httpGet"]
        assert get["path"] == routes[handler], probe
        assert ports[get["port"]] == settings.listen_port
        assert get["scheme"] == ("HTTPS" if settings.tls_cert_file else "HTTP")


def test_the_pod_runs_unprivileged_and_read_only() -> None:
    deployment = _one(_base_objects(), "Deployment")
    pod, container = deployment["spec"]["template"]["spec"], _container(deployment)
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] != 0
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["automountServiceAccountToken"] is False
    security = container["securityContext"]
    assert security["readOnlyRootFilesystem"] is True and security["allowPrivilegeEscalation"] is False
    assert security["capabilities"] == {"drop": ["ALL"]}
    assert _file_on(pod, container, "/tmp/x", {}) == "emptyDir"  # metrics snapshots, TLS keys being loaded
    assert {"cpu", "memory"} <= set(container["resources"]["requests"]) and "memory" in container["resources"]["limits"]


def test_services_budget_and_policy_select_the_nodes_on_their_ports() -> None:
    objects = _base_objects()
    deployment = _one(objects, "Deployment")
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
    _, container, settings = _node("us-east-1")
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert settings.replication_listen is not None
    client, replication = settings.listen_port, parse_listen(settings.replication_listen)[1]
    assert set(ports.values()) == {client, replication}
    for service in (o for o in objects if o["kind"] == "Service"):
        assert service["spec"]["selector"].items() <= labels.items()
        for port in service["spec"]["ports"]:
            assert port["targetPort"] in ports
    budget = _one(objects, "PodDisruptionBudget")
    assert budget["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert budget["spec"].get("maxUnavailable", 0) < deployment["spec"]["replicas"]
    policy = _one(objects, "NetworkPolicy")["spec"]
    assert policy["podSelector"]["matchLabels"].items() <= labels.items()
    assert set(policy["policyTypes"]) == {"Ingress", "Egress"}
    ingress = {p["port"]: rule for rule in policy["ingress"] for p in rule["ports"]}
    assert set(ingress) == {client, replication}
    assert "from" not in ingress[client]  # clients come from anywhere; peers only from the other regions
    assert all("ipBlock" in f for f in ingress[replication]["from"])
    egress = {p["port"]: rule for rule in policy["egress"] for p in rule["ports"]}
    database = _one(objects, "Cluster")["metadata"]["name"]
    assert egress[5432]["to"] == [{"podSelector": {"matchLabels": {"cnpg.io/cluster": database}}}]
    assert replication in egress and 53 in egress


def _kustomize() -> list[str] | None:
    if shutil.which("kustomize"):
        return ["kustomize", "build"]
    if shutil.which("kubectl"):
        return ["kubectl", "kustomize"]
    return None


@pytest.mark.skipif(_kustomize() is None, reason="neither kustomize nor kubectl is installed: the build is not checked")
def test_every_overlay_builds_with_kustomize() -> None:
    command = _kustomize()
    assert command is not None
    regions = _dev_regions()
    for region in regions:
        built = subprocess.run([*command, str(OVERLAYS / region)], capture_output=True, text=True, timeout=60)
        assert built.returncode == 0, built.stderr
        objects = [d for d in yaml.safe_load_all(built.stdout) if d]
        assert {o["metadata"]["namespace"] for o in objects} == {f"regionkms-{region}"}
        deployment = _one(objects, "Deployment")
        configs = [o for o in objects if o["kind"] == "ConfigMap"]
        (config,) = configs
        volumes = deployment["spec"]["template"]["spec"]["volumes"]
        assert {"name": "config", "configMap": {"name": config["metadata"]["name"]}} in volumes
        assert config["data"]["regiond.toml"] == (OVERLAYS / region / "regiond.toml").read_text()
        policy = _one(objects, "NetworkPolicy")["spec"]
        peers = {f["ipBlock"]["cidr"] for f in policy["ingress"][1]["from"]}
        assert len(peers) == len(regions) - 1, "the other regions' receivers, each"
        assert {t["ipBlock"]["cidr"] for t in policy["egress"][1]["to"]} == peers


def test_every_image_is_the_one_built_here_or_a_pinned_public_one() -> None:
    images = {i["name"]: i for i in _kustomization(BASE)["images"]}
    dockerfile = (KUBERNETES.parent / "Dockerfile").read_text()
    for deployment in (o for o in _base_objects() if o["kind"] == "Deployment"):
        for container in deployment["spec"]["template"]["spec"]["containers"]:
            assert container["image"] in images, f"{container['image']}: not set by the kustomization"
            assert f"-t {container['image']}" in dockerfile, "the image deploy/Dockerfile builds"
            assert images[container["image"]]["newTag"] == regiond.__version__, "this release, not latest"
    for cluster in (o for o in _base_objects() if o["kind"] == "Cluster"):
        assert re.fullmatch(r"[a-z0-9./-]+:\d+(\.\d+)*", cluster["spec"]["imageName"])
