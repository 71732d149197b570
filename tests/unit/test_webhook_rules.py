"""The pure rules of webhook delivery: which event ids may pass the cursor, and the retry schedule."""

import pytest

from remit.service_layer import webhooks
from remit.service_layer.webhook_outbox import final_prefix


def test_the_prefix_rule_passes_only_final_ids():
    assert final_prefix([5, 6, 7], 4, None) == 3
    assert final_prefix([5, 7, 8], 4, None) == 1  # 6 may still commit
    assert final_prefix([5, 7, 8], 4, 7) == 3  # every id up to 7 is final: 6 rolled back
    assert final_prefix([5, 7, 9], 4, 7) == 2
    assert final_prefix([9], 4, None) == 0


def test_backoff_doubles_with_jitter_and_is_capped():
    assert webhooks.backoff_s(1, 0.0) == pytest.approx(24) and webhooks.backoff_s(1, 1.0) == pytest.approx(36)
    assert webhooks.backoff_s(3, 0.5) == pytest.approx(120)
    assert webhooks.backoff_s(15, 1.0) == webhooks.backoff_s(40, 0.0) == 6 * 3600
