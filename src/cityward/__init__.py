"""cityward: keep a smart city's connected devices secure, together."""

__version__ = "0.1.0"
