"""The gate every /v1 request passes: request id, body limit, authentication, rate limit, idempotency.

A plain ASGI middleware (no per-request task overhead). Errors leave in the same envelope as the routes'.
"""

from __future__ import annotations

import asyncio
import logging
import math
import threading
import time
from collections.abc import Awaitable, Callable, Coroutine, MutableMapping
from typing import Any

from remit.adapters import fastjson
from remit.adapters.db.ids import new_id
from remit.bootstrap import Remit
from remit.entrypoints.api import direct, errors, fast_events
from remit.entrypoints.api.errors import envelope_bytes
from remit.entrypoints.api.threads import in_thread
from remit.service_layer import idempotency
from remit.service_layer.api_keys import AuthError, Principal, authenticate, cached_principal, renew, renewal_due

log = logging.getLogger(__name__)
Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class TokenBuckets:
    """Per-key token buckets: ``rate`` requests a second on average, bursts up to ``burst``."""

    def __init__(self, rate: float, burst: float) -> None:
        self.rate = rate
        self.burst = burst
        self._lock = threading.Lock()
        self._buckets: dict[str, tuple[float, float]] = {}

    def take(self, key: str) -> float:
        """0 when allowed; otherwise the seconds to wait."""
        now = time.monotonic()
        with self._lock:
            tokens, at = self._buckets.get(key, (self.burst, now))
            tokens = min(self.burst, tokens + (now - at) * self.rate)
            if tokens >= 1:
                self._buckets[key] = (tokens - 1, now)
                return 0.0
            self._buckets[key] = (tokens, now)
            return (1 - tokens) / self.rate


class ApiGate:
    def __init__(
        self,
        app: ASGIApp,
        remit: Remit,
        *,
        max_body_bytes: int,
        rate_per_s: float,
        burst: float,
        direct_routes: dict[str, list[direct.DirectRoute]] | None = None,
    ) -> None:
        self.app = app
        self.remit = remit
        self.direct = direct_routes or {}
        self.max_body_bytes = max_body_bytes
        self.buckets = TokenBuckets(rate_per_s, burst)
        self._tasks: set[asyncio.Task[Any]] = set()
        self.events = fast_events.GroupCommit(remit)

    def _in_background(self, work: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.ensure_future(work)
        self._tasks.add(task)  # a reference, so the task is not collected before it ends
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.warning("background work failed", exc_info=task.exception())

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith("/v1"):
            await self.app(scope, receive, send)
            return
        request_id = new_id("req")
        state = scope.setdefault("state", {})
        state["request_id"] = request_id
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}

        async def fail(
            status: int,
            code: str,
            message: str,
            extra: list[tuple[bytes, bytes]] | None = None,
            field: str | None = None,
        ) -> None:
            body = envelope_bytes(code, message, field, request_id)
            await send(
                {
                    "type": "http.response.start",
                    "status": status,
                    "headers": [
                        (b"content-type", b"application/json"),
                        (b"content-length", str(len(body)).encode()),
                        (b"request-id", request_id.encode()),
                        *(extra or []),
                    ],
                }
            )
            await send({"type": "http.response.body", "body": body})

        declared = headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_body_bytes:
            await fail(413, "body_too_large", f"The body is larger than {self.max_body_bytes} bytes.")
            return
        # The pieces joined once at the end: adding each to the whole copied it again (quadratic in the pieces, on
        # the event loop, before the key is even checked).
        pieces: list[bytes] = []
        size = 0
        more = True
        while more:
            message = await receive()
            piece = message.get("body", b"")
            pieces.append(piece)
            size += len(piece)
            more = message.get("more_body", False)
            if size > self.max_body_bytes:
                await fail(413, "body_too_large", f"The body is larger than {self.max_body_bytes} bytes.")
                return
        body = pieces[0] if len(pieces) == 1 else b"".join(pieces)

        parsed: Any = None
        if body and scope["method"] in ("POST", "PUT", "PATCH"):
            # Usage events keep their numbers exactly as sent (a fraction or an exponent parsed as a Decimal).
            loads = fastjson.loads_events if scope["path"] in fast_events.PATHS else fastjson.loads
            try:
                parsed = loads(body)
            except (ValueError, UnicodeDecodeError):  # also JSON nested too deeply to parse
                await fail(400, "invalid_json", "The request body is not valid JSON.")
                return
            if not isinstance(parsed, dict):
                await fail(400, "invalid_json", "The request body must be a JSON object.")
                return
        auth = headers.get("authorization", "")
        if not auth.lower().startswith("bearer ") or not auth[7:].strip():
            await fail(
                401,
                "missing_api_key",
                "Send your API key as `Authorization: Bearer <secret>`.",
                [(b"www-authenticate", b"Bearer")],
            )
            return
        secret, now = auth[7:].strip(), self.remit.clock.now()
        try:
            # A recently verified key is answered from memory here; only a lookup goes to a worker thread.
            principal: Principal | None = cached_principal(secret, now)
            if principal is None:
                principal = await in_thread(authenticate, self.remit.engine, secret, now)
            elif renewal_due(secret):
                self._in_background(in_thread(renew, self.remit.engine, secret, now))
        except AuthError as exc:
            await fail(401, exc.code, exc.message, [(b"www-authenticate", b"Bearer")])
            return
        state["principal"] = principal
        wait = self.buckets.take(principal.key_id)
        if wait > 0:
            retry = str(max(1, math.ceil(wait)))
            await fail(
                429,
                "rate_limited",
                f"Too many requests for this key; retry in {retry} s.",
                [(b"retry-after", retry.encode())],
            )
            return

        key = headers.get("idempotency-key")
        # What the gate answers itself reads a body only as the routes would: sent as JSON.
        json_body = parsed if direct.sent_as_json(headers.get("content-type")) else None
        if (
            scope["method"] == "POST"
            and scope["path"] in fast_events.PATHS
            and not key
            and await fast_events.answer(self.remit, scope["path"], principal, json_body, send, request_id, self.events)
        ):
            return

        replayed = False

        async def replay_receive() -> Message:
            nonlocal replayed
            if replayed:
                return {"type": "http.disconnect"}
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        if scope["method"] != "POST" or not key:
            await self._answer(scope, replay_receive, _with_request_id(send, request_id), principal, json_body, fail)
            return
        if len(key) > 255:
            await fail(
                422, "invalid_idempotency_key", "Idempotency keys are at most 255 characters.", field="Idempotency-Key"
            )
            return
        await self._idempotent(scope, replay_receive, send, principal, key, body, json_body, request_id, fail)

    async def _idempotent(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        principal: Principal,
        key: str,
        body: bytes,
        json_body: Any,
        request_id: str,
        fail: Callable[..., Awaitable[None]],
    ) -> None:
        print_ = idempotency.fingerprint(scope["method"], scope["path"], scope.get("query_string", b"").decode(), body)
        engine = self.remit.engine
        stored = await in_thread(idempotency.claim, engine, principal.key_id, key, print_, self.remit.clock.now())
        if isinstance(stored, idempotency.Stored):
            if stored.fingerprint != print_:
                await fail(
                    409,
                    "idempotency_key_reused",
                    "This idempotency key was used with a different request.",
                    field="Idempotency-Key",
                )
            elif stored.answer_lost:
                await fail(
                    409,
                    "idempotency_answer_lost",
                    "The request with this idempotency key was carried out, but it stopped before its answer was"
                    " stored; it is not done again. Read the object it created or changed to see the result.",
                    field="Idempotency-Key",
                )
            elif stored.status_code is None:
                await fail(
                    409,
                    "idempotency_request_in_progress",
                    "A request with this idempotency key is still running; retry shortly.",
                    [(b"retry-after", b"1")],
                    field="Idempotency-Key",
                )
            else:
                data = (stored.body or "").encode()
                await send(
                    {
                        "type": "http.response.start",
                        "status": stored.status_code,
                        "headers": [
                            (b"content-type", b"application/json"),
                            (b"content-length", str(len(data)).encode()),
                            (b"request-id", request_id.encode()),
                            (b"idempotent-replayed", b"true"),
                        ],
                    }
                )
                await send({"type": "http.response.body", "body": data})
            return
        status = 500
        retry_later = False
        chunks: list[bytes] = []

        async def capture(message: Message) -> None:
            nonlocal status, retry_later
            if message["type"] == "http.response.start":
                status = message["status"]
                retry_later = any(name.lower() == b"retry-after" for name, _ in message.get("headers", []))
                message = {**message, "headers": [*message.get("headers", []), (b"request-id", request_id.encode())]}
            elif message["type"] == "http.response.body":
                chunks.append(message.get("body", b""))
            await send(message)

        try:
            with idempotency.holding(principal.key_id, key, stored):
                await self._answer(scope, receive, capture, principal, json_body, fail)
        finally:
            # A failure on our side (5xx) and a "try again later" (an answer with Retry-After: the test clock is
            # busy) are not stored, so the same request with the same key runs again -- unless its work had
            # committed: then they are stored too (idempotency.release).
            # What failed before the app answered was answered by ``_answer`` directly, past ``capture``.
            sent = b"".join(chunks) or envelope_bytes("internal_error", errors.INTERNAL_ERROR, None, request_id)
            stored_body = _without_secret(scope["path"], status, sent)
            if status >= 500 or retry_later:
                await in_thread(idempotency.release, engine, principal.key_id, key, stored, status, stored_body)
            else:
                await in_thread(idempotency.complete, engine, principal.key_id, key, stored, status, stored_body)

    async def _answer(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        principal: Principal,
        json_body: Any,
        fail: Callable[..., Awaitable[None]],
    ) -> None:
        """The request answered by a direct route or by the app. What either raises unexpectedly (a dropped
        database connection...) is answered, if nothing was sent yet, with a 500 in the error envelope (FastAPI's
        own 500s are: errors.install), then raised on, for the server to log."""
        started = False

        async def tracking(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            if not await direct.answer(self.direct, self.remit, scope, principal, json_body, tracking):
                await self.app(scope, receive, tracking)
        except Exception:
            if not started:
                await fail(500, "internal_error", errors.INTERNAL_ERROR)
            raise


# Responses that hold a credential Remit keeps only as a hash: the idempotency store keeps them without it (a
# replay answers the key with `secret` null), so that no API key secret is ever written in the clear.
SECRET_RESPONSES = ("/v1/api_keys",)


def _without_secret(path: str, status: int, body: bytes) -> str:
    if path not in SECRET_RESPONSES or status >= 300:
        return body.decode()
    data = fastjson.loads(body)
    if isinstance(data, dict) and "secret" in data:
        data["secret"] = None
    return fastjson.dumps_bytes(data).decode()


def _with_request_id(send: Send, request_id: str) -> Send:
    async def wrapped(message: Message) -> None:
        if message["type"] == "http.response.start":
            message = {**message, "headers": [*message.get("headers", []), (b"request-id", request_id.encode())]}
        await send(message)

    return wrapped
