"""Key material wrapped for ImportKeyMaterial the way an AWS client does it, with ``cryptography`` alone.

The Developer Guide's "encrypt the key material" step (its openssl recipe): RSAES-OAEP of the
material under the wrapping public key, or for the hybrid ``RSA_AES_KEY_WRAP_*`` algorithms an
OAEP-encrypted fresh AES key followed by the material wrapped under it with RFC 5649. Written out
here, not taken from ``regiond.crypto.import_wrap``, so the tests check the server against the
documented format rather than against itself.
"""

from __future__ import annotations

import os

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.keywrap import aes_key_wrap_with_padding


def wrap_for_import(public_der: bytes, algorithm: str, material: bytes) -> bytes:
    """``material`` sealed to the DER ``public_der`` a GetParametersForImport returned, by ``algorithm``."""
    public = serialization.load_der_public_key(public_der)
    assert isinstance(public, rsa.RSAPublicKey)
    digest: hashes.HashAlgorithm = hashes.SHA256() if algorithm.endswith("SHA_256") else hashes.SHA1()
    oaep = padding.OAEP(mgf=padding.MGF1(algorithm=digest), algorithm=digest, label=None)
    if algorithm.startswith("RSAES_OAEP"):
        return public.encrypt(material, oaep)
    aes_key = os.urandom(32)
    return public.encrypt(aes_key, oaep) + aes_key_wrap_with_padding(aes_key, material)
