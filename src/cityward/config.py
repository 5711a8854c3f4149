"""Settings from the environment and `cityward.toml`; the secret key is generated, never shipped."""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import Any

from pydantic import Field, SecretStr
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from cityward.errors import InvalidInput

SECRET_KEY_BYTES = 32


class Settings(BaseSettings):
    """Environment variables win over `cityward.toml`, which wins over the defaults."""

    model_config = SettingsConfigDict(
        env_prefix="CITYWARD_", toml_file="cityward.toml", extra="forbid"
    )

    database_url: str = "sqlite:///cityward.db"
    secret_key: SecretStr | None = None
    # Where a generated secret key is kept when CITYWARD_SECRET_KEY is unset.
    secret_key_file: Path = Path("cityward.secret")
    mqtt_url: str = "mqtt://127.0.0.1:1883"
    broker_url: str | None = None
    api_host: str = "127.0.0.1"
    api_port: int = 8000
    # Dashboard cookies only over HTTPS (browsers also treat http://localhost as secure). Turn off
    # only behind a TLS-terminating proxy that talks plain HTTP to cityward on another host.
    web_secure_cookies: bool = True
    # The overview's fleet-wide counts are recounted in the background when older than this.
    web_overview_fresh_s: float = Field(default=30.0, ge=0, le=3600)
    # Verified firmware images, one file per SHA-256 (content-addressed, written once).
    firmware_dir: Path = Path("cityward-firmware")
    # Where devices download firmware from: the executor serves it here (host:port, port 0: any),
    # and tells devices this base URL (default: the address it listens on).
    firmware_listen: str = "127.0.0.1:0"
    firmware_url: str | None = None
    # Upper bound for an inventory upload over the API; the CLI streams files of any size.
    max_upload_bytes: int = Field(default=1 << 30, gt=0)
    token: SecretStr | None = None  # CITYWARD_TOKEN: act as this API token from the CLI
    # Vulnerability notifications by e-mail: smtp://[user:password@]host[:port][?starttls=off]
    # (STARTTLS by default: credentials never travel in the clear), and the sender address.
    smtp_url: SecretStr | None = None
    smtp_sender: str | None = None
    # Webhooks to private or loopback addresses (an on-premises receiver); refused by default (SSRF).
    notify_private_networks: bool = False
    # Signed checkpoints of the audit log's head (`cityward auditlog anchor`): a JSON Lines file kept
    # outside the database (put it on other storage, or back it up apart from the database).
    audit_anchor_file: Path = Path("cityward-anchors.jsonl")
    # Organizations sent every anchor over their contact (webhook and/or e-mail), by name.
    audit_anchor_recipients: list[str] = Field(default_factory=list)
    # `cityward serve` anchors the head this often, when it moved (hours; 0: never).
    audit_anchor_every_h: float = Field(default=24.0, ge=0, le=24 * 366)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, env_settings, TomlConfigSettingsSource(settings_cls))

    def secret_key_bytes(self) -> bytes:
        """The key that encrypts device secrets; created with mode 0600 on first use if unset."""
        if self.secret_key is not None:
            raw = self.secret_key.get_secret_value()
            try:
                key = bytes.fromhex(raw)
            except ValueError:
                key = b""
            if len(key) != SECRET_KEY_BYTES:
                raise InvalidInput(
                    "CITYWARD_SECRET_KEY must be 64 hexadecimal characters (32 bytes)",
                    hint='generate one with: python -c "import secrets; print(secrets.token_hex(32))"',
                )
            return key
        return _load_or_create_key(self.secret_key_file)


def _load_or_create_key(path: Path) -> bytes:
    try:
        # O_EXCL: two processes starting at once cannot both write a key.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        mode = path.stat().st_mode & 0o777
        if mode & 0o077:
            raise InvalidInput(
                f"secret key file {path} is readable by others (mode {mode:o})",
                hint=f"chmod 600 {path}",
            ) from None
        try:
            key = bytes.fromhex(path.read_text().strip())
        except ValueError:
            key = b""
        if len(key) != SECRET_KEY_BYTES:
            raise InvalidInput(f"secret key file {path} is corrupt: expected 64 hex characters") from None
        return key
    key = secrets.token_bytes(SECRET_KEY_BYTES)
    with os.fdopen(fd, "w") as fh:
        fh.write(key.hex() + "\n")
    return key


def load_settings(**overrides: Any) -> Settings:
    try:
        return Settings(**overrides)
    except ValueError as exc:  # pydantic's ValidationError is a ValueError
        raise InvalidInput(f"bad configuration: {exc}") from exc
