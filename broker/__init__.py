"""Atlas Token Broker: one holder of the Atlas client secrets, handing ready tokens to callers."""

__version__ = "0.1.0"
