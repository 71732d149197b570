"""A meter's life after it is created: renamed, deactivated (it takes no new events), reactivated.

What a meter measures (aggregation, field or formula, filters, group-by dimensions, rounding) never changes: every
stored event was checked and reduced by those rules when it arrived, and every billed line was rated from them.
To measure differently, create another meter (and a new plan version that prices it). A deactivated meter refuses
new events (``meter_deactivated``) and new prices, while the events it holds are still billed, explained and listed
as before.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlalchemy import select, update

from remit.adapters.db import tables as t
from remit.domain.errors import NotFound, ValidationError
from remit.service_layer import usage
from remit.service_layer.unit_of_work import UnitOfWork

MAX_NAME = 200


def get_meter(uow: UnitOfWork, code: str) -> dict[str, Any]:
    row = uow.conn.execute(select(t.meters).where(t.meters.c.code == code)).mappings().first()
    if row is None:
        raise NotFound("meter", code, "code", by="code")
    return dict(row)


def _event(uow: UnitOfWork, type_: str, meter: Mapping[str, Any], **data: Any) -> None:
    uow.emit(type_, "meter", meter["id"], {"code": meter["code"], **data})


def rename_meter(uow: UnitOfWork, code: str, name: object) -> dict[str, Any]:
    if not isinstance(name, str) or not 1 <= len(name.strip()) <= MAX_NAME:
        raise ValidationError("invalid_name", f"name is a text of 1 to {MAX_NAME} characters.", "name")
    meter = get_meter(uow, code)
    if meter["name"] != name:
        uow.conn.execute(update(t.meters).where(t.meters.c.code == code).values(name=name))
        _event(uow, "meter.updated", meter, name=name, previous_name=meter["name"])
    return get_meter(uow, code)


def deactivate_meter(uow: UnitOfWork, code: str) -> dict[str, Any]:
    """Refuse the meter's new events from now on (other processes within ``usage.METERS_FRESH_S``). Again: no
    change."""
    return _set_active(uow, code, False)


def reactivate_meter(uow: UnitOfWork, code: str) -> dict[str, Any]:
    return _set_active(uow, code, True)


def _set_active(uow: UnitOfWork, code: str, active: bool) -> dict[str, Any]:
    meter = get_meter(uow, code)
    if (meter["deactivated_at"] is None) != active:
        values = {"deactivated_at": None if active else uow.now}
        uow.conn.execute(update(t.meters).where(t.meters.c.code == code).values(**values))
        _event(uow, "meter.reactivated" if active else "meter.deactivated", meter)
        uow.after_commit(lambda: usage.forget_meters(uow.engine))  # no other thread caches the old row again
    return get_meter(uow, code)
