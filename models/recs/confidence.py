"""Feedback -> confidence. A user's history is the stored list of their interactions; the per-video
confidences are always recomputed from that full list, so replaying or duplicating events (at-least-once
delivery) never changes the result.

Confidence follows implicit's convention: positive = "likes it" with that weight, negative = "dislikes it"
with weight |c| (implicit treats negative entries as preference 0 with confidence |c|).
"""

from __future__ import annotations

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


def event_weight(i: Interaction, w: ConfidenceWeights) -> float:
    """What one interaction adds to its video's confidence (a like counts once, see `confidences`)."""
    if i.kind == "watch":
        return w.watch * i.ratio
    if i.kind == "like":
        return w.like
    if i.kind == "share":
        return w.share
    if i.kind == "skip":
        return w.skip
    if i.kind == "comment":
        if i.sentiment is None:
            return w.comment_neutral
        neg, neu, pos = i.sentiment
        return neg * w.comment_negative + neu * w.comment_neutral + pos * w.comment_positive
    return 0.0  # unlike: handled as state, see `confidences`


def confidences(
    history: Iterable[Interaction],
    w: ConfidenceWeights,
    *,
    now: float | None = None,
    half_life_s: float | None = None,
) -> dict[str, float]:
    """video_id -> confidence from the user's full history.

    Each contribution decays with age (half_life_s, relative to `now`, default the latest event; None or 0:
    no decay) so that what the user did recently dominates their factor. A like is a state: the latest
    like/unlike wins. Duplicate event_ids count once. Videos whose confidence sums to exactly zero (a like
    taken back) are left out.
    """
    events = sorted({i.event_id: i for i in reversed(list(history))}.values(), key=lambda i: (i.ts, i.event_id))
    if not events:
        return {}
    t_now = events[-1].ts if now is None else now

    def decay(ts: float) -> float:  # floored: a video seen long ago stays in the history (and excluded)
        return 1.0 if not half_life_s else max(_MIN_DECAY, 0.5 ** (max(0.0, t_now - ts) / half_life_s))

    conf: dict[str, float] = {}
    liked_at: dict[str, float | None] = {}
    for i in events:
        if i.kind in ("like", "unlike"):
            liked_at[i.video_id] = i.ts if i.kind == "like" else None
            conf.setdefault(i.video_id, 0.0)
        else:
            conf[i.video_id] = conf.get(i.video_id, 0.0) + event_weight(i, w) * decay(i.ts)
    for vid, ts in liked_at.items():
        if ts is not None:
            conf[vid] += w.like * decay(ts)
    return {vid: c for vid, c in conf.items() if c != 0.0}


def user_confidences(history: Iterable[Interaction], settings: RecsSettings) -> dict[str, float]:
    """`confidences` with the configured weights and decay: what the agent passes to the recommender."""
    return confidences(history, settings.weights, half_life_s=settings.history_half_life_s)
