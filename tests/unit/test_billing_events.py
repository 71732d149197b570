"""Timelines to segments: the only input invoicing reads."""

from __future__ import annotations

from datetime import date
from decimal import Decimal

import pytest

from remit.domain.billing_events import (
    ChangeKind,
    Item,
    Segment,
    TimelineEvent,
    build_segments,
    ended_on,
    items_on,
    next_change_on,
    status_on,
    status_since,
)
from remit.domain.errors import ValidationError
from remit.domain.lifecycle import SubscriptionStatus

ACTIVE, TRIALING, PAUSED, CANCELED = (
    SubscriptionStatus.ACTIVE,
    SubscriptionStatus.TRIALING,
    SubscriptionStatus.PAUSED,
    SubscriptionStatus.CANCELED,
)
BASIC = (Item("basic", Decimal(1)),)
PRO = (Item("pro", Decimal(1)),)
LITE = (Item("lite", Decimal(1)),)
D = date
MARCH_1 = D(2026, 3, 1)


def ev(on: date, kind: ChangeKind, items=(), seq: int = 0) -> TimelineEvent:
    return TimelineEvent(on, kind, items, seq)


def start(on: date = MARCH_1, items=BASIC) -> TimelineEvent:
    return ev(on, ChangeKind.START, items, 0)


def test_a_start_alone_is_one_open_active_segment():
    assert build_segments([start()]) == [Segment(D(2026, 3, 1), None, BASIC, ACTIVE)]


def test_a_trial_splits_the_first_segment():
    assert build_segments([start(D(2026, 4, 1))], trial_end_on=D(2026, 4, 6)) == [
        Segment(D(2026, 4, 1), D(2026, 4, 6), BASIC, TRIALING),
        Segment(D(2026, 4, 6), None, BASIC, ACTIVE),
    ]


def test_a_change_during_the_trial_keeps_the_trial_then_bills_the_new_items():
    events = [start(D(2026, 4, 1)), ev(D(2026, 4, 3), ChangeKind.CHANGE, PRO, 1)]
    assert build_segments(events, trial_end_on=D(2026, 4, 6)) == [
        Segment(D(2026, 4, 1), D(2026, 4, 3), BASIC, TRIALING),
        Segment(D(2026, 4, 3), D(2026, 4, 6), PRO, TRIALING),
        Segment(D(2026, 4, 6), None, PRO, ACTIVE),
    ]


def test_pause_and_resume():
    events = [start(), ev(D(2026, 3, 10), ChangeKind.PAUSE, seq=1), ev(D(2026, 3, 20), ChangeKind.RESUME, seq=2)]
    segments = build_segments(events)
    assert segments == [
        Segment(D(2026, 3, 1), D(2026, 3, 10), BASIC, ACTIVE),
        Segment(D(2026, 3, 10), D(2026, 3, 20), BASIC, PAUSED),
        Segment(D(2026, 3, 20), None, BASIC, ACTIVE),
    ]
    assert [s.billable for s in segments] == [True, False, True]


def test_a_change_while_paused_takes_effect_on_resumption():
    events = [
        start(),
        ev(D(2026, 3, 10), ChangeKind.PAUSE, seq=1),
        ev(D(2026, 3, 15), ChangeKind.CHANGE, PRO, 2),
        ev(D(2026, 3, 20), ChangeKind.RESUME, seq=3),
    ]
    assert build_segments(events) == [
        Segment(D(2026, 3, 1), D(2026, 3, 10), BASIC, ACTIVE),
        Segment(D(2026, 3, 10), D(2026, 3, 15), BASIC, PAUSED),
        Segment(D(2026, 3, 15), D(2026, 3, 20), PRO, PAUSED),
        Segment(D(2026, 3, 20), None, PRO, ACTIVE),
    ]


def test_a_pause_during_the_trial():
    events = [start(D(2026, 4, 1)), ev(D(2026, 4, 3), ChangeKind.PAUSE, seq=1)]
    assert build_segments(events, trial_end_on=D(2026, 4, 6)) == [
        Segment(D(2026, 4, 1), D(2026, 4, 3), BASIC, TRIALING),
        Segment(D(2026, 4, 3), None, BASIC, PAUSED),
    ]


def test_cancel_ends_the_timeline_and_later_events_are_ignored():
    events = [
        start(),
        ev(D(2026, 3, 15), ChangeKind.CANCEL, seq=1),
        ev(D(2026, 3, 20), ChangeKind.CHANGE, PRO, 2),
    ]
    assert build_segments(events) == [Segment(D(2026, 3, 1), D(2026, 3, 15), BASIC, ACTIVE)]
    assert ended_on(events) == D(2026, 3, 15)
    assert status_on(events, None, D(2026, 3, 14)) is ACTIVE
    assert status_on(events, None, D(2026, 3, 15)) is CANCELED


def test_cancel_during_the_trial():
    events = [start(D(2026, 4, 1)), ev(D(2026, 4, 3), ChangeKind.CANCEL, seq=1)]
    assert build_segments(events, trial_end_on=D(2026, 4, 6)) == [
        Segment(D(2026, 4, 1), D(2026, 4, 3), BASIC, TRIALING)
    ]


def test_cancel_on_the_start_day_leaves_nothing():
    events = [start(), ev(D(2026, 3, 1), ChangeKind.CANCEL, seq=1)]
    assert build_segments(events) == []
    assert status_on(events, None, D(2026, 3, 1)) is CANCELED


@pytest.mark.parametrize("given_order", ["recorded", "reversed"])
def test_events_on_the_same_day_apply_in_seq_order(given_order):
    events = [start(), ev(D(2026, 3, 10), ChangeKind.CHANGE, PRO, 1), ev(D(2026, 3, 10), ChangeKind.CHANGE, LITE, 2)]
    if given_order == "reversed":
        events = list(reversed(events))
    assert build_segments(events) == [
        Segment(D(2026, 3, 1), D(2026, 3, 10), BASIC, ACTIVE),
        Segment(D(2026, 3, 10), None, LITE, ACTIVE),  # the later-recorded change wins
    ]
    assert items_on(events, D(2026, 3, 10)) == LITE


def test_pause_then_resume_on_the_same_day_is_no_pause():
    events = [start(), ev(D(2026, 3, 10), ChangeKind.PAUSE, seq=1), ev(D(2026, 3, 10), ChangeKind.RESUME, seq=2)]
    assert build_segments(events) == [Segment(D(2026, 3, 1), None, BASIC, ACTIVE)]


def test_resume_then_pause_on_the_same_day_pauses():
    events = [
        start(),
        ev(D(2026, 3, 5), ChangeKind.PAUSE, seq=1),
        ev(D(2026, 3, 10), ChangeKind.RESUME, seq=2),
        ev(D(2026, 3, 10), ChangeKind.PAUSE, seq=3),
    ]
    assert build_segments(events) == [
        Segment(D(2026, 3, 1), D(2026, 3, 5), BASIC, ACTIVE),
        Segment(D(2026, 3, 5), None, BASIC, PAUSED),
    ]


def test_a_change_on_the_start_day_replaces_the_starting_items():
    events = [start(), ev(D(2026, 3, 1), ChangeKind.CHANGE, PRO, 1)]
    assert build_segments(events) == [Segment(D(2026, 3, 1), None, PRO, ACTIVE)]


def test_a_change_to_the_same_items_does_not_split_a_segment():
    events = [start(), ev(D(2026, 3, 10), ChangeKind.CHANGE, BASIC, 1)]
    assert build_segments(events) == [Segment(D(2026, 3, 1), None, BASIC, ACTIVE)]


def test_a_quantity_change_splits_a_segment():
    seats = (Item("seat", Decimal(5)),)
    events = [start(items=(Item("seat", Decimal(3)),)), ev(D(2026, 3, 10), ChangeKind.CHANGE, seats, 1)]
    assert [s.items for s in build_segments(events)] == [(Item("seat", Decimal(3)),), seats]


@pytest.mark.parametrize(
    "events",
    [[], [ev(D(2026, 3, 1), ChangeKind.CHANGE, BASIC)], [start(D(2026, 3, 5)), ev(D(2026, 3, 1), ChangeKind.PAUSE)]],
)
def test_a_timeline_must_begin_with_its_start(events):
    with pytest.raises(ValidationError) as raised:
        build_segments(events)
    assert raised.value.code == "invalid_timeline"


def test_status_before_the_start_is_the_first_segments():
    assert status_on([start(D(2026, 4, 1))], D(2026, 4, 6), D(2026, 3, 20)) is TRIALING
    assert status_on([start(D(2026, 4, 1))], None, D(2026, 3, 20)) is ACTIVE


def test_next_change_is_the_earliest_of_events_trial_end_and_period_end():
    events = [start(D(2026, 4, 1)), ev(D(2026, 4, 20), ChangeKind.CHANGE, PRO, 1)]
    assert next_change_on(events, D(2026, 4, 6), D(2026, 5, 1), D(2026, 4, 1)) == D(2026, 4, 6)
    assert next_change_on(events, D(2026, 4, 6), D(2026, 5, 1), D(2026, 4, 6)) == D(2026, 4, 20)
    assert next_change_on(events, D(2026, 4, 6), D(2026, 5, 1), D(2026, 4, 20)) == D(2026, 5, 1)
    ended = [*events, ev(D(2026, 4, 25), ChangeKind.CANCEL, seq=2)]
    assert next_change_on(ended, None, D(2026, 5, 1), D(2026, 4, 20)) == D(2026, 4, 25)
    assert next_change_on(ended, None, D(2026, 5, 1), D(2026, 4, 25)) is None


def test_status_since_is_the_day_the_current_state_began_across_item_changes():
    pro = (Item("pro", Decimal(1)),)
    events = [
        TimelineEvent(date(2026, 1, 1), ChangeKind.START, BASIC, 0),
        TimelineEvent(date(2026, 1, 10), ChangeKind.PAUSE, (), 1),
        TimelineEvent(date(2026, 1, 12), ChangeKind.CHANGE, pro, 2),  # a change while paused: still paused
        TimelineEvent(date(2026, 1, 20), ChangeKind.RESUME, (), 3),
        TimelineEvent(date(2026, 2, 1), ChangeKind.CANCEL, (), 4),
    ]
    trial_end = date(2026, 1, 5)
    assert status_since(events, trial_end, date(2026, 1, 3)) == date(2026, 1, 1)  # trialing since the start
    assert status_since(events, trial_end, date(2026, 1, 7)) == trial_end  # active since the trial's end
    assert status_since(events, trial_end, date(2026, 1, 15)) == date(2026, 1, 10)
    assert status_since(events, trial_end, date(2026, 1, 25)) == date(2026, 1, 20)
    assert status_since(events, trial_end, date(2026, 3, 1)) == date(2026, 2, 1)
