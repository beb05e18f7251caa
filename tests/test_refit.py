"""The slow speed: the refit policy (models/recs/refit.py), the trainer's state and publishing
(streams/trainer.py, without a broker: its emit is a list), the records it writes (contracts/models.py), and
the item side leaving a batch fit's videos alone (models/recs/item_side.py)."""

from __future__ import annotations

import math

import numpy as np
import orjson
import pytest

from contracts.history import HistoryRow
from contracts.models import MODEL_KEY, parse_model_record, parse_vector_record, vector_record
from models.recs.config import RecsSettings
from models.recs.item_side import ItemMessage, ItemTrainer
from models.recs.refit import Refitter
from streams.settings import Settings
from tests.sinks import Delivered

RECS = RecsSettings(factors=4, iterations=5, refit_min_interactions=10, refit_growth=0.5, refit_interval_s=100.0)


def _rows(user: int, videos: list[int], t0: float = 0.0) -> list[list]:
    return [HistoryRow(f"{user}-{v}", f"v{v}", "watch", t0 + n, 1.0).stored() for n, v in enumerate(videos)]


def test_refit_policy_min_growth_and_event_time_interval():
    r = Refitter(RECS)
    assert not r.due(0)
    r.note(9, 1.0)
    assert not r.due(9)  # below refit_min_interactions
    r.note(1, 2.0)
    assert r.due(10)  # the first fit
    r.fit({"u1": _rows(1, [1, 2, 3, 4, 5]), "u2": _rows(2, [3, 4, 5, 6, 7])})
    assert r.last is not None and r.last.interactions == 10 and r.fits == 1 and not r.due(10)
    r.note(4, 3.0)
    assert not r.due(14)  # grew by 40% < 50%, and 1 s of event time < 100 s
    r.note(1, 4.0)
    assert r.due(15)  # grew by 50%
    r.fit({"u1": _rows(1, [1, 2, 3, 4, 5, 6, 7, 8]), "u2": _rows(2, [3, 4, 5, 6, 7, 8, 9])})
    r.note(1, 7.0 + 100.0)  # the fit saw events up to ts 7
    assert r.due(16)  # one change, but 100 s of event time since the last fit
    assert Refitter(RECS).due(10) is False  # nothing noted: nothing changed


def test_warm_started_refit_keeps_the_item_space():
    r = Refitter(RECS)
    histories = {f"u{u}": _rows(u, list(range(1 + 5 * (u % 2), 6 + 5 * (u % 2)))) for u in range(20)}
    first = r.fit(histories)
    second = r.fit(histories)  # warm: refit_iterations from the first fit's factors
    a = dict(zip(first.item_ids, first.item_vectors()))
    b = dict(zip(second.item_ids, second.item_vectors()))
    cos = [float(a[v] @ b[v] / (np.linalg.norm(a[v]) * np.linalg.norm(b[v]))) for v in a]
    assert min(cos) > 0.9 and first.model_version != second.model_version


class _Sink:
    def __init__(self) -> None:
        self.sent: list[tuple] = []
        self.flushes = 0
        self.fail = False
        self.unreported: list = []

    def emit(self, topic, key, value, timestamp=None, partition=None, on_delivery=None) -> None:
        self.sent.append((topic, orjson.loads(key), orjson.loads(value)))
        if on_delivery is not None:  # acknowledged at the flush, at offsets 10, 11, ... of partition 1
            self.unreported.append(on_delivery)

    def flush(self) -> None:
        if self.fail:
            raise RuntimeError("broker down")
        self.flushes += 1
        for n, report in enumerate(self.unreported):
            report(None, Delivered("item-vectors", 1, 10 + n))
        self.unreported = []


def test_trainer_reads_the_changelogs_and_publishes_vectors_before_the_version():
    from streams.trainer import Trainer

    settings = Settings(recs=RECS)
    t = settings.topics
    sink = _Sink()
    trainer = Trainer(settings, sink.emit, sink.flush)
    for u in range(6):
        trainer.apply_user(orjson.dumps(f"u{u}"), orjson.dumps({"events": _rows(u, [1, 2, 3])}))
    trainer.apply_catalog(orjson.dumps("v3"), orjson.dumps("blocked"))
    assert trainer.interactions == 18 and trainer.due()
    trainer.apply_user(orjson.dumps("u5"), None)  # erasure: the user's rows leave what is fitted
    assert trainer.interactions == 15
    model = trainer.refit()
    assert "u5" not in model.user_ids
    topics = [topic for topic, _, _ in sink.sent]
    assert topics[-1] == t.models and set(topics[:-1]) == {t.item_vectors}
    vectors = {key: parse_vector_record(value) for _, key, value in sink.sent[:-1]}
    assert set(vectors) == {"v1", "v2"}  # the blocked video is not published
    assert all(batch and len(v) == RECS.factors for v, batch in vectors.values())
    _, key, record = sink.sent[-1]
    assert key == MODEL_KEY and parse_model_record(record, RECS.factors).model_version == model.model_version
    assert record["interactions"] == 15 and record["users"] == 5 and record["videos"] == 2
    # where its vectors end: the version is served once a worker has read that far (streams/app.py)
    assert record["item_vectors_end"] == {"1": 12}
    assert not trainer.due()

    sink.fail = True  # publishing fails: nothing counts as published, the next loop fits again
    trainer.apply_user(orjson.dumps("u6"), orjson.dumps({"events": _rows(6, [1, 2, 3, 4, 5, 6, 7, 8])}))
    with pytest.raises(RuntimeError):
        trainer.refit()
    assert trainer.due()


def test_records_other_than_the_contract_are_rejected():
    assert parse_vector_record(vector_record([1.0, 2.0], "als-x", batch=False)) == ([1.0, 2.0], False)
    assert parse_vector_record([0.5, 0.25]) == ([0.5, 0.25], False)  # written before versions were recorded
    assert parse_vector_record({"vec": [1.0]}) is None and parse_vector_record("x") is None
    good = {"schema_version": 1, "model_version": "als-1", "factors": 2, "gram": [1.0, 0.0, 0.0, 1.0]}
    assert parse_model_record(good, 2).gram == [1.0, 0.0, 0.0, 1.0]
    assert parse_model_record({**good, "item_vectors_end": {"0": 7, "3": 0}}, 2).vectors_end == ((0, 7), (3, 0))
    for bad in ({**good, "item_vectors_end": {"x": 1}}, {**good, "item_vectors_end": {"0": -1}},
                {**good, "item_vectors_end": [[0, 1]]}, {**good, "item_vectors_end": {"0": 1.5}},
                {**good, "factors": 3}, {**good, "gram": [1.0, math.nan, 0.0, 1.0]}, {**good, "model_version": ""},
                {**good, "schema_version": 2}, {**good, "gram": [1.0]}, [1, 2]):  # fmt: skip
        with pytest.raises(ValueError):
            parse_model_record(bad, 2)


def test_item_side_leaves_the_batch_fits_videos_alone_until_the_next():
    items = ItemTrainer(RECS)
    gram = np.eye(RECS.factors)
    for video in ("old", "new"):
        items.apply(ItemMessage(video, "u1", [0.1, 0.2, 0.3, 0.4], 2.0))
    items.new_model("batch-1", ["old"])  # a batch fit with "old": the factors received so far were of the previous model
    assert items.user_factors == {}
    items.apply(ItemMessage("old", "u2", [0.4, 0.3, 0.2, 0.1], 1.0))
    items.apply(ItemMessage("new", "u2", [0.4, 0.3, 0.2, 0.1], 1.0))
    ids, vectors = items.solve_dirty(gram)
    assert ids == ["new"] and vectors.shape == (1, RECS.factors)  # solved from u2 alone (u1's factor is gone)
    items.own("old", batch=False)  # a stream vector for "old" was served: the item side owns it again
    items.apply(ItemMessage("old", "u3", [0.1, 0.1, 0.1, 0.1], 1.0))
    assert items.solve_dirty(gram)[0] == ["old"]


def test_the_item_side_holds_only_the_videos_no_batch_fit_covers():
    """A batch fit's videos are the trainer's: their interactions leave the item side when a fit covers them
    (record by record or at once), later ones are not kept, and a restored user loses them too (journalled
    again): what a worker holds is bounded by what happens between two refits (issue #16)."""
    items = ItemTrainer(RECS)
    items.touched = set()
    f1, f2 = [0.1, 0.2, 0.3, 0.4], [0.4, 0.3, 0.2, 0.1]
    for video, user in (("a", "u1"), ("b", "u1"), ("b", "u2"), ("c", "u2")):
        items.apply(ItemMessage(video, user, f1, 2.0))
    items.take_touched()
    items.own("b", batch=True)
    assert items.video_users.keys() == {"a", "c"} and items.user_videos == {"u1": {"a"}, "u2": {"c"}}
    assert items.take_touched() == {"u1", "u2"}  # their stored records change
    items.apply(ItemMessage("b", "u3", f1, 1.0))  # a batch video: not kept, and u3 is held for nothing else
    items.apply(ItemMessage("b", "u1", f2, 1.0))  # ...but u1's newer factor serves "a"'s next solve
    assert "u3" not in items.user_videos and "u3" not in items.user_factors and "b" not in items.video_users
    assert items.user_factors["u1"].tolist() == pytest.approx(f2) and items.take_touched() == {"u1"}
    items.new_model("batch-2", ["a", "b"])  # a model whose videos are known at once
    assert items.video_users.keys() == {"c"} and set(items.user_factors) == set()  # u2's factor was of the old version
    assert "u1" not in items.user_videos and items.take_touched() == {"u1"}

    restored = ItemTrainer(RECS, "batch-2")
    restored.touched, restored.batch_videos = set(), {"a", "b"}
    restored.restore("u1", "batch-2", np.asarray(f1, np.float32), {"a": 2.0, "b": 1.0})  # stored before the fit
    restored.restore("u2", "batch-2", np.asarray(f2, np.float32), {"b": 2.0, "c": 2.0})
    assert restored.user_videos == {"u2": {"c"}} and set(restored.user_factors) == {"u2"}
    assert restored.take_touched() == {"u1", "u2"}  # u1's record is removed, u2's rewritten without "b"
    assert restored.user_state("u1") is None and restored.user_state("u2")[2] == {"c": 2.0}


def test_an_item_refresh_solves_at_most_its_pairs_and_leaves_the_rest_touched():
    """A restart re-solves every restored video: one refresh takes up to `item_solve_max_pairs` (video, user)
    pairs, and the videos past them are solved at the next refreshes, none lost."""
    items = ItemTrainer(RECS.model_copy(update={"item_solve_max_pairs": 3}))
    for video in ("a", "b", "c"):
        for user in ("u1", "u2"):
            items.apply(ItemMessage(video, user, [0.1, 0.2, 0.3, 0.4], 2.0))
    gram = np.eye(RECS.factors)
    assert items.solve_dirty(gram)[0] == ["a", "b"] and items.dirty == {"c"}
    assert items.solve_dirty(gram)[0] == ["c"] and not items.dirty
