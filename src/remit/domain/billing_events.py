"""Subscription timelines: the one input invoicing reads (Kill Bill's *junction*).

A subscription is stored as an append-only list of dated events: it started with these items, changed to those
items, paused, resumed, was canceled. Scheduled changes and phases are simply events dated in the future. This
module turns that list into *segments*: maximal date ranges with the same items and the same billable state.
Nothing here reads a clock or a database.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from enum import Enum

from remit.domain.errors import ValidationError
from remit.domain.lifecycle import SubscriptionStatus


class ChangeKind(str, Enum):
    START = "start"
    CHANGE = "change"  # new items / quantities (upgrade, downgrade, seats, phase)
    PAUSE = "pause"
    RESUME = "resume"
    CANCEL = "cancel"


@dataclass(frozen=True, slots=True)
class Item:
    price_id: str
    quantity: Decimal


@dataclass(frozen=True, slots=True)
class TimelineEvent:
    effective_on: date
    kind: ChangeKind
    items: tuple[Item, ...] = ()
    seq: int = 0  # order of events on the same day: the order they were recorded


@dataclass(frozen=True, slots=True)
class Segment:
    start_on: date
    end_on: date | None  # exclusive; None = open-ended
    items: tuple[Item, ...]
    status: SubscriptionStatus

    @property
    def billable(self) -> bool:
        return self.status is SubscriptionStatus.ACTIVE


def build_segments(events: Sequence[TimelineEvent], trial_end_on: date | None = None) -> list[Segment]:
    """Fold the event list into consecutive segments. Zero-length segments are dropped."""
    ordered = sorted(events, key=lambda e: (e.effective_on, e.seq))
    if not ordered or ordered[0].kind is not ChangeKind.START:
        raise ValidationError("invalid_timeline", "A subscription's first event must be its start.", "events")
    boundaries: list[tuple[date, tuple[Item, ...], bool, bool]] = []  # (from, items, paused, canceled)
    items: tuple[Item, ...] = ()
    paused = False
    for event in ordered:
        if event.kind in (ChangeKind.START, ChangeKind.CHANGE):
            items = event.items
        elif event.kind is ChangeKind.PAUSE:
            paused = True
        elif event.kind is ChangeKind.RESUME:
            paused = False
        boundaries.append((event.effective_on, items, paused, event.kind is ChangeKind.CANCEL))
        if event.kind is ChangeKind.CANCEL:
            break
    cut_points = sorted({b[0] for b in boundaries} | ({trial_end_on} if trial_end_on else set()))
    segments: list[Segment] = []
    state_index = 0
    for i, start in enumerate(cut_points):
        while state_index + 1 < len(boundaries) and boundaries[state_index + 1][0] <= start:
            state_index += 1
        if boundaries[state_index][0] > start:
            continue  # before the start
        _, seg_items, seg_paused, canceled = boundaries[state_index]
        if canceled:
            break
        end = cut_points[i + 1] if i + 1 < len(cut_points) else None
        if trial_end_on is not None and start < trial_end_on:
            status = SubscriptionStatus.PAUSED if seg_paused else SubscriptionStatus.TRIALING
        else:
            status = SubscriptionStatus.PAUSED if seg_paused else SubscriptionStatus.ACTIVE
        if end is not None and end <= start:
            continue
        segments.append(Segment(start, end, seg_items, status))
    return _merge(segments)


def _merge(segments: Iterable[Segment]) -> list[Segment]:
    merged: list[Segment] = []
    for seg in segments:
        if (
            merged
            and merged[-1].end_on == seg.start_on
            and merged[-1].items == seg.items
            and (merged[-1].status is seg.status)
        ):
            merged[-1] = Segment(merged[-1].start_on, seg.end_on, seg.items, seg.status)
        else:
            merged.append(seg)
    return merged


def status_on(events: Sequence[TimelineEvent], trial_end_on: date | None, on: date) -> SubscriptionStatus:
    """The subscription's state on a day, derived from its timeline."""
    segments = build_segments(events, trial_end_on)
    for seg in segments:
        if seg.start_on <= on and (seg.end_on is None or on < seg.end_on):
            return seg.status
    if segments and on < segments[0].start_on:
        return segments[0].status
    return SubscriptionStatus.CANCELED


def status_since(events: Sequence[TimelineEvent], trial_end_on: date | None, on: date) -> date | None:
    """The day the state the subscription is in on ``on`` began (it has held without a break since): the day of
    its cancellation, pause, resume or trial end. None if it has held since before the start (``on`` is before it)."""
    status = status_on(events, trial_end_on, on)
    if status is SubscriptionStatus.CANCELED:
        return ended_on(events)
    since: date | None = None
    for seg in build_segments(events, trial_end_on):
        if seg.start_on > on:
            break
        if seg.status is not status:
            since = None
        elif since is None:
            since = seg.start_on
    return since


def ended_on(events: Sequence[TimelineEvent]) -> date | None:
    """The day the subscription stops (its cancellation's effective date), if one is recorded."""
    for event in events:
        if event.kind is ChangeKind.CANCEL:
            return event.effective_on
    return None


def items_on(events: Sequence[TimelineEvent], on: date) -> tuple[Item, ...]:
    """The items in force on a day (the last start/change on or before it)."""
    items: tuple[Item, ...] = ()
    for event in sorted(events, key=lambda e: (e.effective_on, e.seq)):
        if event.effective_on > on:
            break
        if event.kind in (ChangeKind.START, ChangeKind.CHANGE):
            items = event.items
    return items


def next_change_on(
    events: Sequence[TimelineEvent], trial_end_on: date | None, period_end_on: date, after_on: date
) -> date | None:
    """The first day after ``after_on`` on which something may fall due: a period boundary, the trial's end or
    a scheduled event. ``period_end_on`` is the end of the period containing ``after_on``. None once ended."""
    end = ended_on(events)
    if end is not None and after_on >= end:
        return None
    candidates = [e.effective_on for e in events if e.effective_on > after_on]
    if trial_end_on is not None and trial_end_on > after_on:
        candidates.append(trial_end_on)
    candidates.append(period_end_on)
    return min(candidates)
