"""The AWS CLI's sign / verify / get-public-key round trip, and the README's signing examples run as written."""

from __future__ import annotations

import asyncio
import base64
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from tests.support.cluster import Identity, Node, NodeFactory

ROOT = Path(__file__).resolve().parents[2]


def _block(marker: str, language: str) -> str:
    readme = (ROOT / "README.md").read_text()
    tag = re.escape(f"<!-- tested: tests/integration/test_signing_cli.py ({marker}) -->")
    pattern = tag + rf"\n```{language}\n(.*?)```"
    found = re.search(pattern, readme, re.S)
    assert found, f"README has no tested {marker} block"
    return found.group(1)


def _env(node: Node, ident: Identity, home: Path) -> dict[str, str]:
    return {
        "AWS_ACCESS_KEY_ID": ident.access_key_id, "AWS_SECRET_ACCESS_KEY": ident.secret_access_key,
        "AWS_DEFAULT_REGION": node.region, "AWS_CONFIG_FILE": "/dev/null", "AWS_SHARED_CREDENTIALS_FILE": "/dev/null",
        "PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin", "HOME": str(home), "EP": node.endpoint,
    }  # fmt: skip


async def test_aws_cli_signs_verifies_and_exports_the_public_key(nodes: NodeFactory, tmp_path: Path) -> None:
    node = await nodes.start()
    ident = await nodes.identity(node)
    env = _env(node, ident, tmp_path)
    aws = [sys.executable, "-m", "awscli", "kms", "--endpoint-url", node.endpoint]

    def run(*args: str, check: bool = True) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run([*aws, *args, "--output", "json"], env=env, capture_output=True, timeout=60, check=check)

    def out(*args: str) -> dict[str, Any]:
        return dict(json.loads(run(*args).stdout))

    key = (await asyncio.to_thread(out, "create-key", "--key-spec", "ECC_NIST_P384", "--key-usage", "SIGN_VERIFY"))
    key_id = key["KeyMetadata"]["KeyId"]
    message = tmp_path / "message.bin"
    message.write_bytes(b"signed from the aws cli")
    signed = await asyncio.to_thread(out, "sign", "--key-id", key_id, "--message", f"fileb://{message}",
                                     "--message-type", "RAW", "--signing-algorithm", "ECDSA_SHA_384")  # fmt: skip
    signature = base64.b64decode(signed["Signature"])
    (tmp_path / "sig").write_bytes(signature)
    verified = await asyncio.to_thread(out, "verify", "--key-id", key_id, "--message", f"fileb://{message}",
                                       "--message-type", "RAW", "--signing-algorithm", "ECDSA_SHA_384",
                                       "--signature", f"fileb://{tmp_path / 'sig'}")  # fmt: skip
    assert verified["SignatureValid"] is True and verified["SigningAlgorithm"] == "ECDSA_SHA_384"
    exported = await asyncio.to_thread(out, "get-public-key", "--key-id", key_id)
    assert exported["KeySpec"] == "ECC_NIST_P384" and exported["SigningAlgorithms"] == ["ECDSA_SHA_384"]
    public = serialization.load_der_public_key(base64.b64decode(exported["PublicKey"]))
    assert isinstance(public, ec.EllipticCurvePublicKey)
    public.verify(signature, b"signed from the aws cli", ec.ECDSA(hashes.SHA384()))
    (tmp_path / "sig").write_bytes(signature[:-1] + bytes([signature[-1] ^ 1]))
    failed = await asyncio.to_thread(run, "verify", "--key-id", key_id, "--message", f"fileb://{message}",
                                     "--signing-algorithm", "ECDSA_SHA_384", "--signature",
                                     f"fileb://{tmp_path / 'sig'}", check=False)  # fmt: skip
    assert failed.returncode != 0 and b"KMSInvalidSignatureException" in failed.stderr


async def test_readme_signing_examples_run_as_written(nodes: NodeFactory, tmp_path: Path) -> None:
    node = await nodes.start()
    ident = await nodes.identity(node)
    prelude = 'shopt -s expand_aliases\nalias kms="aws kms --endpoint-url $EP --region us-east-1"\n'
    done = await asyncio.to_thread(subprocess.run, ["bash", "-euo", "pipefail", "-c", prelude + _block("cli", "sh")],
                                   env=_env(node, ident, tmp_path), cwd=tmp_path, capture_output=True,
                                   timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    assert done.stdout.strip() == b"true"
    assert serialization.load_der_public_key((tmp_path / "release-key.der").read_bytes())
    namespace: dict[str, Any] = {"kms": node.client(ident)}
    await asyncio.to_thread(exec, _block("jwt", "python"), namespace)  # the README's own example
    assert namespace["token"].count(".") == 2
