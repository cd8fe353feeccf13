"""kmsclient: the regionkms client SDK — SigV4-signed KMS calls, nearest-region routing, envelope encryption."""

from kmsclient.client import AiohttpTransport, KmsClient, Transport
from kmsclient.envelope import decrypt, decrypt_stream, encrypt, encrypt_stream
from kmsclient.errors import EnvelopeError, KmsClientError, NoHealthyRegionError
from kmsclient.routing import Endpoint, Router
from kmsclient.sigv4 import Credentials

__all__ = [
    "AiohttpTransport",
    "Credentials",
    "Endpoint",
    "EnvelopeError",
    "KmsClient",
    "KmsClientError",
    "NoHealthyRegionError",
    "Router",
    "Transport",
    "decrypt",
    "decrypt_stream",
    "encrypt",
    "encrypt_stream",
]
