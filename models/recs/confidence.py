"""Feedback -> confidence. A user's history is the stored list of their interactions; the per-video
confidences are always recomputed from that full list, so replaying or duplicating events (at-least-once
delivery) never changes the result.

Confidence follows implicit's convention: positive = "likes it" with that weight, negative = "dislikes it"
with weight |c| (implicit treats negative entries as preference 0 with confidence |c|).
"""

from __future__ import annotations

import math
import operator
from collections.abc import Iterable, Mapping, Sequence
from typing import NamedTuple

from models.recs.config import ConfidenceWeights, RecsSettings
from streams.schemas import Comment, Like, Share, Skip, Unlike, Watch

_MIN_DECAY = 2.0**-30
Sentiment = tuple[float, float, float]  # (negative, neutral, positive) probabilities


class Interaction(NamedTuple):
    """One stored user interaction: small and JSON-friendly (a list), so a history fits a table row."""

    event_id: str
    video_id: str
    kind: str  # watch | like | unlike | share | skip | comment
    ts: float
    ratio: float = 0.0  # watch ratio, capped at 1
    sentiment: Sentiment | None = None  # comments only; None until moderation has scored it

    @classmethod
    def from_event(
        cls, event: Watch | Like | Unlike | Share | Skip | Comment, sentiment: Mapping[str, float] | None = None
    ) -> Interaction:
        ratio = event.ratio if isinstance(event, Watch) else 0.0
        return cls(event.event_id, event.video_id, event.type, event.ts, ratio, _sentiment(sentiment))


def _sentiment(s: Mapping[str, float] | None) -> Sentiment | None:
    if s is None:
        return None
    return (float(s.get("negative", 0.0)), float(s.get("neutral", 0.0)), float(s.get("positive", 0.0)))


def with_sentiment(history: Sequence[Interaction], event_id: str, sentiment: Mapping[str, float]) -> list[Interaction]:
    """Attach a comment's sentiment, which arrives later from the moderation agent (idempotent)."""
    s = _sentiment(sentiment)
    return [i._replace(sentiment=s) if i.event_id == event_id else i for i in history]


def append(history: Sequence[Interaction], new: Iterable[Interaction], max_events: int) -> list[Interaction]:
    """History plus new interactions, deduplicated on event_id, time-ordered, keeping the latest max_events."""
    seen = {i.event_id for i in history}
    out = list(history)
    for i in new:
        if i.event_id not in seen:
            seen.add(i.event_id)
            out.append(i)
    out.sort(key=lambda i: (i.ts, i.event_id))
    return out[-max_events:]


# Positional fields of a stored interaction: an `Interaction`, or the plain list a table row holds
# (streams.pipeline), which the worker's hot path reads without building a tuple per row.
_ID, _VIDEO, _KIND, _TS, _RATIO, _SENTIMENT = range(6)
Row = Sequence  # Interaction or [event_id, video_id, kind, ts, ratio, sentiment]


def event_weight(i: Row, w: ConfidenceWeights) -> float:
    """What one interaction adds to its video's confidence (a like counts once, see `confidences`)."""
    kind = i[_KIND]
    if kind == "watch":
        return w.watch * i[_RATIO]
    if kind == "like":
        return w.like
    if kind == "share":
        return w.share
    if kind == "skip":
        return w.skip
    if kind == "comment":
        if i[_SENTIMENT] is None:
            return w.comment_neutral
        neg, neu, pos = i[_SENTIMENT]
        return neg * w.comment_negative + neu * w.comment_neutral + pos * w.comment_positive
    return 0.0  # unlike: handled as state, see `confidences`


_TS_ID = operator.itemgetter(_TS, _ID)  # time order, ties broken by event_id


def confidences(
    history: Iterable[Row],
    w: ConfidenceWeights,
    *,
    now: float | None = None,
    half_life_s: float | None = None,
    seen: set[str] | None = None,
    unique: bool = False,
) -> dict[str, float]:
    """video_id -> confidence from the user's full history (Interactions or table rows).

    Each contribution decays with age (half_life_s, relative to `now`, default the latest event; None or 0:
    no decay) so that what the user did recently dominates their factor. A like is a state: the latest
    like/unlike wins. Duplicate event_ids count once. Videos whose confidence sums to exactly zero (a like
    taken back) are left out. Runs once per served user per micro-batch: one pass, no per-row objects.
    `seen`, if given, receives every video of the history (those left out too): the exclusion set a caller
    needs anyway, from the same pass. `unique`: the caller's history has each event_id once already (the
    worker's table rows, deduplicated before they are appended), so that pass is skipped (~3% of a
    worker's main thread).
    """
    if unique:
        events = sorted(history, key=_TS_ID)
    else:
        history = history if isinstance(history, Sequence) else list(history)
        events = sorted({i[_ID]: i for i in reversed(history)}.values(), key=_TS_ID)  # first of each event_id
    if not events:
        return {}
    t_now = events[-1][_TS] if now is None else now
    rate = math.log(2.0) / half_life_s if half_life_s else 0.0
    exp = math.exp

    conf: dict[str, float] = {}
    liked_at: dict[str, float | None] = {}
    for i in events:
        vid, kind, ts = i[_VIDEO], i[_KIND], i[_TS]
        if kind == "watch":
            x = w.watch * i[_RATIO]
        elif kind == "like" or kind == "unlike":
            liked_at[vid] = ts if kind == "like" else None
            if vid not in conf:
                conf[vid] = 0.0
            continue
        else:
            x = event_weight(i, w)
        if rate and ts < t_now:
            decay = exp(-rate * (t_now - ts))
            x *= decay if decay > _MIN_DECAY else _MIN_DECAY  # floored: an old video stays in the history
        conf[vid] = conf.get(vid, 0.0) + x
    for vid, ts in liked_at.items():
        if ts is not None:
            conf[vid] += w.like * (max(_MIN_DECAY, exp(-rate * (t_now - ts))) if rate and ts < t_now else 1.0)
    if seen is not None:
        seen.update(conf)
    return {vid: c for vid, c in conf.items() if c != 0.0}


def user_confidences(
    history: Iterable[Row], settings: RecsSettings, seen: set[str] | None = None, unique: bool = False
) -> dict[str, float]:
    """`confidences` with the configured weights and decay: what the agent passes to the recommender."""
    return confidences(history, settings.weights, half_life_s=settings.history_half_life_s, seen=seen, unique=unique)
