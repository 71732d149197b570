"""The process-level wiring for `remit serve`: settings from the environment, the app, background workers."""

from __future__ import annotations

from fastapi import FastAPI

from remit.bootstrap import Settings, bootstrap
from remit.entrypoints.api.app import create_app


def build_app() -> FastAPI:
    return create_app(bootstrap(Settings()))
