"""Contract checks over every models.recs.base.Recommender implementation, in the style of River's estimator
checks: one suite, each check a plain test function that takes an implementation (built by a factory) and
asserts what the protocol's docstrings state, run over every implementation by parametrization.

Implementations: StreamingRecommender started cold (exact index, and IVF with a tiny nlist so that it really
trains), and loaded from a saved batch model (StreamingALS.fit on a few synthetic users; exact and IVF).
Cold ones receive the catalogue's item vectors through `upsert_items`, as a worker does from item-vectors.
"""

from __future__ import annotations

import copy
import functools
import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from contracts.history import HistoryRow
from indexer.config import IndexSettings
from models.recs.als import StreamingALS
from models.recs.arms import Arm, assign
from models.recs.base import Recommender, ServeRequest
from models.recs.config import RecsSettings
from models.recs.serving import load_recommender

F = 8
# Exploration off: these checks are about ranking (exploration slots rotate between calls by design); its own
# check below turns it on.
RECS = RecsSettings(
    factors=F, regularization=0.1, alpha=2.0, iterations=5, popularity_half_life_s=3600.0, explore_share=0
)
EXACT = IndexSettings()
# nprobe == nlist: every list is probed, so the IVF answers are complete (k >= catalogue returns it all).
IVF = IndexSettings(kind="ivf", nlist=4, nprobe=4, train_per_list=4)
CLUSTERS, PER_CLUSTER = 4, 10
CATALOGUE = [f"v{i}" for i in range(CLUSTERS * PER_CLUSTER)]
ALL = 10_000  # a k larger than any catalogue here: "top-k" is then everything servable
PROTOCOL_METHODS = (
    "learn",
    "recommend_many",
    "forget_user",
    "remove_video",
    "index_size",
    "take_item_messages",
    "upsert_items",
    "partials",
    "set_partial",
    "gram",
    "use_model",
    "drop_partitions",
    "restore_users",
    "newer_model",
    "swap",
)


# ---- implementations ---------------------------------------------------------------------------------------


@dataclass
class Subject:
    rec: Recommender
    catalogue: list[str]  # videos in the index from the start
    model_dir: Path | None  # where a newer batch model can be saved; None: started cold


def _batch_histories() -> dict[str, dict[str, float]]:
    """30 users, each liking 5 videos of one of 4 clusters; every catalogue video is liked by someone."""
    out = {}
    for u in range(30):
        c = u % CLUSTERS
        out[f"fit-u{u}"] = {f"v{c * PER_CLUSTER + (u // CLUSTERS + j) % PER_CLUSTER}": 3.0 for j in range(5)}
    return out


@functools.cache
def _fitted(seed: int) -> StreamingALS:
    return StreamingALS.fit(_batch_histories(), RECS, iterations=5, random_state=seed)


def _item_vectors(ids: Sequence[str], seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(len(ids), F)).astype(np.float32)


def _check_ivf(rec, index: IndexSettings) -> None:
    """Setup guard: the IVF case must really search through a trained IVF, not its exact cold-start path."""
    if index.kind == "ivf":
        assert rec.als.index.inner.trained


def cold(index: IndexSettings) -> Callable[..., Subject]:
    def make(tmp_path: Path, recs: RecsSettings = RECS) -> Subject:
        rec = load_recommender(recs, index)
        rec.upsert_items(CATALOGUE, _item_vectors(CATALOGUE))
        _check_ivf(rec, index)
        return Subject(rec, list(CATALOGUE), None)

    return make


def loaded(index: IndexSettings) -> Callable[..., Subject]:
    def make(tmp_path: Path, recs: RecsSettings = RECS) -> Subject:
        model_dir = tmp_path / "model"
        _fitted(0).save(model_dir)
        rec = load_recommender(recs.model_copy(update={"model_dir": str(model_dir)}), index)
        _check_ivf(rec, index)
        return Subject(rec, list(_fitted(0).item_ids), model_dir)

    return make


IMPLEMENTATIONS = [
    pytest.param(cold(EXACT), id="streaming-cold-exact"),
    pytest.param(cold(IVF), id="streaming-cold-ivf"),
    pytest.param(loaded(EXACT), id="streaming-loaded-exact"),
    pytest.param(loaded(IVF), id="streaming-loaded-ivf"),
]


@pytest.fixture(params=IMPLEMENTATIONS)
def subject(request: pytest.FixtureRequest, tmp_path: Path) -> Subject:
    return request.param(tmp_path)


# One exploration slot per list of 5 (a share of 0.2); a video leaves the pool at its first interaction, or
# after 3 exploration impressions.
EXPLORING = RECS.model_copy(
    update={"explore_share": 0.2, "explore_until_interactions": 1, "explore_max_impressions": 3}
)


@pytest.fixture(params=IMPLEMENTATIONS)
def exploring(request: pytest.FixtureRequest, tmp_path: Path) -> Subject:
    return request.param(tmp_path, EXPLORING)


# ---- users ---------------------------------------------------------------------------------------------------


def _rows(user: str, acts: Sequence[tuple], t0: float = 1000.0) -> list[list]:
    """Stored history rows (lists in HistoryRow field order), each event_id once, in time order."""
    out = []
    for n, (video, kind, *ratio) in enumerate(acts):
        out.append(HistoryRow(f"{user}-e{n}", video, kind, t0 + n, ratio[0] if ratio else 0.0).stored())
    return out


# user -> (events partition, stored history). carol took a like back (v21: zero confidence, still seen);
# bob skipped v13 (negative confidence, still seen); newbie only knows videos no model has; nobody knows nothing.
USERS = {
    "alice": (0, _rows("alice", [("v1", "like"), ("v2", "watch", 0.9), ("v3", "share")])),
    "bob": (1, _rows("bob", [("v11", "watch", 1.0), ("v12", "like"), ("v13", "skip")])),
    "carol": (2, _rows("carol", [("v21", "like"), ("v21", "unlike"), ("v22", "watch", 0.8), ("v23", "like")])),
    "dave": (0, _rows("dave", [("v31", "like"), ("v32", "watch", 0.7)])),
    "newbie": (1, _rows("newbie", [("fresh-1", "like"), ("fresh-2", "watch", 1.0)])),
    "nobody": (2, []),
}
PLACED = ("alice", "bob", "carol", "dave")  # every video of their history is in every catalogue


def _videos(history: Sequence[Sequence]) -> set[str]:
    return {r[1] for r in history}


def _learn(rec: Recommender, *users: str) -> None:
    for u in users:
        history = USERS[u][1]
        rec.learn(u, history, history)


def _serve(rec: Recommender, users: Sequence[str], k: int, exclude=(), partition: int | None = None):
    requests = [ServeRequest(u, USERS[u][1], USERS[u][0] if partition is None else partition) for u in users]
    return rec.recommend_many(requests, k, exclude)


def _ids(items) -> list[str]:
    return [v for v, _ in items]


def _own_sum(rec: Recommender) -> np.ndarray:
    parts = rec.partials()
    return sum((np.asarray(p) for p in parts.values()), np.zeros((F, F)))


# ---- checks ----------------------------------------------------------------------------------------------------


def test_is_a_recommender(subject: Subject) -> None:
    rec = subject.rec
    assert isinstance(rec, Recommender)
    declared = {n for n in vars(Recommender) if not n.startswith("_")}
    assert set(PROTOCOL_METHODS) | {"model_version"} <= declared  # the suite covers what the protocol declares
    for name in declared - {"model_version"}:
        assert callable(getattr(rec, name)), name
    assert isinstance(rec.model_version, str) and rec.model_version


@pytest.mark.parametrize("k", [3, ALL])
def test_recommend_many_top_k_best_first_never_seen_nor_excluded(subject: Subject, k: int) -> None:
    rec = subject.rec
    _learn(rec, *USERS)  # popularity (the answer for users nobody can place) needs engagement
    exclude = {"v4", "v14", "v24", "v34", "v2"}
    users = list(USERS)
    out = _serve(rec, users, k, exclude)
    assert len(out) == len(users)
    for u, (items, version, because, reason, explored, _arm, _displaced) in zip(users, out):
        assert isinstance(version, str) and version, u
        assert len(because) == len(items) and reason in ("als", "popular"), u
        # Exploration slots come last, explained by nothing; the ranked part before them is checked below.
        n = len(items) - len(explored)
        assert set(_ids(items[n:])) == explored and because[n:] == [[] for _ in explored], u
        items, because = items[:n], because[:n]
        if reason == "popular":
            assert because == [[] for _ in items], u  # no history explains popularity
        else:  # each item names at most 3 videos of the user's own history, every placed user's items some
            assert all(len(b) <= 3 and set(b) <= _videos(USERS[u][1]) for b in because), (u, because)
            assert any(because), u
        assert len(items) <= k, u
        ids = _ids(items)
        assert len(set(ids)) == len(ids), u
        assert all(isinstance(v, str) and isinstance(s, float) and np.isfinite(s) for v, s in items), u
        scores = [s for _, s in items]
        assert all(a >= b for a, b in itertools.pairwise(scores)), (u, scores)  # best first
        assert not set(ids) & _videos(USERS[u][1]), u  # never a video of the history (zero/negative ones too)
        assert not set(ids) & exclude, u
    for u, (items, *_, explored, _arm, _displaced) in zip(users, out):
        ranked = [(v, s) for v, s in items if v not in explored]
        if u in PLACED:
            servable = set(subject.catalogue) - _videos(USERS[u][1]) - exclude
            if k >= len(subject.catalogue):  # top-k of more than there is: everything servable
                assert set(_ids(ranked)) == servable, u
            else:
                assert len(items) == k, u
    assert any(items for u, (items, *_) in zip(users, out) if u not in PLACED)  # popularity answered too


def test_recommend_many_results_do_not_depend_on_the_batch(subject: Subject) -> None:
    """One result per request, in request order: the same users in another order get the same answers."""
    rec = subject.rec
    _learn(rec, *USERS)
    users = list(USERS)
    forward = _serve(rec, users, 8)
    backward = _serve(rec, users[::-1], 8)[::-1]
    for u, (a, va, *_), (b, vb, *_) in zip(users, forward, backward):
        assert _ids(a) == _ids(b) and va == vb, u
        np.testing.assert_allclose([s for _, s in a], [s for _, s in b], rtol=1e-5, atol=1e-6)


def test_learn_then_serve_queues_item_messages_for_new_videos_only(subject: Subject) -> None:
    rec = subject.rec
    rec.take_item_messages()
    history = USERS["alice"][1]
    rec.learn("alice", history[:2], history[:2])
    rec.learn("newbie", USERS["newbie"][1], USERS["newbie"][1])
    _serve(rec, ["alice", "newbie"], 5)
    sent = rec.take_item_messages()
    # newbie's videos are new to the model: the item side is how they enter, so they are messaged too
    assert {(m.video_id, m.user_id) for m in sent} == {
        ("v1", "alice"),
        ("v2", "alice"),
        ("fresh-1", "newbie"),
        ("fresh-2", "newbie"),
    }
    for m in sent:
        assert m.factor is not None and len(m.factor) == F and np.isfinite(m.factor).all()
        assert m.confidence > 0  # a like, a watch: the user's current (positive) confidence
    assert rec.take_item_messages() == []  # drained

    rec.learn("alice", history, history[2:])  # the next batch adds one row
    _serve(rec, ["alice"], 5)
    again = rec.take_item_messages()
    assert [(m.video_id, m.user_id) for m in again] == [("v3", "alice")]
    _serve(rec, ["alice", "newbie"], 5)  # served again, nothing learned: nothing new for the item side
    assert rec.take_item_messages() == []


def test_forget_user_withdraws_from_every_video_and_leaves_the_gram(subject: Subject) -> None:
    rec = subject.rec
    _learn(rec, "bob", "dave", "carol")
    _serve(rec, ["bob", "dave"], 5)
    before = rec.gram().copy()
    _serve(rec, ["carol"], 5, partition=0)  # carol shares dave's partition
    assert not np.allclose(rec.gram(), before)  # carol's factor is in the Gram now
    rec.take_item_messages()
    history = USERS["carol"][1]
    rec.forget_user("carol", history)
    withdrawn = rec.take_item_messages()
    expected = {(v, "carol", None, 0.0) for v in _videos(history)}  # v21 too, although taken back
    assert {(m.video_id, m.user_id, m.factor, m.confidence) for m in withdrawn} == expected
    np.testing.assert_allclose(rec.gram(), before, atol=1e-9)
    np.testing.assert_allclose(_own_sum(rec), before, atol=1e-9)
    _serve(rec, ["bob", "dave"], 5)  # the others go on; carol does not come back
    np.testing.assert_allclose(rec.gram(), before, atol=1e-9)
    assert all(m.user_id != "carol" for m in rec.take_item_messages())


def test_forget_user_before_serving_sends_no_factor(subject: Subject) -> None:
    """Erasure between learn and serve: the queued new videos never go out with the user's factor."""
    rec = subject.rec
    _learn(rec, "bob", "alice")
    _serve(rec, ["bob"], 5)
    before = rec.gram().copy()
    rec.take_item_messages()
    rec.forget_user("alice", USERS["alice"][1])
    sent = rec.take_item_messages()
    assert {(m.video_id, m.user_id, m.factor, m.confidence) for m in sent} == {
        (v, "alice", None, 0.0) for v in _videos(USERS["alice"][1])
    }
    _serve(rec, ["bob"], 5)
    assert all(m.user_id != "alice" for m in rec.take_item_messages())
    np.testing.assert_allclose(rec.gram(), before, atol=1e-9)


def test_partials_are_the_served_partitions_and_gram_adds_remote_ones(subject: Subject) -> None:
    rec = subject.rec
    _learn(rec, "alice", "bob", "carol", "dave")
    _serve(rec, ["alice", "bob", "carol"], 5)
    parts = {p: np.array(m) for p, m in rec.partials().items()}
    assert set(parts) == {0, 1, 2}
    for m in parts.values():
        assert m.shape == (F, F)
        np.testing.assert_allclose(m, m.T, atol=1e-9)
        assert np.linalg.eigvalsh(m).min() > -1e-9 and np.abs(m).max() > 0  # X^T X of a non-empty X
        assert np.linalg.matrix_rank(m, tol=1e-8 * np.abs(m).max()) == 1  # one user each: x x^T
    own = sum(parts.values())
    np.testing.assert_allclose(rec.gram(), own, atol=1e-9)

    _serve(rec, ["alice"], 5)  # served again, same history: her factor replaces itself, not adds
    np.testing.assert_allclose(rec.partials()[0], parts[0], atol=1e-9)
    _serve(rec, ["dave"], 5)  # a second user of partition 0 adds his x x^T
    assert np.linalg.matrix_rank(rec.partials()[0], tol=1e-8 * np.abs(parts[0]).max()) == 2
    own = _own_sum(rec)

    remote7, remote8 = 2.0 * np.eye(F), np.diag(np.arange(1.0, F + 1))
    rec.set_partial(7, remote7)
    np.testing.assert_allclose(rec.gram(), own + remote7, atol=1e-9)
    rec.set_partial(8, remote8)
    np.testing.assert_allclose(rec.gram(), own + remote7 + remote8, atol=1e-9)
    rec.set_partial(7, None)  # withdrawn
    np.testing.assert_allclose(rec.gram(), own + remote8, atol=1e-9)
    rec.set_partial(0, 5.0 * np.eye(F))  # our own partition read back: our (fresher) partial counts, once
    np.testing.assert_allclose(rec.gram(), own + remote8, atol=1e-9)
    rec.set_partial(8, None)
    np.testing.assert_allclose(rec.gram(), own, atol=1e-9)
    assert set(rec.partials()) == {0, 1, 2}  # remote partials are not our own


def test_use_model_stamps_its_version_and_its_gram_is_the_item_solves(subject: Subject) -> None:
    rec = subject.rec
    _learn(rec, "alice", "bob")
    _serve(rec, ["alice"], 5)
    batch_gram = np.diag(np.arange(1.0, F + 1))
    rec.use_model("als-trainer-1", batch_gram)
    assert rec.model_version == "als-trainer-1"
    [(items, version, _, reason, *_)] = _serve(rec, ["bob"], 5)
    assert items and version == "als-trainer-1" and reason == "als"  # outputs carry the published version
    np.testing.assert_allclose(rec.gram(), batch_gram)  # users served since do not change it
    assert set(rec.partials()) == {USERS["alice"][0], USERS["bob"][0]}  # partials are still kept
    rec.use_model("als-trainer-2", 2.0 * batch_gram)
    assert rec.model_version == "als-trainer-2"
    np.testing.assert_allclose(rec.gram(), 2.0 * batch_gram)


def test_drop_partitions_removes_their_partials_and_users(subject: Subject) -> None:
    rec = subject.rec
    _learn(rec, "alice", "bob", "carol")
    _serve(rec, ["alice", "bob", "carol"], 5)
    bob_partial = np.array(rec.partials()[1])
    rec.drop_partitions({1, 2})
    assert set(rec.partials()) == {0}
    np.testing.assert_allclose(rec.gram(), rec.partials()[0], atol=1e-9)
    rec.set_partial(2, 3.0 * np.eye(F))  # partition 2 as its new owner publishes it
    np.testing.assert_allclose(rec.gram(), rec.partials()[0] + 3.0 * np.eye(F), atol=1e-9)
    # partition 1 comes back in a later rebalance: bob counts once again (his dropped factor is gone)
    _serve(rec, ["bob"], 5)
    assert set(rec.partials()) == {0, 1}
    np.testing.assert_allclose(rec.partials()[1], bob_partial, rtol=1e-6, atol=1e-9)


def test_restore_users_rebuilds_the_partials_a_restart_lost_without_serving(subject: Subject) -> None:
    rec = subject.rec
    _learn(rec, *PLACED)
    _serve(rec, PLACED, 5)
    before = {p: np.array(m) for p, m in rec.partials().items()}
    rec.take_item_messages()
    rec.drop_partitions({0, 1, 2})  # a restart: nothing of these partitions is held any more
    _serve(rec, ["alice"], 5)  # alice came back before the restore: she is not counted twice
    rec.restore_users([ServeRequest(u, USERS[u][1], USERS[u][0]) for u in PLACED])
    after = rec.partials()
    assert set(after) == set(before)
    for p, m in before.items():
        np.testing.assert_allclose(after[p], m, rtol=1e-5, atol=1e-9)
    assert rec.take_item_messages() == []  # nothing served, nothing sent to the item side
    rec.restore_users([ServeRequest(u, USERS[u][1], USERS[u][0]) for u in PLACED])  # again: no change
    for p, m in before.items():
        np.testing.assert_allclose(rec.partials()[p], m, rtol=1e-5, atol=1e-9)


def test_restore_users_recounts_popularity_as_an_uninterrupted_worker_holds_it(subject: Subject) -> None:
    """Popularity (the answer for users nobody can place) is counted per partition: a revoked partition's
    counts leave, and a partition taken on is recounted from its users' stored rows, once each, whether a
    user acts again before the restore or not."""
    rec = subject.rec
    alice_p, alice = USERS["alice"]
    again = _rows("alice", [("v1", "like"), ("v2", "watch", 0.9), ("v3", "share"), ("v31", "like")])
    for u in (*PLACED, "newbie"):
        p, history = USERS[u]
        rec.learn(u, history, history, partition=p)
    rec.learn("alice", again, again[len(alice) :], partition=alice_p)
    uninterrupted = dict(_serve(rec, ["nobody"], 20)[0][0])
    assert {"v31", "fresh-1"} <= set(uninterrupted)
    rec.drop_partitions({0, 1, 2})  # a restart: nothing of these partitions is held any more
    assert not {"v31", "fresh-1"} & {v for v, _ in _serve(rec, ["nobody"], 20)[0][0]}
    rec.learn("alice", again, again[len(alice) :], partition=alice_p)  # back before the restore: counted once
    requests = [ServeRequest(u, again if u == "alice" else USERS[u][1], USERS[u][0]) for u in (*PLACED, "newbie")]
    rec.restore_users(requests)
    rec.restore_users(requests)  # again: no change
    assert dict(_serve(rec, ["nobody"], 20)[0][0]) == pytest.approx(uninterrupted, rel=1e-9)


def test_remove_video_is_never_recommended_again(subject: Subject) -> None:
    rec = subject.rec
    _learn(rec, *USERS)
    extra = ["late-1", "late-2"]
    rec.upsert_items(extra, _item_vectors(extra, seed=5))  # a video the item side put in the index
    full = dict(zip(USERS, _serve(rec, list(USERS), ALL)))
    assert "late-1" in _ids(full["alice"][0])
    ranked, popular = _ids(full["alice"][0])[0], _ids(full["nobody"][0])[0]
    removed = {ranked, popular, "late-1"}
    for v in sorted(removed):
        rec.remove_video(v)
    for u, (items, *_) in zip(USERS, _serve(rec, list(USERS), ALL)):
        assert not set(_ids(items)) & removed, u
    # neither a late item-side update nor new engagement brings them back
    rec.upsert_items(sorted(removed), 10.0 * _item_vectors(sorted(removed), seed=6))
    fan = _rows("fan", [(v, "share") for v in sorted(removed)], t0=2000.0)
    rec.learn("fan", fan, fan)
    for u, (items, *_) in zip(USERS, _serve(rec, list(USERS), ALL)):
        assert not set(_ids(items)) & removed, u


def test_upsert_items_grow_the_index_and_are_served(subject: Subject) -> None:
    rec = subject.rec
    _learn(rec, "alice", "newbie")
    before = rec.index_size()
    assert before == len(subject.catalogue)
    assert not {"fresh-1", "fresh-2", "fresh-3"} & set(_ids(_serve(rec, ["alice"], ALL)[0][0]))
    new = ["fresh-1", "fresh-2", "fresh-3"]
    rec.upsert_items(new, _item_vectors(new, seed=7))
    assert rec.index_size() == before + 3
    rec.upsert_items(new[:2], _item_vectors(new[:2], seed=8))  # new vectors for known videos: replaced
    assert rec.index_size() == before + 3
    (alice, *_), (newbie, newbie_version, *_) = _serve(rec, ["alice", "newbie"], ALL)
    assert set(new) <= set(_ids(alice))  # served from the next micro-batch on
    # newbie's videos are known now: the model itself places and serves them (popularity answered before)
    assert newbie_version == rec.model_version
    assert "fresh-3" in _ids(newbie) and not {"fresh-1", "fresh-2"} & set(_ids(newbie))


def test_newer_model_is_none_when_nothing_newer_is_saved(subject: Subject) -> None:
    rec = subject.rec
    assert rec.newer_model() is None
    if subject.model_dir is not None:
        _fitted(0).save(subject.model_dir)  # saved again, same version: not newer
        assert rec.newer_model() is None


def test_swap_serves_the_newer_saved_model(subject: Subject) -> None:
    if subject.model_dir is None:
        pytest.skip("started cold: no model_dir a newer model could be saved to")
    rec = subject.rec
    old = rec.model_version
    _learn(rec, "alice", "bob")
    ((_, served_old, *_),) = _serve(rec, ["alice"], 5)
    assert served_old == old
    rec.remove_video("v5")  # removed while the old model serves
    newer = copy.deepcopy(_fitted(1))
    assert newer.model_version != old and "v5" in newer.item_ids
    newer.save(subject.model_dir)
    model = rec.newer_model()
    assert model is not None and model.model_version == newer.model_version
    assert rec.model_version == old  # loading is not swapping
    rec.swap(model)
    assert rec.model_version == newer.model_version
    for items, version, *_ in _serve(rec, ["alice", "bob"], ALL):
        assert version == newer.model_version
        assert items and "v5" not in _ids(items)  # removals outlive the model they were made under
    assert rec.newer_model() is None  # the saved one is the one served now


def test_new_videos_get_the_last_slot_until_they_have_interactions_or_used_their_budget(exploring: Subject) -> None:
    rec = exploring.rec
    _learn(rec, "alice", "bob")
    for video in ("up-1", "up-2", "up-3", "gone"):
        rec.add_video(video)
    rec.remove_video("gone")
    shown: list[str] = []
    for _ in range(4):
        [served] = _serve(rec, ["alice"], 5)
        items, _, because, reason, explored, _, _ = served
        assert reason == "als" and len(items) == 5 and len(explored) == 1  # one slot, the last
        ranked = served.unexplored()  # what the slot replaced: the ranking's own 5th item
        assert ranked[:4] == items[:4] and len(ranked) == 5 and not explored & set(_ids(ranked))
        assert ranked[4][1] <= ranked[3][1] and ranked[4][0] not in _videos(USERS["alice"][1])
        assert items[-1][0] in explored and because[-1] == [] and not set(explored) & _videos(USERS["alice"][1])
        shown.append(items[-1][0])
    # Round robin, least shown first (a new upload at the front); never a removed video.
    assert shown == ["up-3", "up-2", "up-1", "up-3"]
    [(items, *_, explored, _, _)] = _serve(rec, ["nobody"], 5)  # a user no model places gets the slot too
    assert explored == {"up-2"} and items[-1][0] == "up-2"
    rec.add_video("up-4")  # a later upload: its turn at once, before the videos already shown
    [(items, *_, explored, _, _)] = _serve(rec, ["bob"], 5)
    assert explored == {"up-4"}
    rec.learn("carol", *[_rows("carol", [("up-4", "watch", 1.0)])] * 2)  # its first interaction: graduated
    for expected in ("up-1", "up-3", "up-2", "up-1", None):  # each had its 3 impressions: the pool is empty
        [(items, *_, explored, _, _)] = _serve(rec, ["alice"], 5)
        assert explored == ({expected} if expected else set()) and len(items) == 5


ARMED = RECS.model_copy(
    update={"arms": (Arm(name="control", share=0.5, ranker="popularity"), Arm(name="treat", share=0.5, diversity=0.3))}
)


@pytest.fixture(params=IMPLEMENTATIONS)
def armed(request: pytest.FixtureRequest, tmp_path: Path) -> Subject:
    return request.param(tmp_path, ARMED)


def test_each_user_is_served_by_their_arm_and_every_factor_is_kept_alike(armed: Subject) -> None:
    rec = armed.rec
    _learn(rec, *PLACED)
    out = _serve(rec, list(PLACED), 5)
    arms = {u: assign(u, ARMED.arms, ARMED.ab_salt).name for u in PLACED}
    assert set(arms.values()) == {"control", "treat"}  # these users fall in both arms
    for u, served in zip(PLACED, out):
        assert served.arm == arms[u], u
        if served.arm == "control":  # popularity, explained by nothing, never a seen video
            assert served.model_version == "popularity-v1" and served.reason == "popular", u
            assert served.because == [[] for _ in served.items] and not set(_ids(served.items)) & _videos(USERS[u][1])
        else:
            assert served.reason == "als" and any(served.because), u
    # The control arm's users still have their factors in the partial Grams: the item side learns from all.
    partials = rec.partials()
    for u in PLACED:
        assert np.abs(partials[USERS[u][0]]).max() > 0, u


def test_a_user_with_no_positive_evidence_gets_popularity_not_an_arbitrary_ranking(subject: Subject) -> None:
    """Only a skip of a known video: nothing ranks for them (ALS would score every video 0, in index order)."""
    rec = subject.rec
    _learn(rec, *PLACED)  # popularity needs engagement
    skipper = _rows("skipper", [("v5", "skip")])
    rec.learn("skipper", skipper, skipper)
    [served] = rec.recommend_many([ServeRequest("skipper", skipper, 0)], 5)
    assert served.reason == "popular" and served.model_version == "popularity-v1" and served.items
    assert "v5" not in _ids(served.items) and served.because == [[] for _ in served.items]


def test_a_fresh_upload_competes_with_its_prior_and_an_old_one_does_not(tmp_path: Path) -> None:
    """A new video whose vector is short (solved from a few interactions) but points where alice's taste
    does: below her top-5 on its score alone, first with the freshness prior while it is recent."""
    for n, make in enumerate((cold(EXACT), loaded(IVF))):
        for fresh in (False, True):
            recs = RECS.model_copy(update={"freshness": 30.0, "freshness_half_life_s": 3600.0})
            rec = make(tmp_path / f"{n}-{fresh}", recs).rec
            _learn(rec, *PLACED)
            [first] = _serve(rec, ["alice"], 5)
            top = first.items[0][0]
            rec.upsert_items(["new-1"], 0.05 * rec.als._items[[rec.als._row[top]]])  # setup: a short vector
            rec.add_video("new-1", 1003.0 if fresh else 1003.0 - 10 * 3600.0)  # alice's events: t = 1000..1002
            [served] = _serve(rec, ["alice"], 5)
            assert (served.items[0][0] == "new-1") is fresh, (n, fresh, served.items)
            assert ("new-1" in _ids(served.items)) is fresh
