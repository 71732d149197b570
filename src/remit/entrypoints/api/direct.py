"""Routes the gate may answer itself: the busiest plain requests, without FastAPI's routing, dependency and
middleware layers, which on a 2-core server cost as much CPU per request as the request's own work does.

A route opts in with `@threaded` (below, under its FastAPI decorator); one with query parameters is left to
FastAPI. It stays an ordinary FastAPI route, the one in the OpenAPI document, and answers everything the gate
passes on; the gate answers a request to it directly only in the plain case, with the same objects FastAPI
would use:

- the path matches the route's own pattern (its parameters are strings) and there is no query string;
- the key has the route's scope (`deps.Read`, `Write`, `Admin`);
- the body, if the route takes one, is JSON as FastAPI would read it (its Content-Type) and passes the route's
  own body model.

It then calls the route's function on a worker thread, validates and serialises the result with the route's own
response field, and answers with the route's status. A `RemitError` is answered with the API's error envelope, as
the app's handler would. Anything else (a missing scope, an invalid body, a query string) is declined before
the function runs, and FastAPI answers it as it always has: its 403s and 422s are written in one place.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Iterable, MutableMapping
from dataclasses import dataclass
from typing import Any, TypeVar

from fastapi import APIRouter
from fastapi.datastructures import DefaultPlaceholder
from fastapi.routing import APIRoute

from remit.bootstrap import Remit
from remit.domain.errors import RemitError
from remit.entrypoints.api import errors
from remit.entrypoints.api.deps import Ctx
from remit.entrypoints.api.threads import in_thread
from remit.service_layer.api_keys import Principal

Scope = MutableMapping[str, Any]
Send = Callable[[MutableMapping[str, Any]], Any]
F = TypeVar("F", bound=Callable[..., Any])
_JSON = (b"content-type", b"application/json")


def threaded(fn: F) -> F:
    """The route function ``fn`` as an async endpoint that runs it on the API's worker threads (threads.py;
    FastAPI sees ``fn``'s own signature): all of ``fn``'s database work in one hand-off, and the gate may call
    ``fn`` itself."""

    @functools.wraps(fn)
    async def endpoint(*args: Any, **kwargs: Any) -> Any:
        return await in_thread(fn, *args, **kwargs)

    endpoint.remit_direct = fn  # type: ignore[attr-defined]
    return endpoint  # type: ignore[return-value]


@dataclass(frozen=True)
class DirectRoute:
    path: re.Pattern[str]
    scope: str
    body: Any  # the route's body field (a FastAPI ModelField), or None
    response: Any  # the route's response field
    status: int
    call: Callable[..., Any]
    dump: dict[str, Any]  # the route's response_model_* options, as FastAPI passes them to the serialiser


def collect(routers: Iterable[APIRouter], prefix: str) -> dict[str, list[DirectRoute]]:
    """The ``@threaded`` routes of ``routers`` (mounted under ``prefix``, included in this order), by HTTP method.

    FastAPI gives a request to the first route that matches it; the gate looks only at the direct routes. So a
    direct route may not match the path of a route FastAPI would try before it (``/customers/{id}`` after a
    ``/customers/search``): that is refused here, when the app is built."""
    out: dict[str, list[DirectRoute]] = {}
    earlier: list[tuple[set[str], str]] = []  # every route so far: its methods, and a path it answers
    for router in routers:
        for route in router.routes:
            if not isinstance(route, APIRoute):
                continue
            methods = set(route.methods or ())
            call = getattr(route.endpoint, "remit_direct", None)
            if call is not None and not route.dependant.query_params:  # with query parameters: left to FastAPI
                found = _direct(route, call, prefix)
                for other_methods, path in earlier:
                    if methods & other_methods and found.path.match(path):
                        raise TypeError(f"{route.path}: a direct route may not shadow {path}, which comes first")
                for method in methods:
                    out.setdefault(method, []).append(found)
            earlier.append((methods, prefix + re.sub(r"\{[^}]+\}", "x", route.path)))
    return out


def _direct(route: APIRoute, call: Callable[..., Any], prefix: str) -> DirectRoute:
    dependant = route.dependant
    scopes = [getattr(d.call, "remit_scope", None) for d in dependant.dependencies]
    where = f"{sorted(route.methods or ())} {route.path}"
    if len(scopes) != 1 or scopes[0] is None:
        raise TypeError(f"{where}: a direct route takes exactly one dependency, the key's scope (deps.Read etc.)")
    if dependant.header_params or dependant.cookie_params:
        raise TypeError(f"{where}: a direct route takes no header or cookie parameters")
    if any(p.field_info.annotation is not str for p in dependant.path_params):
        raise TypeError(f"{where}: a direct route's path parameters are strings")
    if route.response_field is None:
        raise TypeError(f"{where}: a direct route declares its response model")
    if not isinstance(route.response_class, DefaultPlaceholder):
        raise TypeError(f"{where}: a direct route answers JSON, FastAPI's default response class")
    if not isinstance(route.strict_content_type, DefaultPlaceholder) and not route.strict_content_type:
        raise TypeError(f"{where}: a direct route reads a body only when sent as JSON (FastAPI's strict default)")
    pattern = re.compile("^" + re.escape(prefix) + route.path_regex.pattern.removeprefix("^"))
    return DirectRoute(
        path=pattern,
        scope=scopes[0],
        body=route.body_field,
        response=route.response_field,
        status=route.status_code or 200,  # FastAPI's default
        call=call,
        dump={
            "include": route.response_model_include,
            "exclude": route.response_model_exclude,
            "by_alias": route.response_model_by_alias,
            "exclude_unset": route.response_model_exclude_unset,
            "exclude_defaults": route.response_model_exclude_defaults,
            "exclude_none": route.response_model_exclude_none,
        },
    )


async def answer(
    routes: dict[str, list[DirectRoute]], remit: Remit, scope: Scope, principal: Principal, body: Any, send: Send
) -> bool:
    """Answer the request and return True, or return False having done nothing (the routes answer it).
    ``body``: the parsed body when it was sent as JSON (``sent_as_json``), otherwise None."""
    candidates = routes.get(scope["method"])
    if not candidates or scope.get("query_string"):
        return False
    for route in candidates:
        match = route.path.match(scope["path"])
        if match is not None:
            break
    else:
        return False
    if not principal.allows(route.scope):
        return False
    kwargs: dict[str, Any] = match.groupdict()
    if route.body is not None:
        if body is None:
            return False
        value, problems = route.body.validate(body, {}, loc=("body",))
        if problems:
            return False
        kwargs[route.body.name] = value
    kwargs["ctx"] = Ctx(remit, principal)
    try:
        result = await in_thread(route.call, **kwargs)
    except RemitError as exc:  # as the app's handler answers it (errors.install)
        failed = errors.envelope(errors.STATUS[exc.kind], exc.code, exc.message, exc.field, _id(scope))
        status, data, headers = failed.status_code, bytes(failed.body), failed.raw_headers
    except Exception as exc:
        if not errors.unstorable_text(exc):
            raise
        failed = errors.envelope(422, "invalid_text", errors.INVALID_TEXT, None, _id(scope))
        status, data, headers = failed.status_code, bytes(failed.body), failed.raw_headers
    else:
        value, problems = route.response.validate(result, {}, loc=("response",))
        if problems:
            raise ValueError(f"{scope['method']} {scope['path']}: the response does not match its model: {problems}")
        data = route.response.serialize_json(value, **route.dump)
        status, headers = route.status, [(b"content-length", str(len(data)).encode()), _JSON]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": data})
    return True


def sent_as_json(content_type: str | None) -> bool:
    """Whether FastAPI reads a body with this Content-Type as JSON (strictly, its default): application/json or
    application/*+json; a body without a Content-Type is not."""
    if content_type is None:
        return False
    maintype, _, subtype = content_type.split(";", 1)[0].strip().lower().partition("/")
    return maintype == "application" and (subtype == "json" or subtype.endswith("+json"))


def _id(scope: Scope) -> str | None:
    request_id: str | None = scope.get("state", {}).get("request_id")
    return request_id
