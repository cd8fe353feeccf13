"""Where kmsclient's settings come from: the one reader of credentials, endpoints and the home region.

A cluster file (``cluster.json``, written by ``regiond dev``) gives every region's endpoint, the
account and an access key. Without one, endpoints are given as ``REGION=URL`` and credentials come
from the standard AWS environment variables, as the AWS CLI reads them. The environment's
credentials win over the file's, so an application runs as its own principal against a dev cluster.

A TLS endpoint is verified against the system's trust store, or against ``AWS_CA_BUNDLE`` (as
the AWS CLI and SDKs read it), else the cluster file's ``ca_bundle`` (``regiond dev --tls``).

The home region is where a single-region key given without an ARN (a bare key id, an alias name)
lives: the caller's choice, else ``AWS_REGION`` / ``AWS_DEFAULT_REGION``, else the cluster file's
first region.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from kmsclient.errors import ConfigurationError
from kmsclient.routing import Endpoint
from kmsclient.sigv4 import Credentials


@dataclass(frozen=True)
class ClientConfig:
    endpoints: tuple[Endpoint, ...]
    credentials: Credentials
    home_region: str
    account_id: str | None = None
    ca_bundle: str | None = None  # PEM CA certificates TLS endpoints are verified against


def credentials_from_env(environ: Mapping[str, str] | None = None) -> Credentials | None:
    env = os.environ if environ is None else environ
    key_id, secret = env.get("AWS_ACCESS_KEY_ID"), env.get("AWS_SECRET_ACCESS_KEY")
    if not key_id or not secret:
        return None
    return Credentials(key_id, secret, env.get("AWS_SESSION_TOKEN") or None)


def require_credentials_from_env(environ: Mapping[str, str] | None = None) -> Credentials:
    found = credentials_from_env(environ)
    if found is None:
        raise ConfigurationError("set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY")
    return found


def parse_endpoint(spec: str) -> Endpoint:
    region, eq, url = spec.partition("=")
    if not eq or not region or not url.startswith(("http://", "https://")):
        raise ConfigurationError(f"an endpoint is REGION=URL (http or https), not {spec[:80]!r}")
    return Endpoint(region, url.rstrip("/"))


def load_config(
    *,
    cluster_file: str | Path | None = None,
    endpoints: Sequence[str] = (),
    home_region: str | None = None,
    environ: Mapping[str, str] | None = None,
) -> ClientConfig:
    """Settings from a cluster file and/or ``REGION=URL`` endpoints plus the environment."""
    env = os.environ if environ is None else environ
    found: list[Endpoint] = []
    credentials: Credentials | None = None
    account_id: str | None = None
    ca_bundle: str | None = None
    if cluster_file is not None:
        try:
            cluster = json.loads(Path(cluster_file).read_text())
            found = [Endpoint(str(r), str(info["endpoint"]).rstrip("/")) for r, info in cluster["regions"].items()]
            c = cluster.get("credentials") or {}
            if c.get("access_key_id") and c.get("secret_access_key"):
                credentials = Credentials(str(c["access_key_id"]), str(c["secret_access_key"]))
            account_id = cluster.get("account_id")
            if cluster.get("ca_bundle"):
                ca_bundle = str(Path(cluster_file).parent / str(cluster["ca_bundle"]))
        except OSError as exc:
            raise ConfigurationError(
                f"cannot read the cluster file {Path(cluster_file).name}: {exc.strerror}"
            ) from None
        except (ValueError, KeyError, TypeError, AttributeError):
            raise ConfigurationError(
                f"{Path(cluster_file).name} is not a cluster file written by regiond dev"
            ) from None
    for spec in endpoints:
        endpoint = parse_endpoint(spec)
        found = [e for e in found if e.region != endpoint.region] + [endpoint]
    credentials = credentials_from_env(env) or credentials
    if not found:
        raise ConfigurationError("no endpoints: give a cluster file or REGION=URL endpoints")
    if credentials is None:
        raise ConfigurationError("no credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY")
    regions = [e.region for e in found]
    if home_region is not None and home_region not in regions:
        raise ConfigurationError(f"the home region {home_region} has no endpoint")
    from_env = [r for r in (env.get("AWS_REGION"), env.get("AWS_DEFAULT_REGION")) if r in regions]
    home = home_region or (from_env[0] if from_env else regions[0])
    ca_bundle = env.get("AWS_CA_BUNDLE") or ca_bundle
    return ClientConfig(tuple(found), credentials, home, account_id, ca_bundle)
