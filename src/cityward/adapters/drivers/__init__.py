"""Drivers: how cityward reaches a device (MQTT through a broker, HTTP to its own address)."""
