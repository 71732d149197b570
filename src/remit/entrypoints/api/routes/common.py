"""Paging, filters and expand parameters shared by every list."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import Query

from remit.service_layer.views import Filters

Limit = Annotated[int, Query(ge=1, le=100, description="Objects per page.")]
StartingAfter = Annotated[str | None, Query(max_length=40, description="The last id of the previous page.")]
CustomerFilter = Annotated[str | None, Query(max_length=40)]
StatusFilter = Annotated[str | None, Query(max_length=32)]
CreatedGte = Annotated[datetime | None, Query(description="Created at or after (ISO 8601).")]
CreatedLte = Annotated[datetime | None, Query(description="Created at or before (ISO 8601).")]
Expand = Annotated[list[str] | None, Query(description="Related objects to include, e.g. `customer`.")]


def page(rows: list[Any], limit: int) -> dict[str, Any]:
    return {"object": "list", "data": rows[:limit], "has_more": len(rows) > limit}


def filters(customer: str | None, status: str | None, gte: datetime | None, lte: datetime | None) -> Filters:
    return Filters(customer_id=customer, status=status, created_gte=gte, created_lte=lte)
