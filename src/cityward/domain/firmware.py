"""Firmware verification (docs/protocol.md §4): what a manufacturer signs and how it is checked.

The platform checks an image exactly as a device will, before any rollout may offer it, so a
tampered or mislabelled image is refused at the city's door rather than by each device.
"""

from __future__ import annotations

import base64
import binascii
import hashlib

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from cityward.errors import Problem

MAX_IMAGE_BYTES = 64 * 1024 * 1024  # the protocol's limit (a device refuses more)


def signed_message(brand: str, model: str, version: str, sha256_hex: str) -> bytes:
    return f"cityward-firmware-v1\n{brand}\n{model}\n{version}\n{sha256_hex}\n".encode()


def parse_public_key(text: str) -> tuple[Ed25519PublicKey | None, Problem | None]:
    """A raw 32-byte key in base64, or a PEM SubjectPublicKeyInfo."""
    from cryptography.hazmat.primitives import serialization

    text = text.strip()
    try:
        if text.startswith("-----BEGIN"):
            key = serialization.load_pem_public_key(text.encode())
            if not isinstance(key, Ed25519PublicKey):
                return None, Problem("not an Ed25519 key", field="public_key")
            return key, None
        raw = base64.b64decode(text, validate=True)
        if len(raw) != 32:
            return None, Problem(f"an Ed25519 public key is 32 bytes, this is {len(raw)}", field="public_key")
        return Ed25519PublicKey.from_public_bytes(raw), None
    except (ValueError, binascii.Error, TypeError):
        return None, Problem("unreadable: give a PEM public key or 32 bytes in base64", field="public_key")


def raw_public_key(key: Ed25519PublicKey) -> str:
    from cryptography.hazmat.primitives import serialization

    raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return base64.b64encode(raw).decode()


def verify_image(image: bytes, *, brand: str, model: str, version: str, signature_b64: str,
                 key: Ed25519PublicKey, expected_sha256: str | None = None) -> list[Problem]:
    """The protocol's checks, in its order: size, hash, signature."""
    return verify_digest(hashlib.sha256(image).hexdigest(), len(image), brand=brand, model=model, version=version,
                         signature_b64=signature_b64, key=key, expected_sha256=expected_sha256)


def verify_digest(digest: str, size: int, *, brand: str, model: str, version: str, signature_b64: str,
                  key: Ed25519PublicKey, expected_sha256: str | None = None) -> list[Problem]:
    """`verify_image` for an image hashed elsewhere (a file read in chunks, never whole in memory):
    the signature covers the digest, so the digest and the size are all it needs."""
    if not 0 < size <= MAX_IMAGE_BYTES:
        return [Problem(f"an image is 1 byte to {MAX_IMAGE_BYTES:,} bytes, this is {size:,}", field="image")]
    if expected_sha256 is not None and digest != expected_sha256.lower():
        return [Problem(f"hash mismatch: the image's SHA-256 is {digest}", field="sha256")]
    try:
        signature = base64.b64decode(signature_b64.strip(), validate=True)
    except (ValueError, binascii.Error):
        return [Problem("not base64", field="signature")]
    try:
        key.verify(signature, signed_message(brand, model, version, digest))
    except InvalidSignature:
        return [Problem(f"bad signature: it does not sign {brand} {model} {version} with this image under "
                        "the manufacturer's key", field="signature")]
    return []
