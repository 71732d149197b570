"""How the API's group commit forms groups and cuts their results back (no database: see
tests/e2e/api/test_event_group_commit.py for the writes)."""

from __future__ import annotations

from collections import deque
from typing import Any

from remit.entrypoints.api import fast_events
from remit.service_layer import usage
from remit.service_layer.scoping import Visibility


def _waiting(name: str, size: int) -> Any:
    return fast_events._Waiting([{"transaction_id": f"{name}{i}"} for i in range(size)], None)  # type: ignore[arg-type]


def test_a_group_takes_the_oldest_requests_of_one_visibility_up_to_a_batch():
    group = fast_events.GroupCommit(remit=None)  # type: ignore[arg-type]
    a, b = Visibility("ent_a", True), Visibility("ent_b", True)
    group._waiting = {a: deque([_waiting("a", 600), _waiting("c", 400), _waiting("d", 1)])}
    group._waiting[b] = deque([_waiting("b", 5)])
    vis, first = group._take()
    assert vis == a and [len(w.events) for w in first] == [600, 400]  # 1,000 events: the batch limit
    vis, second = group._take()
    assert vis == b  # the other visibility's turn, though a still waits
    vis, third = group._take()
    assert vis == a and [w.events[0]["transaction_id"] for w in third] == ["d0"]
    assert group._waiting == {}


def test_a_grouped_result_is_cut_back_into_each_requests():
    result = usage.IngestResult(
        accepted=[{"index": 0, "transaction_id": "a", "id": "1"}, {"index": 3, "transaction_id": "d", "id": "2"}],
        duplicates=[{"index": 2, "transaction_id": "c"}],
        rejected=[{"index": 1, "transaction_id": "b", "error": {"code": "x"}}],
    )
    first, second, third = fast_events._split(result, [2, 1, 1])
    assert first.accepted == [{"index": 0, "transaction_id": "a", "id": "1"}]
    assert first.rejected == [{"index": 1, "transaction_id": "b", "error": {"code": "x"}}]
    assert second.duplicates == [{"index": 0, "transaction_id": "c"}] and not second.accepted
    assert third.accepted == [{"index": 0, "transaction_id": "d", "id": "2"}]
