"""Feedback -> confidence. A user's history is the stored list of their interactions; the per-video
confidences are always recomputed from that full list, so replaying or duplicating events (at-least-once
delivery) never changes the result.

Confidence follows implicit's convention: positive = "likes it" with that weight, negative = "dislikes it"
with weight |c| (implicit treats negative entries as preference 0 with confidence |c|).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import NamedTuple

from contracts.history import EVENT_ID, KIND, RATIO, SENTIMENT, TIME_ORDER, TS, VIDEO_ID, HistoryRow, Row, Sentiment
from models.recs.config import ConfidenceWeights, RecsSettings

_MIN_DECAY = 2.0**-30


class LongTerm(NamedTuple):
    """The slow scale of a user's taste: from `after_s` of age on (an earlier session), a feedback keeps at
    least `weight` of its value for good, whatever the session decay has left of it."""

    weight: float = 0.0
    after_s: float = 0.0


ONE_SCALE = LongTerm()  # nothing kept for good: the session decay alone


def _sentiment(s: Mapping[str, float] | None) -> Sentiment | None:
    if s is None:
        return None
    return (float(s.get("negative", 0.0)), float(s.get("neutral", 0.0)), float(s.get("positive", 0.0)))


def with_sentiment(history: Sequence[HistoryRow], event_id: str, sentiment: Mapping[str, float]) -> list[HistoryRow]:
    """Attach a comment's sentiment, which arrives later from the moderation agent (idempotent)."""
    s = _sentiment(sentiment)
    return [i._replace(sentiment=s) if i.event_id == event_id else i for i in history]


def append(history: Sequence[HistoryRow], new: Iterable[HistoryRow], max_events: int) -> list[HistoryRow]:
    """History plus new interactions, deduplicated on event_id, time-ordered, keeping the latest max_events."""
    seen = {i.event_id for i in history}
    out = list(history)
    for i in new:
        if i.event_id not in seen:
            seen.add(i.event_id)
            out.append(i)
    out.sort(key=lambda i: (i.ts, i.event_id))
    return out[-max_events:]


def event_weight(i: Row, w: ConfidenceWeights) -> float:
    """What one interaction adds to its video's confidence (a like counts once, see `confidences`)."""
    kind = i[KIND]
    if kind == "watch":
        return w.watch * i[RATIO]
    if kind == "like":
        return w.like
    if kind == "share":
        return w.share
    if kind == "skip":
        return w.skip
    if kind == "comment":
        if i[SENTIMENT] is None:
            return w.comment_neutral
        neg, neu, pos = i[SENTIMENT]
        return neg * w.comment_negative + neu * w.comment_neutral + pos * w.comment_positive
    return 0.0  # unlike: handled as state, see `confidences`


def confidences(
    history: Iterable[Row],
    w: ConfidenceWeights,
    *,
    now: float | None = None,
    half_life_s: float | None = None,
    long_term: LongTerm = ONE_SCALE,
    seen: set[str] | None = None,
    unique: bool = False,
) -> dict[str, float]:
    """video_id -> confidence from the user's full history (HistoryRows or their stored lists).

    Two time scales. Each contribution decays with age (half_life_s, relative to `now`, default the latest
    event; None or 0: no decay) so that what the user did in this session dominates their factor; and once
    older than `long_term.after_s` (an earlier session) it keeps `long_term.weight` of its value for good
    (weight + (1 - weight) * decay): a user who comes back tomorrow is not a stranger. A like is a state: the
    latest like/unlike wins. Duplicate event_ids count once. Videos whose confidence sums to exactly zero (a like
    taken back) are left out. Runs once per served user per micro-batch: one pass, no per-row objects.
    `seen`, if given, receives every video of the history (those left out too): the exclusion set a caller
    needs anyway, from the same pass. `unique`: the caller's history has each event_id once already (the
    worker's table rows, deduplicated before they are appended), so that pass is skipped (~3% of a
    worker's main thread).
    """
    if unique:
        events = sorted(history, key=TIME_ORDER)
    else:
        history = history if isinstance(history, Sequence) else list(history)
        events = sorted({i[EVENT_ID]: i for i in reversed(history)}.values(), key=TIME_ORDER)  # first of each event_id
    if not events:
        return {}
    t_now = events[-1][TS] if now is None else now
    rate = math.log(2.0) / half_life_s if half_life_s else 0.0
    conf: dict[str, float] = {}
    liked_at: dict[str, float | None] = {}
    _accumulate(events, 0, t_now, rate, long_term, w, conf, liked_at)
    return _finish(conf, liked_at, t_now, rate, long_term, w, seen)


def _accumulate(
    events: Sequence[Row],
    start: int,
    t_now: float,
    rate: float,
    long_term: LongTerm,
    w: ConfidenceWeights,
    conf: dict[str, float],
    liked_at: dict[str, float | None],
    until_unfloored: bool = False,
) -> int:
    """Add events[start:] (time-ordered) into conf / liked_at; returns the index it stopped at. With
    `until_unfloored` it stops before the first row whose decayed contribution is above the floor: the rows
    before it add constants that a later `now` no longer changes (see FlooredPrefixCache)."""
    exp = math.exp
    keep, after = long_term
    fade = 1.0 - keep
    for n, i in enumerate(events[start:] if start else events, start):
        vid, kind, ts = i[VIDEO_ID], i[KIND], i[TS]
        if kind == "watch":
            x = w.watch * i[RATIO]
        elif kind == "like" or kind == "unlike":
            liked_at[vid] = ts if kind == "like" else None
            if vid not in conf:
                conf[vid] = 0.0
            continue
        else:
            x = event_weight(i, w)
        if rate and ts < t_now:
            age = t_now - ts
            decay = exp(-rate * age)
            if decay > _MIN_DECAY or age < after:
                if until_unfloored:
                    return n
                x *= keep + fade * decay if age >= after else max(decay, _MIN_DECAY)
            else:
                x *= keep + fade * _MIN_DECAY  # floored: an old video stays in the history
        elif until_unfloored:
            return n
        conf[vid] = conf.get(vid, 0.0) + x
    return len(events)


def _finish(
    conf: dict[str, float],
    liked_at: dict[str, float | None],
    t_now: float,
    rate: float,
    long_term: LongTerm,
    w: ConfidenceWeights,
    seen: set[str] | None,
) -> dict[str, float]:
    """Add each video's like state (decayed to t_now) and leave out the zeros; `conf` is consumed."""
    exp = math.exp
    keep, after = long_term
    for vid, ts in liked_at.items():
        if ts is not None:
            if rate and ts < t_now:
                decay = max(_MIN_DECAY, exp(-rate * (t_now - ts)))
                conf[vid] += w.like * (keep + (1.0 - keep) * decay if t_now - ts >= after else decay)
            else:
                conf[vid] += w.like
    if seen is not None:
        seen.update(conf)
    return {vid: c for vid, c in conf.items() if c != 0.0}


class _Prefix(NamedTuple):
    rows: list[Row]  # the stored rows it covers: the first len(rows) of the user's history, same objects
    last: tuple[float, str]  # the latest (ts, event_id) among them
    floored_at: float  # the `now` at which every non-like row among them had decayed to the floor
    conf: dict[str, float]
    liked_at: dict[str, float | None]


class FlooredPrefixCache:
    """`confidences(rows, unique=True)` per user, without re-reading the part of a history that cannot change.

    A contribution older than ~30 half-lives is floored to a constant (2^-30 of its weight) and stays so as
    `now` moves on. So the partial sums over a user's oldest rows, once they are all floored, are cached and
    the next call only adds the rows after them: a worker re-reads a few new rows per served user instead of
    their whole history (up to history_max_events; 0.45 us per row). The result is the full computation's,
    bit for bit and in the same key order: the same additions run in the same order (tests/test_recs.py).

    The cache is used only while it is certainly valid, else the history is recomputed in full: the history
    still starts with the very row objects cached (rows are values: the worker replaces a row, never edits
    it), every later row sorts after them, and `now` has not moved back. Likes are state, kept as such.
    A prefix grows only over rows stored in TIME_ORDER, which is how the worker stores them.

    At most `max_keys` users are kept, the least recently served dropped first: a prefix keeps its rows
    alive (~7.5 KB a user with 20 rows), so an unbounded cache grew with every user a worker ever served
    (~7 GB for a million users served, extrapolated), past the users table's own bounded cache.
    """

    def __init__(
        self, w: ConfidenceWeights, half_life_s: float | None, long_term: LongTerm = ONE_SCALE, max_keys: int = 50_000
    ) -> None:
        self.w = w
        self.rate = math.log(2.0) / half_life_s if half_life_s else 0.0
        self.long_term = long_term
        self.max_keys = max_keys
        self._prefix: dict[str, _Prefix] = {}  # least recently used first
        self.reused = 0  # calls that started from a cached prefix (tests, profiling)

    def __len__(self) -> int:
        return len(self._prefix)

    def forget(self, key: str) -> None:
        self._prefix.pop(key, None)

    def clear(self) -> None:
        self._prefix.clear()

    def confidences(self, key: str, rows: list[Row], seen: set[str] | None = None) -> dict[str, float]:
        """`confidences(rows, w, half_life_s=..., long_term=..., seen=seen, unique=True)` for the user `key`."""
        if not self.rate:  # no decay, no floor: nothing to keep
            return confidences(rows, self.w, seen=seen, unique=True)
        p = self._prefix.pop(key, None)  # put back below while it holds: the most recently used come last
        k = len(p.rows) if p is not None else 0
        events = sorted(rows[k:], key=TIME_ORDER) if p is not None and rows[:k] == p.rows else []
        if not events or TIME_ORDER(events[0]) <= p.last or events[-1][TS] < p.floored_at:  # type: ignore[union-attr]
            p, k = None, 0
            events = sorted(rows, key=TIME_ORDER)
            if not events:
                return {}
        t_now = events[-1][TS]
        self.reused += p is not None
        conf = dict(p.conf) if p is not None else {}
        liked_at = dict(p.liked_at) if p is not None else {}
        m = _accumulate(events, 0, t_now, self.rate, self.long_term, self.w, conf, liked_at, until_unfloored=True)
        # Rows are usually stored in time order; if not, the new floored rows may not be the next stored
        # ones, and the prefix stays as it was.
        if m and rows[k : k + m] == events[:m]:
            self._keep(key, _Prefix(rows[: k + m], TIME_ORDER(events[m - 1]), t_now, dict(conf), dict(liked_at)))
        elif p is not None:
            self._keep(key, p)
        _accumulate(events, m, t_now, self.rate, self.long_term, self.w, conf, liked_at)
        return _finish(conf, liked_at, t_now, self.rate, self.long_term, self.w, seen)

    def _keep(self, key: str, prefix: _Prefix) -> None:
        self._prefix[key] = prefix
        if len(self._prefix) > self.max_keys:
            del self._prefix[next(iter(self._prefix))]


def user_confidences(
    history: Iterable[Row], settings: RecsSettings, seen: set[str] | None = None, unique: bool = False
) -> dict[str, float]:
    """`confidences` with the configured weights and decay: what the agent passes to the recommender."""
    return confidences(
        history,
        settings.weights,
        half_life_s=settings.history_half_life_s,
        long_term=long_term_of(settings),
        seen=seen,
        unique=unique,
    )


def video_confidences(
    history: Sequence[Row], videos: Iterable[str], settings: RecsSettings, served: Mapping[str, float] | None = None
) -> dict[str, float]:
    """Per video, the user's confidence in it as of their latest event on that video (0.0 once it sums to
    nothing): what the item side receives. It depends on that video's rows alone, so it is the same however
    the user's events were grouped into micro-batches (a later event on another video in the same batch
    does not age it), which makes the item side's state repeatable across restarts and replays.

    `served`: the history's own `confidences` (time-ordered stored rows, `now` its latest event). For a video
    of that latest event it is this very value, bit for bit (the same additions in the same order at the same
    `now`), so only the other videos are recomputed (a pass over the history each, ~5% of a worker's CPU)."""
    wanted = set(videos)
    out: dict[str, float] = {}
    if served is not None and history:
        t_now = history[-1][TS]
        for row in reversed(history):
            if row[TS] != t_now:
                break
            if row[VIDEO_ID] in wanted:
                out[row[VIDEO_ID]] = served.get(row[VIDEO_ID], 0.0)
        wanted -= out.keys()
    if wanted:
        w, half_life, long_term = settings.weights, settings.history_half_life_s, long_term_of(settings)
        picked = [row for row in history if row[VIDEO_ID] in wanted]
        for video in wanted:
            own = [row for row in picked if row[VIDEO_ID] == video]
            out[video] = confidences(own, w, half_life_s=half_life, long_term=long_term, unique=True).get(video, 0.0)
    return out


def long_term_of(settings: RecsSettings) -> LongTerm:
    return LongTerm(settings.history_long_term_weight, settings.history_session_gap_s)
