"""`regiond replication status` and the replication metrics show lag and errors per peer."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from regiond.__main__ import parser
from regiond.domain.principal import PrincipalKind
from regiond.protocol.routes import SERVICES
from tests.support.cluster import ACCOUNT_ID, NodeFactory
from tests.support.regions import REGIONS, replicated_cluster, wait_until

pytestmark = pytest.mark.cluster

US, EU, _AP = REGIONS


async def _status(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    """``regiond replication status ...`` in this process (without reconfiguring logging)."""
    args = parser().parse_args(["replication", "status", *argv])
    capsys.readouterr()
    code = await asyncio.to_thread(args.func, args)
    return int(code), capsys.readouterr().out


def _json(out: str) -> dict[str, Any]:
    """The command's JSON document (log lines of the in-process nodes may share stdout)."""
    start = out.index("\n{\n") + 1 if not out.startswith("{\n") else 0
    document, _ = json.JSONDecoder().raw_decode(out[start:])
    assert isinstance(document, dict)
    return document


async def _metrics(endpoint: str) -> dict[tuple[str, str], float]:
    """The node's per-peer replication samples from ``/metrics``: (sample name, peer) -> value."""
    async with aiohttp.ClientSession() as session, session.get(endpoint + "/metrics") as resp:
        text = await resp.text()
    return {
        (sample.name, sample.labels.get("peer", "")): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name.startswith("regionkms_replication_")
    }


async def test_status_and_metrics_show_backlog_and_errors_per_peer(
    nodes: NodeFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    async with replicated_cluster(nodes, regions=(US, EU), proxies=True) as cluster:
        home = cluster.nodes[US]
        cluster.cut(US, EU)
        iam = home.app[SERVICES].iam
        await iam.ensure_account(ACCOUNT_ID)  # 1 entry, then 3 more
        for name in ("a", "b", "c"):
            await iam.create_principal(ACCOUNT_ID, PrincipalKind.USER, name)
        db = ["--database-url", cluster.databases[US], "--region", US, "--peers-file", str(cluster.peers_files[US])]

        async def failing() -> bool:
            code, out = await _status(capsys, *db, "--format", "json")
            peer = _json(out)["peers"][0]
            return code == 0 and peer["lag_entries"] == 4 and peer["last_error"] is not None

        await wait_until(failing, what="the status to show the backlog and the error")
        code, out = await _status(capsys, *db)
        assert code == 0 and "eu-west-1" in out and "TransportError" in out

        async def metrics_show_backlog() -> bool:
            # The gauges move when the sender next tries (after its backoff), not when entries are appended.
            metrics = await _metrics(home.endpoint)
            return (
                metrics.get(("regionkms_replication_lag_entries", EU)) == 4.0
                and metrics.get(("regionkms_replication_lag_seconds", EU), 0.0) > 0.0
                and any(name == "regionkms_replication_send_errors_total" for name, _ in metrics)
            )

        await wait_until(metrics_show_backlog, what="the metrics to show the backlog, its age and the errors")
        # the age of the oldest unacknowledged change grows while the peer is cut off
        first_age = (await _metrics(home.endpoint))[("regionkms_replication_lag_seconds", EU)]

        async def older() -> bool:
            return (await _metrics(home.endpoint))[("regionkms_replication_lag_seconds", EU)] > first_age

        await wait_until(older, what="the lag in seconds to grow while eu-west-1 is cut off")

        cluster.heal(US, EU)
        await wait_until(cluster.drained, what="the backlog to drain")

        async def caught_up() -> bool:
            _code, out = await _status(capsys, *db, "--format", "json")
            peer = _json(out)["peers"][0]
            return bool(peer["lag_entries"] == 0 and peer["acked_seq"] == peer["appended_seq"] == 4)

        await wait_until(caught_up, what="the status to show no lag")

        async def metrics_caught_up() -> bool:
            metrics = await _metrics(home.endpoint)
            return (
                metrics.get(("regionkms_replication_lag_entries", EU)) == 0.0
                and metrics.get(("regionkms_replication_lag_seconds", EU)) == 0.0
                and metrics.get(("regionkms_replication_acked_seq", EU)) == 4.0
            )

        await wait_until(metrics_caught_up, what="the metrics to show no lag once eu-west-1 acknowledged")
        code, out = await _status(capsys, "--database-url", cluster.databases[EU], "--region", EU, "--format", "json")
        assert _json(out)["inbound"][0] == {**_json(out)["inbound"][0], "source": US, "applied_seq": 4}
        code, _ = await _status(capsys, "--database-url", cluster.databases[EU])
        assert code == 2  # --region is required
