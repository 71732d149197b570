"""The API's hand-off to worker threads (entrypoints/api/threads.py): results, errors, and a cancelled request
that still waits for its thread's work to end."""

from __future__ import annotations

import asyncio
import threading

import pytest

from remit.entrypoints.api.threads import in_thread


def test_the_result_and_the_exception_come_back() -> None:
    def add(a: int, b: int, *, times: int = 1) -> int:
        return (a + b) * times

    def fail() -> None:
        raise ValueError("no")

    async def main() -> None:
        assert await in_thread(add, 1, 2) == 3
        assert await in_thread(add, 1, 2, times=3) == 9
        with pytest.raises(ValueError, match="no"):
            await in_thread(fail)
        assert await in_thread(threading.current_thread) is not threading.current_thread()

    asyncio.run(main())


def test_a_cancelled_hand_off_waits_for_its_thread_before_the_cancellation_goes_on() -> None:
    started, release = threading.Event(), threading.Event()
    finished: list[str] = []

    def work() -> None:
        started.set()
        release.wait(5)
        finished.append("committed")

    async def main() -> None:
        task = asyncio.ensure_future(in_thread(work))
        while not started.is_set():
            await asyncio.sleep(0.001)
        task.cancel()
        await asyncio.sleep(0.05)
        assert not task.done()  # the work is still running: the task has not given up on it
        task.cancel()  # a second cancellation changes nothing
        await asyncio.sleep(0.01)
        assert not task.done()
        release.set()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert finished == ["committed"]  # the cancellation went on only after the work ended

    asyncio.run(main())
