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
from remit.service_layer.views import utc_time

SCOPES = ("read", "write", "admin")
# OWASP's argon2id minimum: 19 MiB, 2 passes. The tokens are 256-bit random, so this guards a leaked table.
_HASHER = PasswordHasher(time_cost=2, memory_cost=19456, parallelism=1)
CACHE_SECONDS = 30.0
RENEW_AHEAD_SECONDS = 5.0  # a key in use is read again this long before its entry lapses (see renewal_due)


@dataclass(frozen=True, slots=True)
class Principal:
    key_id: str
    scopes: frozenset[str]
    legal_entity_id: str | None
    livemode: bool
    expires_at: datetime | None = None

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
    if expires_at is not None:
        expires_at = utc_time(expires_at, "expires_at")  # without an offset: UTC, like every time the API takes
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
    """Verified secrets, by their SHA-256. An entry is fresh for CACHE_SECONDS; after that the key's row is read
    again (revocation, expiry) before the entry is trusted anew. The argon2 verification is not repeated while
    the row's hash is the one the secret was verified against: that result cannot have changed."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._items: dict[str, tuple[float, Principal, datetime | None]] = {}
        self._verified: dict[str, str] = {}  # digest -> the secret_hash it was verified against
        self._loading: dict[str, threading.Lock] = {}
        self._renewing: set[str] = set()

    def get(self, digest: str) -> tuple[Principal, datetime | None] | None:
        with self._lock:
            item = self._items.get(digest)
        if item is None or item[0] < time.monotonic():
            return None
        return item[1], item[2]

    def put(self, digest: str, principal: Principal, expires_at: datetime | None, secret_hash: str) -> None:
        with self._lock:
            if len(self._items) > 10_000:
                self._items.clear()
                self._verified.clear()
            self._items[digest] = (time.monotonic() + CACHE_SECONDS, principal, expires_at)
            self._verified[digest] = secret_hash
            self._renewing.discard(digest)

    def claim_renewal(self, digest: str) -> bool:
        """True once for an entry that lapses within RENEW_AHEAD_SECONDS: the caller renews it."""
        with self._lock:
            item = self._items.get(digest)
            if item is None or digest in self._renewing or item[0] - time.monotonic() > RENEW_AHEAD_SECONDS:
                return False
            self._renewing.add(digest)
            return True

    def renewal_failed(self, digest: str, forget: bool) -> None:
        with self._lock:
            self._renewing.discard(digest)
            if forget:
                self._items.pop(digest, None)

    def verified(self, digest: str, secret_hash: str) -> bool:
        with self._lock:
            return self._verified.get(digest) == secret_hash

    def loading(self, digest: str) -> threading.Lock:
        """One lock per secret, so that many requests arriving together with an unknown or lapsed secret read
        and verify it once, not once each (argon2 is slow by design)."""
        with self._lock:
            if len(self._loading) > 10_000:
                self._loading.clear()
            return self._loading.setdefault(digest, threading.Lock())

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
            self._verified.clear()
            self._renewing.clear()


_CACHE = _Cache()


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def cached_principal(secret: str, now: datetime) -> Principal | None:
    """The principal for a secret verified within the last CACHE_SECONDS, without touching the database (safe to
    call on the event loop); None when it must be looked up with ``authenticate``."""
    cached = _CACHE.get(_digest(secret))
    if cached is None:
        return None
    principal, expires_at = cached
    if expires_at is not None and now >= expires_at:
        raise AuthError("api_key_expired", "This API key has expired.")
    return principal


def renewal_due(secret: str) -> bool:
    """Whether this request should have a key in use read again (``renew``) before its entry lapses; true for one
    request at a time. Renewed ahead, a busy key's entry never lapses, so no request waits on the database for it,
    and what the entry says (revoked, expired) is never older than CACHE_SECONDS."""
    return _CACHE.claim_renewal(_digest(secret))


def renew(engine: Engine, secret: str, now: datetime) -> None:
    """Read a cached key's row again. A key revoked or expired since is forgotten: the next request with it is
    refused by ``authenticate``."""
    digest = _digest(secret)
    try:
        with _CACHE.loading(digest):
            _load(engine, secret, digest, now)
    except AuthError:
        _CACHE.renewal_failed(digest, forget=True)
    except BaseException:
        _CACHE.renewal_failed(digest, forget=False)  # e.g. the database is away: the entry lapses as usual
        raise


def authenticate(engine: Engine, secret: str, now: datetime) -> Principal:
    """The principal a secret stands for; AuthError when it is unknown, wrong, revoked or expired."""
    digest = _digest(secret)
    principal = cached_principal(secret, now)
    if principal is not None:
        return principal
    with _CACHE.loading(digest):
        principal = cached_principal(secret, now)  # another request may have just loaded it
        if principal is not None:
            return principal
        return _load(engine, secret, digest, now)


def _load(engine: Engine, secret: str, digest: str, now: datetime) -> Principal:
    try:
        mode, rest = secret.removeprefix("rk_").split("_", 1)
        key_id, token = rest.split(".", 1)
    except ValueError:
        raise AuthError("invalid_api_key", "The API key is not valid.") from None
    with engine.connect() as conn:
        if engine.dialect.name == "postgresql":
            conn.execution_options(isolation_level="AUTOCOMMIT")  # one statement: no BEGIN, no ROLLBACK
        row = conn.execute(select(t.api_keys).where(t.api_keys.c.id == key_id)).mappings().first()
    if row is None or mode != ("live" if row["livemode"] else "test"):
        raise AuthError("invalid_api_key", "The API key is not valid.")
    if not _CACHE.verified(digest, row["secret_hash"]):
        try:
            _HASHER.verify(row["secret_hash"], token)
        except VerificationError:
            raise AuthError("invalid_api_key", "The API key is not valid.") from None
    if row["revoked_at"] is not None:
        raise AuthError("api_key_revoked", "This API key has been revoked.")
    if row["expires_at"] is not None and now >= row["expires_at"]:
        raise AuthError("api_key_expired", "This API key has expired.")
    principal = Principal(
        row["id"], frozenset(row["scopes"]), row["legal_entity_id"], bool(row["livemode"]), row["expires_at"]
    )
    _CACHE.put(digest, principal, row["expires_at"], row["secret_hash"])
    return principal
