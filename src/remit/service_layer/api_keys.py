"""API keys: created with scopes, shown once, stored only as an argon2 hash.

A secret looks like ``rk_live_key_3f9c….Xq7…``: the mode, the key's id (to find its row) and a random token (to
prove possession). Verifying argon2 costs milliseconds by design, so a verified key is remembered in memory for a
short time; revocation and expiry are re-read when that memory lapses.
"""

from __future__ import annotations

import hashlib
import secrets
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from argon2 import PasswordHasher
from argon2.exceptions import VerificationError
from sqlalchemy import Engine, select, update

from remit.adapters.db import tables as t
from remit.adapters.db.ids import new_id
from remit.domain.errors import NotFound, ValidationError
from remit.service_layer.unit_of_work import UnitOfWork

SCOPES = ("read", "write", "admin")
# OWASP's argon2id minimum: 19 MiB, 2 passes. The tokens are 256-bit random, so this guards a leaked table.
_HASHER = PasswordHasher(time_cost=2, memory_cost=19456, parallelism=1)
CACHE_SECONDS = 30.0


@dataclass(frozen=True, slots=True)
class Principal:
    key_id: str
    scopes: frozenset[str]
    legal_entity_id: str | None
    livemode: bool

    def allows(self, scope: str) -> bool:
        # admin implies write implies read
        order = {"read": 0, "write": 1, "admin": 2}
        return any(order[s] >= order[scope] for s in self.scopes)


class AuthError(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def create_key(
    uow: UnitOfWork,
    name: str,
    scopes: Sequence[str],
    legal_entity_id: str | None = None,
    livemode: bool = True,
    expires_at: datetime | None = None,
) -> dict[str, Any]:
    wanted = list(dict.fromkeys(scopes))
    if not wanted:
        raise ValidationError("missing_field", "Give at least one scope: read, write or admin.", "scopes")
    for scope in wanted:
        if scope not in SCOPES:
            raise ValidationError("invalid_scope", f"{scope!r} is not a scope (read, write, admin).", "scopes")
    if (
        legal_entity_id is not None
        and uow.conn.execute(select(t.legal_entities.c.id).where(t.legal_entities.c.id == legal_entity_id)).first()
        is None
    ):
        raise NotFound("legal_entity", legal_entity_id, "legal_entity_id")
    if expires_at is not None and expires_at <= uow.now:
        raise ValidationError("date_in_past", "A key cannot expire in the past.", "expires_at")
    key_id = new_id("key")
    token = secrets.token_urlsafe(32)
    secret = f"rk_{'live' if livemode else 'test'}_{key_id}.{token}"
    uow.insert_many(
        t.api_keys,
        [
            {
                "id": key_id,
                "name": name or key_id,
                "secret_hash": _HASHER.hash(token),
                "scopes": wanted,
                "legal_entity_id": legal_entity_id,
                "livemode": livemode,
                "expires_at": expires_at,
                "revoked_at": None,
                "created_at": uow.now,
            }
        ],
    )
    return {
        "id": key_id,
        "secret": secret,
        "scopes": wanted,
        "legal_entity_id": legal_entity_id,
        "livemode": livemode,
        "expires_at": expires_at,
    }


def revoke_key(uow: UnitOfWork, key_id: str) -> None:
    result = uow.conn.execute(
        update(t.api_keys)
        .where(t.api_keys.c.id == key_id, t.api_keys.c.revoked_at.is_(None))
        .values(revoked_at=uow.now)
    )
    if result.rowcount != 1:
        raise NotFound("api_key", key_id, "id")
    _CACHE.clear()


class _Cache:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._items: dict[str, tuple[float, Principal, datetime | None]] = {}

    def get(self, digest: str) -> tuple[Principal, datetime | None] | None:
        with self._lock:
            item = self._items.get(digest)
        if item is None or item[0] < time.monotonic():
            return None
        return item[1], item[2]

    def put(self, digest: str, principal: Principal, expires_at: datetime | None) -> None:
        with self._lock:
            if len(self._items) > 10_000:
                self._items.clear()
            self._items[digest] = (time.monotonic() + CACHE_SECONDS, principal, expires_at)

    def clear(self) -> None:
        with self._lock:
            self._items.clear()


_CACHE = _Cache()


def authenticate(engine: Engine, secret: str, now: datetime) -> Principal:
    """The principal a secret stands for; AuthError when it is unknown, wrong, revoked or expired."""
    digest = hashlib.sha256(secret.encode()).hexdigest()
    cached = _CACHE.get(digest)
    if cached is not None:
        principal, expires_at = cached
        if expires_at is not None and now >= expires_at:
            raise AuthError("api_key_expired", "This API key has expired.")
        return principal
    try:
        mode, rest = secret.removeprefix("rk_").split("_", 1)
        key_id, token = rest.split(".", 1)
    except ValueError:
        raise AuthError("invalid_api_key", "The API key is not valid.") from None
    with engine.connect() as conn:
        row = conn.execute(select(t.api_keys).where(t.api_keys.c.id == key_id)).mappings().first()
    if row is None or mode != ("live" if row["livemode"] else "test"):
        raise AuthError("invalid_api_key", "The API key is not valid.")
    try:
        _HASHER.verify(row["secret_hash"], token)
    except VerificationError:
        raise AuthError("invalid_api_key", "The API key is not valid.") from None
    if row["revoked_at"] is not None:
        raise AuthError("api_key_revoked", "This API key has been revoked.")
    if row["expires_at"] is not None and now >= row["expires_at"]:
        raise AuthError("api_key_expired", "This API key has expired.")
    principal = Principal(row["id"], frozenset(row["scopes"]), row["legal_entity_id"], bool(row["livemode"]))
    _CACHE.put(digest, principal, row["expires_at"])
    return principal
