"""Device secrets encrypted at rest: AES-256-GCM under a key derived from CITYWARD_SECRET_KEY.

The associated data binds each ciphertext to its device and purpose, so a ciphertext copied onto
another row does not decrypt there.
"""

from __future__ import annotations

import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from cityward.errors import CitywardError

_NONCE = 12


class SecretUnreadable(CitywardError):
    """A stored secret does not decrypt: a different secret key, or a tampered row."""


class SecretBox:
    def __init__(self, master_key: bytes) -> None:
        key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None,
                   info=b"cityward device secrets v1").derive(master_key)
        self._aead = AESGCM(key)

    @staticmethod
    def _aad(device_id: str, purpose: str) -> bytes:
        return f"{device_id}\x00{purpose}".encode()

    def seal(self, device_id: str, purpose: str, secret: str) -> bytes:
        nonce = os.urandom(_NONCE)
        return nonce + self._aead.encrypt(nonce, secret.encode(), self._aad(device_id, purpose))

    def open(self, device_id: str, purpose: str, blob: bytes) -> str:
        try:
            return self._aead.decrypt(blob[:_NONCE], blob[_NONCE:], self._aad(device_id, purpose)).decode()
        except (InvalidTag, ValueError):
            raise SecretUnreadable(f"the stored {purpose} secret of {device_id} does not decrypt with this "
                                   "secret key", hint="was CITYWARD_SECRET_KEY changed?") from None


def anchor_signing_key(master_key: bytes) -> Ed25519PrivateKey:
    """The city's audit-anchor signing key (Ed25519), derived from CITYWARD_SECRET_KEY.

    Derived rather than stored, under its own HKDF label: it is as well kept as the secret key and
    never on disk or in the database, whoever can read the database cannot sign an anchor, and it
    is independent of the key that seals device secrets (a different label gives an unrelated key)."""
    seed = HKDF(algorithm=hashes.SHA256(), length=32, salt=None,
                info=b"cityward audit anchors ed25519 v1").derive(master_key)
    return Ed25519PrivateKey.from_private_bytes(seed)
