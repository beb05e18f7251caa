"""The worker's recommender adapter: per-partition Gram sums, revocation, erasure, item messages."""

from __future__ import annotations

import numpy as np

from models.recs.serving import load_recommender


def row(event_id, video, kind="like", ts=1.0):
    return [event_id, video, kind, ts, 0.0, None]


def test_partition_grams_sum_to_the_gram_of_all_current_factors(settings):
    rec = load_recommender(settings.recs, settings.index)
    users = {f"u{i}": (i % 3, [row(f"e{i}", f"v{i % 5}")]) for i in range(12)}
    for user, (partition, history) in users.items():
        rec.learn(user, history, history)
        rec.recommend(user, history, 5, set(), partition)
    # a user served again replaces, not adds, their factor
    rec.recommend("u0", users["u0"][1], 5, set(), 0)
    factors = np.stack([f for _, f in rec.user_factors.values()])
    np.testing.assert_allclose(rec.gram(), factors.T @ factors, atol=1e-9)
    assert set(rec.partials()) == {0, 1, 2}

    rec.drop_partitions({1})  # revoked in a rebalance: those users now live elsewhere
    assert all(p != 1 for p, _ in rec.user_factors.values()) and 1 not in rec.partials()
    remote = np.eye(settings.recs.factors)
    rec.set_partial(1, remote)  # partition 1's sum as published by its new owner
    kept = np.stack([f for _, f in rec.user_factors.values()])
    np.testing.assert_allclose(rec.gram(), kept.T @ kept + remote, atol=1e-9)


def test_erasure_leaves_the_gram_and_withdraws_from_every_video(settings):
    rec = load_recommender(settings.recs, settings.index)
    history = [row("e1", "v1"), row("e2", "v2", "watch")]
    rec.learn("u1", history, history)
    rec.recommend("u1", history, 5, set(), 2)
    sent = rec.take_item_messages()
    assert {m.video_id for m in sent} == {"v1", "v2"} and all(m.factor is not None for m in sent)
    rec.forget_user("u1", history)
    assert "u1" not in rec.user_factors and np.allclose(rec.gram(), 0)
    withdrawn = rec.take_item_messages()
    assert {(m.video_id, m.confidence, m.factor) for m in withdrawn} == {("v1", 0.0, None), ("v2", 0.0, None)}
