"""The services one node runs, wired once by ``regiond.app`` and handed to every handler.

Built complete at start: every field is set by the constructor and never assigned later, and each
service gets its collaborators in its own constructor, so no handler checks for a missing service
and no service reaches for another through this container.
"""

from __future__ import annotations

from dataclasses import dataclass

from regiond.auth.authn import Authenticator
from regiond.clock import Clock
from regiond.config import Settings
from regiond.service.aliases import AliasService
from regiond.service.asymmetric import AsymmetricService
from regiond.service.authz import Authorizer
from regiond.service.cryptops import CryptoService
from regiond.service.datakeypairs import DataKeyPairService
from regiond.service.grants import GrantService
from regiond.service.iam import IamService
from regiond.service.iam_authz import IamAuthorizer
from regiond.service.importing import ImportService
from regiond.service.keys import KeyService
from regiond.service.mac import MacService
from regiond.service.multiregion import MultiRegionService
from regiond.service.policies import KeyPolicyService
from regiond.service.rotation import RotationService


@dataclass
class Services:
    settings: Settings
    clock: Clock
    authn: Authenticator
    iam: IamService
    iam_authz: IamAuthorizer
    authz: Authorizer
    keys: KeyService
    aliases: AliasService
    cryptops: CryptoService
    grants: GrantService
    policies: KeyPolicyService
    macs: MacService
    asymmetric: AsymmetricService
    data_key_pairs: DataKeyPairService
    multiregion: MultiRegionService
    rotation: RotationService
    importing: ImportService
