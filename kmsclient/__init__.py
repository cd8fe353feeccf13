"""kmsclient: client-side encryption with keys held in regionkms, from the nearest region that may serve them.

    import kmsclient
    client = kmsclient.KmsClient(endpoints, credentials)            # or kmsclient.from_cluster_file(...)
    keyring = kmsclient.AwsKmsMrkKeyring(client, "arn:aws:kms:us-east-1:111122223333:key/mrk-...")
    message = await kmsclient.encrypt(keyring, b"data", encryption_context={"app": "demo"})
    plaintext = (await kmsclient.decrypt(keyring, message, encryption_context={"app": "demo"})).plaintext

Messages are the AWS Encryption SDK format, version 2 (``message``); the official SDKs open them
against regionkms and kmsclient opens theirs. See docs/CLIENT.md.
"""

from kmsclient.client import DataKey, KmsClient, SyncKmsClient
from kmsclient.cmm import CachingCmm, DefaultCmm, LocalCache, RequiredEncryptionContextCmm
from kmsclient.config import ClientConfig, load_config
from kmsclient.encryption import Decrypted, MessageInfo, decrypt, decrypt_file, decrypt_stream, encrypt, encrypt_stream
from kmsclient.errors import (
    ConfigurationError,
    KmsClientError,
    MaterialsError,
    MessageError,
    NoRegionAvailableError,
    RequiredContextError,
    ServiceError,
    SignatureError,
    TransportError,
)
from kmsclient.keyrings import AwsKmsDiscoveryKeyring, AwsKmsKeyring, AwsKmsMrkKeyring, DiscoveryFilter, MultiKeyring
from kmsclient.message import COMMIT_KEY, COMMIT_KEY_ECDSA_P384, Suite
from kmsclient.routing import Endpoint, Placement, Router
from kmsclient.sigv4 import Credentials
from kmsclient.transport import AiohttpTransport, Transport


def from_config(config: ClientConfig, **kwargs: object) -> KmsClient:
    """A client for the endpoints, credentials and home region of ``config``."""
    kwargs.setdefault("transport", AiohttpTransport(ca_bundle=config.ca_bundle))
    return KmsClient(list(config.endpoints), config.credentials, home_region=config.home_region, **kwargs)  # type: ignore[arg-type]


def from_cluster_file(path: str, **kwargs: object) -> KmsClient:
    """A client for a ``regiond dev`` cluster file (environment credentials win over the file's)."""
    return from_config(load_config(cluster_file=path), **kwargs)


__all__ = [
    "COMMIT_KEY",
    "COMMIT_KEY_ECDSA_P384",
    "AiohttpTransport",
    "AwsKmsDiscoveryKeyring",
    "AwsKmsKeyring",
    "AwsKmsMrkKeyring",
    "CachingCmm",
    "ClientConfig",
    "ConfigurationError",
    "Credentials",
    "DataKey",
    "Decrypted",
    "DefaultCmm",
    "DiscoveryFilter",
    "Endpoint",
    "KmsClient",
    "KmsClientError",
    "LocalCache",
    "MaterialsError",
    "MessageError",
    "MessageInfo",
    "MultiKeyring",
    "NoRegionAvailableError",
    "Placement",
    "RequiredContextError",
    "RequiredEncryptionContextCmm",
    "Router",
    "ServiceError",
    "SignatureError",
    "Suite",
    "SyncKmsClient",
    "Transport",
    "TransportError",
    "decrypt",
    "decrypt_file",
    "decrypt_stream",
    "encrypt",
    "encrypt_stream",
    "from_cluster_file",
    "from_config",
    "load_config",
]
