"""The stored history row: one user interaction as the users table keeps it, defined once for every layer.

A row is stored as a JSON array in the field order of `HistoryRow` (the users table's changelog) and held
in memory as the list that decodes to, so the worker's hot path reads rows without building a tuple per
row: code that reads stored rows uses the field positions below, never bare numbers. `HistoryRow` is the
typed form everything else builds and reads (training, evaluation, tests); a HistoryRow and its stored list
hold the same values in the same positions, so the functions over rows take either.
"""

from __future__ import annotations

import operator
from collections.abc import Sequence
from typing import Annotated, Literal, NamedTuple

from pydantic import ConfigDict, Field, TypeAdapter, with_config
from typing_extensions import TypedDict

from contracts.events import ID, Comment, Id, Like, Share, Skip, Timestamp, Unlike, Watch, check_json

Sentiment = tuple[float, float, float]  # (negative, neutral, positive) probabilities
# Watch ratios are stored with this many decimals: enough for a confidence, and a shorter changelog record.
RATIO_DIGITS = 4


class HistoryRow(NamedTuple):
    """One stored user interaction: what its confidence can be recomputed from, at any later time."""

    event_id: str
    video_id: str
    kind: str  # watch | like | unlike | share | skip | comment
    ts: float
    ratio: float = 0.0  # watch ratio, capped at 1
    sentiment: Sentiment | list[float] | None = None  # comments only; None until moderation has scored it

    @classmethod
    def from_event(cls, event: Watch | Like | Unlike | Share | Skip | Comment) -> HistoryRow:
        ratio = round(event.ratio, RATIO_DIGITS) if isinstance(event, Watch) else 0.0
        return cls(event.event_id, event.video_id, event.type, event.ts, ratio, None)

    def stored(self) -> list:
        """The list the users table holds and its changelog encodes (orjson does not encode NamedTuples)."""
        return list(self)


# A HistoryRow, or the list it is stored as.
Row = Sequence
EVENT_ID, VIDEO_ID, KIND, TS, RATIO, SENTIMENT = (HistoryRow._fields.index(f) for f in HistoryRow._fields)
TIME_ORDER = operator.itemgetter(TS, EVENT_ID)  # time order, ties broken by event_id


def row_with_sentiment(row: Row, sentiment: Sentiment | list[float] | None) -> list:
    """A new stored row with the comment's sentiment set. Stored rows are values, never edited in place
    (models.recs.confidence.FlooredPrefixCache relies on it)."""
    return [*row[:SENTIMENT], sentiment]



_Probability = Annotated[float, Field(ge=0, le=1)]
_StoredRow = tuple[
    Id, Id, Literal["watch", "like", "unlike", "share", "skip", "comment"], Timestamp, _Probability,
    tuple[_Probability, _Probability, _Probability] | None,
]  # fmt: skip


@with_config(ConfigDict(extra="forbid"))
class _StoredRecord(TypedDict):
    events: list[_StoredRow]


_RECORD = TypeAdapter(_StoredRecord)


def check_user_record(key: bytes | None, value: bytes | None) -> None:
    """A users-table changelog record as the worker writes it (key: the user id as JSON; value: `{"events":
    [stored rows]}`, None for a tombstone), checked on its bytes, or a ValueError saying what is wrong: the
    changelog is input too, and a record the worker would choke on at every event of that user must be
    refused, not stored. pydantic's strict JSON validation parses and checks in one pass (measured: half the
    time of orjson plus the same checks written in Python; a standby checks every record)."""
    check_json(ID, key)
    if value is not None:
        check_json(_RECORD, value)
