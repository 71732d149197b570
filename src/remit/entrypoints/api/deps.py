"""Route dependencies: the app's Remit, the caller's principal with a scope check, and what it may see."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPBearer

from remit.bootstrap import Remit
from remit.domain.errors import Forbidden
from remit.service_layer.api_keys import Principal
from remit.service_layer.scoping import Visibility
from remit.service_layer.unit_of_work import UnitOfWork

bearer = HTTPBearer(auto_error=False, description="An API key: `Authorization: Bearer rk_live_...`")


@dataclass(frozen=True)
class Ctx:
    remit: Remit
    principal: Principal

    @property
    def vis(self) -> Visibility:
        return Visibility(self.principal.legal_entity_id, self.principal.livemode)

    def uow(self, read_only: bool = False) -> UnitOfWork:
        return self.remit.uow(read_only)

    def require_unscoped(self, what: str) -> None:
        if self.principal.legal_entity_id is not None:
            raise Forbidden("entity_scoped_key", f"{what} needs a key that is not limited to one legal entity.", None)

    def require_live(self, what: str) -> None:
        if not self.principal.livemode:
            raise Forbidden("test_mode_key", f"{what} needs a live-mode key.", None)

    def require_catalog_owner(self, what: str) -> None:
        """The catalog is shared by every legal entity and both modes: changing what exists in it (not adding to
        it) changes what live customers are billed by, so it needs a live key of every legal entity."""
        self.require_live(what)
        self.require_unscoped(what)

    def require_test(self, what: str) -> None:
        if self.principal.livemode:
            raise Forbidden("live_mode_key", f"{what} needs a test-mode key.", None)


def _ctx(scope: str):  # type: ignore[no-untyped-def]
    # async: it does no I/O, and FastAPI would otherwise hand a plain function to a worker thread on every request.
    async def dependency(request: Request, _token: Annotated[object, Depends(bearer)] = None) -> Ctx:
        principal: Principal = request.state.principal  # set by the gate
        if not principal.allows(scope):
            raise Forbidden("insufficient_scope", f"This operation needs the {scope!r} scope.", None)
        return Ctx(request.app.state.remit, principal)

    dependency.remit_scope = scope  # type: ignore[attr-defined]  # read by direct.collect
    return dependency


Read = Annotated[Ctx, Depends(_ctx("read"))]
Write = Annotated[Ctx, Depends(_ctx("write"))]
Admin = Annotated[Ctx, Depends(_ctx("admin"))]
