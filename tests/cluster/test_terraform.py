"""Terraform's AWS provider against one endpoint of a two-region cluster (issue 18 item 3).

The configuration is what a team writes for AWS, with only ``endpoints { kms, sts }`` changed, and
starts with the README's Terraform block as it stands (its providers, a multi-region key, an alias
and a replica). Beside it: a key with a policy, rotation and tags, an alias, a grant, a ciphertext
read back through ``data aws_kms_secrets``, a key with imported material and ``data aws_kms_key``. No ``skip_*``
setting: the provider validates its credentials and finds its account with STS GetCallerIdentity.
Then a second plan shows no drift, a change of description and tags applies in place, and destroy
leaves only keys pending deletion. Most of the test's time is the provider's own start-up (a large
binary started several times per command), not the calls.

Terraform runs offline: the test writes its own CLI configuration whose ``filesystem_mirror`` is a
directory of the machine holding the hashicorp/aws provider (``REGIONKMS_TERRAFORM_MIRROR``, or the
first of Terraform's usual plugin directories, or a folder under /opt or /usr/local/share, that
has one). Without ``terraform`` or the provider the test is skipped and says which is missing.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import re
import shutil
import textwrap
from pathlib import Path
from typing import Any

import pytest

from tests.support.cluster import ACCOUNT_ID, NodeFactory
from tests.support.regions import REGIONS, replicated_cluster

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(420)]

US, EU, _ = REGIONS
PROVIDER = Path("registry.terraform.io") / "hashicorp" / "aws"


def provider_mirror() -> Path | None:
    """A directory laid out as a Terraform filesystem mirror that holds hashicorp/aws, or None."""
    given = os.environ.get("REGIONKMS_TERRAFORM_MIRROR")
    if given:
        return Path(given) if (Path(given) / PROVIDER).is_dir() else None
    home = Path.home()
    usual = [home / ".terraform.d" / "plugins", home / ".local" / "share" / "terraform" / "plugins",
             Path("/usr/local/share/terraform/plugins"), Path("/usr/share/terraform/plugins")]  # fmt: skip
    for root in (Path("/opt"), Path("/usr/local/share")):
        if root.is_dir():
            usual += sorted(p for p in root.iterdir() if p.is_dir())
    return next((p for p in usual if (p / PROVIDER).is_dir()), None)


TERRAFORM = shutil.which("terraform")
MIRROR = provider_mirror()
if TERRAFORM is None:
    pytestmark.append(pytest.mark.skip(reason="terraform is not on the PATH"))
elif MIRROR is None:
    pytestmark.append(pytest.mark.skip(
        reason="no filesystem mirror of the hashicorp/aws provider (set REGIONKMS_TERRAFORM_MIRROR)"
    ))  # fmt: skip

ROOT = Path(__file__).resolve().parents[2]


def readme_configuration() -> str:
    """The README's Terraform block, as a user copies it (its providers serve the test's resources too)."""
    pattern = re.escape("<!-- tested: tests/cluster/test_terraform.py (hcl) -->") + r"\n```hcl\n(.*?)```"
    found = re.search(pattern, (ROOT / "README.md").read_text(), re.S)
    assert found, "README has no tested Terraform block"
    return found.group(1)


CONFIGURATION = textwrap.dedent(
    """\
    terraform {
      required_providers {
        aws = { source = "hashicorp/aws" }
      }
    }

    variable "description" { default = "payments" }
    variable "team" { default = "payments" }

    data "aws_caller_identity" "me" {}

    resource "aws_kms_key" "payments" {
      description             = var.description
      deletion_window_in_days = 7
      enable_key_rotation     = true
      rotation_period_in_days = 180
      policy = jsonencode({
        Version = "2012-10-17"
        Statement = [{
          Sid       = "Account"
          Effect    = "Allow"
          Principal = { AWS = "arn:aws:iam::${data.aws_caller_identity.me.account_id}:root" }
          Action    = "kms:*"
          Resource  = "*"
        }]
      })
      tags = { team = var.team, env = "test" }
    }

    resource "aws_kms_alias" "payments" {
      name          = "alias/payments"
      target_key_id = aws_kms_key.payments.key_id
    }

    resource "aws_kms_grant" "reader" {
      name              = "reader"
      key_id            = aws_kms_key.payments.key_id
      grantee_principal = data.aws_caller_identity.me.arn
      operations        = ["Encrypt", "Decrypt", "GenerateDataKey"]
      constraints {
        encryption_context_equals = { app = "payments" }
      }
    }

    resource "aws_kms_ciphertext" "secret" {
      key_id    = aws_kms_alias.payments.target_key_id
      plaintext = "launch code"
      context   = { app = "payments" }
    }

    data "aws_kms_secrets" "secret" {
      secret {
        name    = "code"
        payload = aws_kms_ciphertext.secret.ciphertext_blob
        context = { app = "payments" }
      }
    }

    resource "aws_kms_external_key" "imported" {
      description             = "imported"
      key_material_base64     = "%(material)s"
      enabled                 = true
      deletion_window_in_days = 7
    }

    data "aws_kms_key" "by_alias" {
      key_id = aws_kms_alias.payments.name
    }

    output "key_id" { value = aws_kms_key.payments.key_id }
    output "global_arn" { value = aws_kms_key.orders.arn }
    output "replica_arn" { value = aws_kms_replica_key.orders_eu.arn }
    output "imported_id" { value = aws_kms_external_key.imported.id }
    output "imported_state" { value = aws_kms_external_key.imported.key_state }
    output "by_alias_arn" { value = data.aws_kms_key.by_alias.arn }
    output "account" { value = data.aws_caller_identity.me.account_id }
    output "secret" {
      value     = data.aws_kms_secrets.secret.plaintext["code"]
      sensitive = true
    }
    """
)


class Terraform:
    """``terraform`` in one working directory, offline, with a CLI configuration of its own."""

    def __init__(self, workdir: Path, endpoint: str, access_key: str, secret_key: str) -> None:
        assert TERRAFORM is not None and MIRROR is not None
        self.workdir = workdir
        cli_config = workdir / "terraform.rc"
        cli_config.write_text(
            f'provider_installation {{\n  filesystem_mirror {{\n    path = "{MIRROR}"\n  }}\n}}\n'
            'disable_checkpoint = true\n'
        )  # fmt: skip
        keep = {"PATH", "LANG", "LC_ALL", "TMPDIR"}
        self.env = {k: v for k, v in os.environ.items() if k in keep}
        self.env.update({
            "HOME": str(workdir), "TF_CLI_CONFIG_FILE": str(cli_config), "TF_IN_AUTOMATION": "1",
            "CHECKPOINT_DISABLE": "1", "TF_INPUT": "0",
            "TF_VAR_endpoint": endpoint, "AWS_ACCESS_KEY_ID": access_key, "AWS_SECRET_ACCESS_KEY": secret_key,
            # as the README's export lines give them; no other AWS configuration of the machine leaks in
            "AWS_CONFIG_FILE": str(workdir / "no-aws-config"),
            "AWS_SHARED_CREDENTIALS_FILE": str(workdir / "no-aws-credentials"),
            "AWS_EC2_METADATA_DISABLED": "true",
        })  # fmt: skip

    async def run(self, *args: str, ok: tuple[int, ...] = (0,)) -> tuple[int, str]:
        proc = await asyncio.create_subprocess_exec(
            TERRAFORM or "terraform", *args, "-no-color", cwd=self.workdir, env=self.env,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        )  # fmt: skip
        out, _ = await proc.communicate()
        text = out.decode(errors="replace")
        assert proc.returncode in ok, f"terraform {' '.join(args)} exited {proc.returncode}:\n{text[-6000:]}"
        return proc.returncode or 0, text

    async def outputs(self) -> dict[str, Any]:
        _, text = await self.run("output", "-json")
        return {k: v["value"] for k, v in json.loads(text).items()}


async def test_terraform_applies_plans_clean_updates_and_destroys(nodes: NodeFactory, tmp_path: Path) -> None:
    async with replicated_cluster(nodes, (US, EU)) as cluster:
        admin = await cluster.admin()
        endpoint = cluster.nodes[US].endpoint
        workdir = tmp_path / "tf"
        workdir.mkdir()
        (workdir / "readme.tf").write_text(readme_configuration())
        (workdir / "main.tf").write_text(CONFIGURATION % {"material": base64.b64encode(os.urandom(32)).decode()})
        tf = Terraform(workdir, endpoint, admin.access_key_id, admin.secret_access_key)

        await tf.run("init", "-input=false")
        await tf.run("apply", "-auto-approve", "-input=false")
        out = await tf.outputs()
        assert out["account"] == ACCOUNT_ID
        assert out["secret"] == "launch code"
        assert out["imported_state"] == "Enabled"
        assert out["by_alias_arn"] == f"arn:aws:kms:{US}:{ACCOUNT_ID}:key/{out['key_id']}"
        key_id = out["global_arn"].rsplit("/", 1)[1]
        assert key_id.startswith("mrk-")
        assert out["replica_arn"] == f"arn:aws:kms:{EU}:{ACCOUNT_ID}:key/{key_id}"

        kms_us = cluster.nodes[US].client(admin)
        kms_eu = cluster.nodes[EU].client(admin)
        payments = (await asyncio.to_thread(kms_us.describe_key, KeyId="alias/payments"))["KeyMetadata"]
        assert payments["KeyId"] == out["key_id"] and payments["Description"] == "payments"
        orders = (await asyncio.to_thread(kms_us.describe_key, KeyId="alias/orders-tf"))["KeyMetadata"]
        assert orders["Arn"] == out["global_arn"] and orders["MultiRegion"]
        rotation = await asyncio.to_thread(kms_us.get_key_rotation_status, KeyId=out["key_id"])
        assert rotation["KeyRotationEnabled"] and rotation["RotationPeriodInDays"] == 180
        replica = (await asyncio.to_thread(kms_eu.describe_key, KeyId=key_id))["KeyMetadata"]
        assert replica["MultiRegionConfiguration"]["MultiRegionKeyType"] == "REPLICA"
        grants = (await asyncio.to_thread(kms_us.list_grants, KeyId=out["key_id"]))["Grants"]
        assert [g["Name"] for g in grants] == ["reader"]

        # The same configuration again: nothing to change (exit code 0, not 2).
        code, text = await tf.run("plan", "-detailed-exitcode", "-input=false", ok=(0, 2))
        assert code == 0, f"a second plan shows drift:\n{text[-6000:]}"

        # A description and a tag change are an update in place, not a replacement.
        changed = ("-var", "description=payments v2", "-var", "team=risk")
        _, text = await tf.run("apply", "-auto-approve", "-input=false", *changed)
        assert "Resources: 0 added, 1 changed, 0 destroyed." in text, text[-6000:]
        payments = (await asyncio.to_thread(kms_us.describe_key, KeyId=out["key_id"]))["KeyMetadata"]
        assert payments["Description"] == "payments v2"
        tags = (await asyncio.to_thread(kms_us.list_resource_tags, KeyId=out["key_id"]))["Tags"]
        assert {t["TagKey"]: t["TagValue"] for t in tags} == {"team": "risk", "env": "test"}

        await tf.run("destroy", "-auto-approve", "-input=false", *changed)
        # A primary whose replica is still pending deletion waits for it, as AWS's does.
        expected = {out["key_id"]: {"PendingDeletion"}, out["imported_id"]: {"PendingDeletion"},
                    key_id: {"PendingDeletion", "PendingReplicaDeletion"}}  # fmt: skip
        for client, key in ((kms_us, out["key_id"]), (kms_us, key_id), (kms_eu, key_id), (kms_us, out["imported_id"])):
            state = (await asyncio.to_thread(client.describe_key, KeyId=key))["KeyMetadata"]["KeyState"]
            assert state in expected[key], (key, state)
        aliases = (await asyncio.to_thread(kms_us.list_aliases))["Aliases"]
        assert not {"alias/payments", "alias/orders-tf"} & {a["AliasName"] for a in aliases}
        assert (await asyncio.to_thread(kms_us.list_grants, KeyId=out["key_id"]))["Grants"] == []
