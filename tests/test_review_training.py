"""Reviewers' decisions as training data (issue #20): the recording is made by the real ReviewDesk
(streams/review.py) and written in `reelstream record`'s file format; the join, what counts as a label, and
erasure are checked without training; then `reelstream train moderation --decisions` trains the real model on
a small subset and is compared with the same training without the decisions."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import orjson
import pytest
from typer.testing import CliRunner

from contracts.events import Comment, ModerationFlag
from lab.recording import Record, read_records, write_records
from models.text.data import DATASETS, default_data_dir, load_dataset
from models.text.decisions import decision_rows
from streams.pipeline import MappingStore, Message
from streams.review import ReviewDesk, decision_record
from streams.settings import ReviewSettings

NOW = 1_800_000_000.0
DATA = default_data_dir()
ZERO = {"toxic": 0.0, "offensive": 0.0, "hate": 0.0, "sexism": 0.0, "spam": 0.0}
SENT = {"negative": 0.1, "neutral": 0.8, "positive": 0.1}


class Recorder:
    """A ReviewDesk whose outputs, and the decisions and user_deletes sent to it, become a record file's
    records in the order they happen (timestamps 1 ms apart), as `reelstream record` would find them."""

    def __init__(self, settings) -> None:
        s = settings.model_copy(update={"review": ReviewSettings(sample_allow=0.0, sample_block=0.0)})
        self.records: list[Record] = []
        self.dead: list[str] = []
        self.queue: dict[str, bytes] = {}
        self.n = 0
        self.desk = ReviewDesk(s, MappingStore({}), self._emit, lambda msg, err: self.dead.append(err.reason),
                               clock=lambda: NOW)  # fmt: skip

    def _add(self, topic: str, key: bytes | None, value: bytes | None) -> None:
        self.n += 1
        self.records.append(Record(topic, -1, -1, int(NOW * 1000) + self.n, key, value))

    def _emit(self, topic, key, value, timestamp=None, partition=None, on_delivery=None) -> None:
        self._add(topic, key, value)
        if topic == "review-queue" and value is not None:
            self.queue[key.decode()] = value

    def comment(self, text: str, user: str, reasons: list[str], lang: str = "en") -> str:
        """A comment the model sent to review for `reasons` ("spam>=0.50")."""
        event_id = f"c{self.n}-{user}"
        event = Comment(event_id=event_id, user_id=user, video_id="v1", ts=NOW - 60, type="comment", text=text)
        scores = {**ZERO, **{r.split(">=")[0]: 0.6 for r in reasons}}
        flag = ModerationFlag(event_id=event_id, user_id=user, video_id="v1", lang=lang, scores=scores,
                              sentiment=SENT, action="review", reasons=reasons, model_version="m-test")  # fmt: skip
        self.desk.flagged([(event, flag)])
        return event_id

    def decide(self, item_id: str, decision: str, category: str = "none") -> None:
        item = orjson.loads(self.queue[item_id])
        value = decision_record(item, decision, category, "", "ana", NOW)
        self._add("review-decisions", item["user_id"].encode(), value)
        self.desk.process_decisions([Message("review-decisions", 0, self.n, NOW, item["user_id"].encode(), value)])

    def erase(self, user: str) -> None:
        event = {"schema_version": 1, "event_id": f"d-{user}", "type": "user_delete", "user_id": user, "ts": NOW}
        self._add("events", user.encode(), orjson.dumps(event))
        self.desk.erase(user)

    def write(self, path: Path) -> Path:
        write_records(path, self.records)
        return path


def test_decisions_become_rows_only_when_they_are_labels_and_their_user_is_not_erased(settings, tmp_path):
    r = Recorder(settings)
    spam = r.comment("buy followers at my page", "u1", ["spam>=0.50"])
    r.decide(spam, "remove", "spam")
    fine = r.comment("I hate mondays, what a week", "u1", ["hate>=0.50", "offensive>=0.50"])
    r.decide(fine, "approve")
    escalated = r.comment("ESCALATED text", "u2", ["hate>=0.50"])
    r.decide(escalated, "escalate")
    uncategorised = r.comment("UNCATEGORISED text", "u2", ["toxic>=0.50"])
    r.decide(uncategorised, "remove", "none")
    late = r.comment("ERASED-BEFORE text", "u3", ["hate>=0.50"])
    r.erase("u3")  # the item is tombstoned; a reviewer whose page still showed it decides afterwards
    r.decide(late, "remove", "hate")
    decided = r.comment("ERASED-AFTER text", "u4", ["spam>=0.50"])
    r.decide(decided, "remove", "spam")
    r.erase("u4")  # decided first, erased afterwards: only the user_delete on events tells
    chinese = r.comment("垃圾广告 加我", "u5", ["spam>=0.50"], lang="zh")
    r.decide(chinese, "remove", "spam")  # no Chinese spam data: not a label the model can take
    blank = r.comment("   ", "u6", ["spam>=0.50"])
    r.decide(blank, "remove", "spam")  # fails check_row like an empty train.jsonl text
    assert r.dead == ["stale_decision"]  # the late decision on the erased item, never applied by the worker

    rows = decision_rows(read_records(r.write(tmp_path / "review.jsonl")))
    got = {(e.dataset, e.text, e.lang, tuple(sorted(e.labels.items()))) for e in rows.examples}
    assert got == {
        ("youtube_spam", "buy followers at my page", "en", (("spam", 1),)),
        ("davidson_hate_offensive", "I hate mondays, what a week", "en", (("hate", 0), ("offensive", 0))),
    }
    assert all(e.tags == {"origin": "review-decisions"} for e in rows.examples)
    assert rows.decisions == 8
    assert rows.skipped == {"escalate": 1, "remove_without_category": 1, "item_not_on_queue": 1, "user_erased": 1,
                            "no_dataset_for_label": 1, "invalid_row": 1}  # fmt: skip

    # Without the events records the later erasure of u4 cannot be seen; the tombstoned item still joins nothing.
    no_events = decision_rows(rec for rec in read_records(tmp_path / "review.jsonl") if rec.topic != "events")
    assert "ERASED-AFTER text" in {e.text for e in no_events.examples}
    assert "ERASED-BEFORE text" not in {e.text for e in no_events.examples}


def test_train_jsonl_rows_get_the_same_checks(tmp_path):
    spec = next(d for d in DATASETS if d.name == "youtube_spam")
    (tmp_path / "youtube_spam").mkdir()
    path = tmp_path / "youtube_spam" / "train.jsonl"
    path.write_bytes(b'{"text": "ok", "labels": {"spam": 0}}\n{"text": "x", "labels": {"spam": 2}}\n')
    with pytest.raises(ValueError, match=r"train.jsonl:2: label spam=2"):
        load_dataset(tmp_path, spec)
    path.write_bytes(b'{"text": "ok", "lang": "zh", "labels": {"spam": 0}}\n')
    with pytest.raises(ValueError, match=r"train.jsonl:1: lang 'zh'"):
        load_dataset(tmp_path, spec)


# Benign-looking comments reviewers removed as spam: the small model has no reason to call them spam.
REMOVED = [f"what a calm evening walk by the river number {i}, the ducks were lovely" for i in range(24)]
LIMIT = 300


@pytest.mark.slow
def test_train_with_decisions_uses_them_and_moves_their_scores(settings, tmp_path):
    """The same small training (two datasets, 300 rows each, one epoch) with and without the decisions."""
    if not DATA.exists():
        pytest.skip(f"training data not present at {DATA}")
    from models.text.base import load_comment_models
    from models.text.config import ModerationSettings
    from models.text.training import TrainOptions, train
    from reelstream.cli import app

    data = tmp_path / "data"
    data.mkdir()
    for name in ("youtube_spam", "davidson_hate_offensive"):
        (data / name).symlink_to(DATA / name)
    r = Recorder(settings)
    for text in REMOVED:
        r.decide(r.comment(text, "u1", ["toxic>=0.50"]), "remove", "spam")
    recording = r.write(tmp_path / "review.jsonl")

    out = tmp_path / "weights"
    res = CliRunner().invoke(app, ["train", "moderation", "--data", str(data), "--out", str(out), "--epochs", "1",
                                   "--limit-per-dataset", str(LIMIT), "--no-baseline", "--decisions", str(recording)])  # fmt: skip
    assert res.exit_code == 0, res.output
    summary = orjson.loads(res.stdout[res.stdout.index("{") :])
    base = train(data, TrainOptions(epochs=1, limit_per_dataset=LIMIT, threads=1))

    assert summary["decision_rows"] == {"youtube_spam": 24}
    assert summary["n_train"]["youtube_spam"] == base.n_train["youtube_spam"] + 24
    assert summary["n_train"]["davidson_hate_offensive"] == base.n_train["davidson_hate_offensive"]
    assert base.n_decisions == {} and base.decisions_skipped is None
    card = (out / "MODEL_CARD.md").read_text()
    assert "## Reviewer decisions" in card and "decision rows per dataset youtube_spam 24" in card

    with_decisions = load_comment_models(ModerationSettings(model_dir=str(out), device="cpu")).moderator
    before = np.array([s["spam"] for s in base.models.moderator.score_batch(REMOVED, ["en"] * len(REMOVED))])
    after = np.array([s["spam"] for s in with_decisions.score_batch(REMOVED, ["en"] * len(REMOVED))])
    assert after.mean() > before.mean() + 0.2, (before.mean(), after.mean())
    assert (after > before).mean() >= 0.9
