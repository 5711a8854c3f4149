"""Manufacturer firmware-signing keys of the simulated city. SIMULATION ONLY.

Every private key here is derived from the seed and the manufacturer's brand, so anyone who knows
the seed knows the key: that is the point (a test or a demo can play the manufacturer and sign
images the simulated devices accept) and the reason these keys must never sign anything real.

The signed message is protocol §4's: `"cityward-firmware-v1\\n{brand}\\n{model}\\n{version}\\n{sha256}\\n"`
with the brand and model of the *true manufacturer's* product (the end of the relabel chain).
"""

from __future__ import annotations

import base64
import functools
import hashlib
import json
import os
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey


def key_id(brand: str, seed: int) -> str:
    """The id a device's factory provisioned for its manufacturer's key."""
    return f"{brand.lower()}-sim-{seed}"


@functools.lru_cache(maxsize=256)
def private_key(brand: str, seed: int) -> Ed25519PrivateKey:
    """The manufacturer's signing key (deterministic: sha256 of seed and brand)."""
    material = hashlib.sha256(f"cityward-sim-firmware-key/{seed}/{brand}".encode()).digest()
    return Ed25519PrivateKey.from_private_bytes(material)


@functools.lru_cache(maxsize=256)
def public_key(brand: str, seed: int) -> Ed25519PublicKey:
    return private_key(brand, seed).public_key()


def signed_message(brand: str, model: str, version: str, sha256_hex: str) -> bytes:
    return f"cityward-firmware-v1\n{brand}\n{model}\n{version}\n{sha256_hex}\n".encode()


def sign_firmware(brand: str, model: str, version: str, image: bytes, seed: int) -> tuple[str, str, str]:
    """Sign `image` as the manufacturer `brand` (true maker's brand and model): (sha256, signature b64, key_id)."""
    digest = hashlib.sha256(image).hexdigest()
    signature = private_key(brand, seed).sign(signed_message(brand, model, version, digest))
    return digest, base64.b64encode(signature).decode(), key_id(brand, seed)


def verify_signature(key: Ed25519PublicKey, brand: str, model: str, version: str, sha256_hex: str,
                     signature_b64: str) -> bool:
    try:
        signature = base64.b64decode(signature_b64, validate=True)
        key.verify(signature, signed_message(brand, model, version, sha256_hex))
    except (InvalidSignature, ValueError):
        return False
    return True


def export_keys(out: Path, brands: list[str], seed: int, *, private: bool = True) -> list[Path]:
    """Write each manufacturer's public key (`{key_id}.pub`, PEM), private key (`{key_id}.key`, PEM,
    mode 0600) and an index `keys.json` ({key_id: {brand, public_key: base64 raw}}); returns the paths."""
    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    index: dict[str, dict[str, str]] = {}
    for brand in sorted(set(brands)):
        kid = key_id(brand, seed)
        pub = public_key(brand, seed)
        pub_path = out / f"{kid}.pub"
        pub_path.write_bytes(pub.public_bytes(serialization.Encoding.PEM,
                                              serialization.PublicFormat.SubjectPublicKeyInfo))
        written.append(pub_path)
        raw = pub.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        index[kid] = {"brand": brand, "public_key": base64.b64encode(raw).decode()}
        if private:
            key_path = out / f"{kid}.key"
            pem = private_key(brand, seed).private_bytes(serialization.Encoding.PEM,
                                                         serialization.PrivateFormat.PKCS8,
                                                         serialization.NoEncryption())
            fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(pem)
            written.append(key_path)
    index_path = out / "keys.json"
    index_path.write_text(json.dumps(index, indent=2, sort_keys=True) + "\n")
    written.append(index_path)
    return written


__all__ = ["export_keys", "key_id", "private_key", "public_key", "sign_firmware", "signed_message",
           "verify_signature"]
