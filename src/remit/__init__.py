"""Remit: open-source billing automation."""

__version__ = "0.1.0"
