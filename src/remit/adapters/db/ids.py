"""Identifiers: a short type prefix and 20 random hex digits (``cus_9f2c…``), readable in logs and URLs."""

from __future__ import annotations

import os


def new_id(prefix: str) -> str:
    return f"{prefix}_{os.urandom(10).hex()}"
