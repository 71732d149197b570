"""Identifiers: a short type prefix and 24 hex digits (``cus_0193f2c4a1b07e3c9d2f55a1``), readable in logs and URLs.

The digits are time-ordered: 12 of milliseconds since the Unix epoch, then 12 that start at a random value for
each millisecond and count up within a process. So ids made later sort later (within a process strictly; across
processes to the millisecond), and a table's primary-key index grows at its right edge, as with an identity
column: a bill run writing a million invoices touches a few recent index pages instead of random pages all over
an index larger than the database's cache (which is what made the cost per invoice grow with the table). Two
processes collide only if they draw overlapping 48-bit ranges in the same millisecond. Ids are not secrets (API
key secrets come from ``secrets``) and carry no meaning beyond that order; nothing may depend on their time part.

The random part is drawn from ``os.urandom`` a few thousand at a time (one system call per id cost, and it let go
of the GIL: a thread making ids for a batch handed the interpreter to another thread once per id); a forked child
draws its own.
"""

from __future__ import annotations

import os
import threading
import time

_REFILL = 4096
_SPAN = 1 << 48
_lock = threading.Lock()
_seeds: list[int] = []
_pid = 0
_last_ms = -1
_next = 0


def _urandom(n: int) -> bytes:
    """A seam for tests that want repeatable ids."""
    return os.urandom(n)


def _seed() -> int:
    """A random start for a millisecond's counter, in the lower half of the range: a millisecond can hand out 2**47
    ids before it would overflow."""
    global _pid
    if not _seeds or _pid != os.getpid():
        raw = _urandom(6 * _REFILL)
        _seeds[:] = [int.from_bytes(raw[i : i + 6], "big") >> 1 for i in range(0, len(raw), 6)]
        _pid = os.getpid()
    return _seeds.pop()


def _take(n: int) -> tuple[int, int]:
    """The millisecond and the first counter value of ``n`` consecutive ids (under the lock)."""
    global _last_ms, _next
    ms = time.time_ns() // 1_000_000
    if ms <= _last_ms:  # the same millisecond (or the clock stepped back): keep counting on the last one
        ms = _last_ms
        if _next + n >= _SPAN:  # this millisecond is used up: borrow the next one
            ms, _next = ms + 1, _seed()
    else:
        _next = _seed()
    _last_ms = ms
    first = _next
    _next += n
    return ms, first


def new_id(prefix: str) -> str:
    with _lock:
        ms, value = _take(1)
    return f"{prefix}_{ms:012x}{value:012x}"


def new_ids(prefix: str, n: int) -> list[str]:
    """``n`` new ids at once, in increasing order."""
    if n <= 0:
        return []
    with _lock:
        ms, first = _take(n)
    head = f"{prefix}_{ms:012x}"
    return [f"{head}{value:012x}" for value in range(first, first + n)]
