"""Ids are unique and time-ordered: later ids sort later, so indexes grow at their right edge."""

import os
import time

from remit.adapters.db import ids


def test_ids_made_later_sort_later_and_never_repeat():
    made = [ids.new_id("in") for _ in range(5000)] + ids.new_ids("in", 5000) + [ids.new_id("in")]
    assert made == sorted(made)
    assert len(set(made)) == len(made)
    assert all(len(i) == len("in_") + 24 for i in made)


def test_a_batch_is_consecutive_and_the_next_id_follows_it():
    batch = ids.new_ids("uev", 3)
    after = ids.new_id("uev")
    assert batch == sorted(batch) and batch[-1] < after
    assert ids.new_ids("uev", 0) == []


def test_the_time_part_is_the_current_millisecond():
    before = time.time_ns() // 1_000_000
    made = ids.new_id("cus")
    after = time.time_ns() // 1_000_000
    assert before <= int(made[4:16], 16) <= after + 1


def test_a_forked_child_draws_its_own_random_part():
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child
        os.write(write, ids.new_id("x").encode())
        os._exit(0)
    os.waitpid(pid, 0)
    child = os.read(read, 100).decode()
    assert child != ids.new_id("x")
