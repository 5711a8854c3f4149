"""What a device is: its kinds, protocols and the facts cityward keeps about it."""

from __future__ import annotations

from enum import StrEnum


class DeviceKind(StrEnum):
    STREETLIGHT = "streetlight"
    CAMERA = "camera"
    WASTE_BIN = "waste_bin"
    TRAFFIC_CONTROLLER = "traffic_controller"
    ENV_SENSOR = "env_sensor"
    GATEWAY = "gateway"
    PARKING_SENSOR = "parking_sensor"
    EV_CHARGER = "ev_charger"
    KIOSK = "kiosk"
    OTHER = "other"


class DeviceProtocol(StrEnum):
    MQTT = "mqtt"
    HTTP = "http"


class CredentialState(StrEnum):
    """What is known about a device's login secret (reported by the device or set by rotation)."""

    UNKNOWN = "unknown"
    DEFAULT = "default"  # the factory password: ETSI EN 303 645 5.1-1 forbids it
    WEAK = "weak"
    UNIQUE = "unique"
