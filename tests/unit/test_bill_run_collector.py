"""The bill run pauses Python's cyclic garbage collector while it bills a batch, and resumes it after."""

from __future__ import annotations

import gc
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from remit.service_layer import bill_run


@pytest.fixture(autouse=True)
def _collector_restored() -> Iterator[None]:
    enabled = gc.isenabled()
    yield
    (gc.enable if enabled else gc.disable)()


def test_paused_inside_and_resumed_after() -> None:
    gc.enable()
    with bill_run._collector_paused():
        assert not gc.isenabled()
    assert gc.isenabled()


def test_resumed_after_an_error() -> None:
    gc.enable()
    with pytest.raises(RuntimeError), bill_run._collector_paused():
        raise RuntimeError("the batch failed")
    assert gc.isenabled()


def test_a_collector_that_was_off_stays_off() -> None:
    gc.disable()
    with bill_run._collector_paused():
        assert not gc.isenabled()
    assert not gc.isenabled()


def test_overlapping_batches_resume_it_when_the_last_ends() -> None:
    gc.enable()
    first_in, second_in, first_out = threading.Event(), threading.Event(), threading.Event()
    seen: list[bool] = []

    def first() -> None:
        with bill_run._collector_paused():
            first_in.set()
            second_in.wait(5)
        first_out.set()

    def second() -> None:
        first_in.wait(5)
        with bill_run._collector_paused():
            second_in.set()
            first_out.wait(5)
            seen.append(gc.isenabled())  # the first batch has ended, this one still runs

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert seen == [False]
    assert gc.isenabled()


def test_a_batch_is_billed_with_the_collector_paused(monkeypatch: pytest.MonkeyPatch) -> None:
    gc.enable()
    seen: list[bool] = []

    def bill(*_args: Any, **_kwargs: Any) -> list[str]:
        seen.append(gc.isenabled())
        return ["in_1"]

    @contextmanager
    def make_uow() -> Iterator[object]:
        yield object()

    monkeypatch.setattr(bill_run, "bill_customers", bill)
    assert bill_run._bill_batch_with_retry(make_uow, ["cus_1"], None, "billrun_1") == ["in_1"]  # type: ignore[arg-type]
    assert seen == [False]
    assert gc.isenabled()
