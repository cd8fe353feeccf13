"""The benchmarks' caller: an account, a user allowed ``kms:*`` and its access key.

Written with ``IamService`` straight into the region's database, as ``regiond dev`` bootstraps
its admin, by every tool here that starts its own regiond (the load harness, the audit
overhead comparison, the in-process hot-path measurement).
"""

from __future__ import annotations

import json

from kmsclient.sigv4 import Credentials
from regiond.crypto.keyring import RootKeyring
from regiond.domain.principal import PrincipalKind, principal_arn
from regiond.service.iam import IamService
from regiond.store.pool import Pool

ACCOUNT_ID = "111122223333"
USER_NAME = "bench"
ADMIN_POLICY = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": ["kms:*"], "Resource": "*"}]}


async def create_bench_user(pool: Pool, keyring: RootKeyring) -> tuple[Credentials, str]:
    """The user's access key and ARN (the account is created if missing)."""
    iam = IamService(pool, keyring)
    await iam.ensure_account(ACCOUNT_ID)
    await iam.create_principal(ACCOUNT_ID, PrincipalKind.USER, USER_NAME)
    arn = principal_arn(ACCOUNT_ID, PrincipalKind.USER, USER_NAME)
    await iam.put_identity_policy(arn, USER_NAME, json.dumps(ADMIN_POLICY))
    new = await iam.create_access_key(arn)
    return Credentials(new.access_key_id, new.secret_access_key), arn
