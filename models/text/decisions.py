"""Reviewers' decisions as labelled training rows for the comment model (issue #20).

A decision (`review-decisions`) names an item of `review-queue` but holds no text, so it is joined to the
item's text from a recording of both topics (`reelstream record`, lab/recording.py). The records are read in
time order and each decision is joined to the item as it stood on the queue at that moment: an item already
tombstoned (decided before, or its user erased) joins nothing, so a late decision on an erased user's item
is never used. A user with a `user_delete` among the records (a recording of `events` may be given too) is
left out altogether, whatever the order.

What a decision says, as labels: `remove` with a category is a positive for that category; `approve` is a
negative for every category the model had flagged (the item's reasons); `escalate`, and `remove` without a
category, say nothing. The latest usable decision per comment wins (an appeal decided after a removal).
A label goes to the first dataset (models/text/data.py DATASETS order) of the comment's language that
carries it, as one more training row of that dataset, weighted exactly like its train.jsonl rows; a label
no dataset of that language carries (zh spam, en sexism, zh toxic) is not used. Rows go through the same
`check_row` as train.jsonl lines (one that fails is left out and counted: a comment is hostile input,
where a bad train.jsonl line stops training). This module reads no broker and imports no streams code: the caller
hands it the records.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Protocol

import orjson
from pydantic import ValidationError

from contracts.events import InvalidMessage
from contracts.review import ReviewDecision, ReviewItem, parse_decision
from models.text.data import DATASETS, DatasetSpec, Example, check_row

SOURCE_TAG = "review-decisions"  # Example.tags["origin"] of a decision row


class TopicRecord(Protocol):
    """What this module needs of a recorded message (lab.recording.Record is one)."""

    @property
    def topic(self) -> str: ...
    @property
    def timestamp_ms(self) -> int | None: ...
    @property
    def key(self) -> bytes | None: ...
    @property
    def value(self) -> bytes | None: ...


@dataclass(frozen=True)
class DecisionRows:
    """Training rows made of decisions, and why the other decisions were not used (reason -> count)."""

    examples: list[Example]
    decisions: int  # decisions read (valid or not)
    skipped: dict[str, int] = field(default_factory=dict)

    @property
    def by_dataset(self) -> dict[str, int]:
        return dict(Counter(e.dataset for e in self.examples))


def dataset_for(category: str, lang: str) -> DatasetSpec | None:
    """The dataset a reviewer's label of `category` on a `lang` comment is a row of (first carrying it)."""
    return next((d for d in DATASETS if d.lang == lang and category in d.labels), None)


def _flagged(item: ReviewItem) -> list[str]:
    """The categories over a threshold when the model decided ("hate>=0.90" -> "hate")."""
    return list(dict.fromkeys(r.split(">=")[0] for r in item.reasons))


def decision_rows(
    records: Iterable[TopicRecord],
    *,
    queue_topic: str = "review-queue",
    decisions_topic: str = "review-decisions",
    events_topic: str = "events",
    max_decision_bytes: int = 1 << 20,
) -> DecisionRows:
    """Join decisions to their items' texts and turn them into training rows (see the module docstring).

    Records are ordered by their timestamps (file order among equal ones, and file order throughout when
    any lacks one); records of other topics are ignored."""
    recs = [r for r in records if r.topic in (queue_topic, decisions_topic, events_topic)]
    if all(r.timestamp_ms is not None for r in recs):
        recs = sorted(recs, key=lambda r: r.timestamp_ms)  # stable: file order among equal timestamps
    skipped: Counter[str] = Counter()
    erased: set[str] = set()
    for r in recs:
        if r.topic == events_topic and r.value is not None:
            try:
                obj = orjson.loads(r.value)
            except orjson.JSONDecodeError:
                continue
            if isinstance(obj, dict) and obj.get("type") == "user_delete" and isinstance(obj.get("user_id"), str):
                erased.add(obj["user_id"])
    live: dict[str, bytes] = {}  # item id -> its value on the queue, as of the record being read
    chosen: dict[str, tuple[ReviewDecision, ReviewItem]] = {}  # comment event id -> latest usable decision
    n = 0
    for r in recs:
        if r.topic == queue_topic:
            if r.key is None:
                continue
            item_id = r.key.decode("utf-8", "replace")
            if r.value is None:
                live.pop(item_id, None)
            else:
                live[item_id] = r.value
            continue
        if r.topic != decisions_topic:
            continue
        n += 1
        try:
            d = parse_decision(r.value, max_bytes=max_decision_bytes)
        except InvalidMessage:
            skipped["invalid_decision"] += 1
            continue
        raw = live.get(d.item_id)
        if raw is None:
            skipped["item_not_on_queue"] += 1  # never recorded, decided already, or its user erased
            continue
        try:
            item = ReviewItem.model_validate_json(raw)
        except ValidationError:
            skipped["invalid_item"] += 1
            continue
        if item.user_id != d.user_id:
            skipped["user_mismatch"] += 1
            continue
        if d.decision == "escalate":
            skipped["escalate"] += 1
            continue
        if d.decision == "remove" and d.category == "none":
            skipped["remove_without_category"] += 1
            continue
        if d.decision == "approve" and not _flagged(item):
            skipped["approve_nothing_flagged"] += 1
            continue
        if item.event_id in chosen:
            skipped["superseded"] += 1
        chosen[item.event_id] = (d, item)
    examples: list[Example] = []
    for d, item in chosen.values():
        if item.user_id in erased:
            skipped["user_erased"] += 1
            continue
        labels = {d.category: 1} if d.decision == "remove" else {c: 0 for c in _flagged(item)}
        by_ds: dict[str, tuple[DatasetSpec, dict[str, int]]] = {}
        for category, value in labels.items():
            spec = dataset_for(category, item.lang)
            if spec is None:
                skipped["no_dataset_for_label"] += 1
                continue
            by_ds.setdefault(spec.name, (spec, {}))[1][category] = value
        for spec, row_labels in by_ds.values():
            row = {"text": item.text, "lang": item.lang, "labels": row_labels, "meta": {"origin": SOURCE_TAG}}
            try:
                examples.append(check_row(row, spec, f"decision {d.decision_id} on item {d.item_id}"))
            except ValueError:
                skipped["invalid_row"] += 1  # comments are hostile input: left out, where a bad train.jsonl line stops training
    return DecisionRows(examples, n, dict(skipped))
