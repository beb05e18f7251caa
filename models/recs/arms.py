"""A/B arms: recommender configurations served side by side, and what users did next, per arm.

An arm changes how lists are made, not what the model learns: its ranker (ALS, or popularity as a control),
its MMR diversity, its exploration share and its freshness prior. Every arm's users still have their factor solved and kept in
the partial Grams, so the item side learns from everyone alike and arms compare on one model.

Users are assigned by a stable hash of (salt, user id) into [0, 1), cut by the arms' shares in order: the
same user always gets the same arm, on every worker and after restarts; a new salt draws a new assignment
(a new experiment). The arm is stamped on every recommendation (`arm`).

What users did next (`ListOutcomes`): a served list is closed by the user's next new event; it is a hit when
that event watched or liked one of its videos: the online HR@k of the offline evaluation
(models/recs/evaluate.py), per arm. A worker counts it live (Prometheus counters, lost for lists open at a
restart); `replay_outcomes` recounts it from the `events` and `recommendations` topics with the same
code, joining on `source_event_id` (no clocks): per user, events are in offset order (keyed by user), and
the last list whose source is an event is the one the user had when their next event was processed (the
worker serves the next list only after it); the two agree but for redelivered events (the worker serves
again, the replay skips them). `report` gives per arm the hit rate with a 95% Wilson interval,
and each arm's difference from the first arm (the control) with a 95% normal interval.
"""

from __future__ import annotations

import hashlib
import math
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from typing import Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field

ENGAGED = ("watch", "like")  # event types that count as taking up a recommended video
Z95 = 1.959963984540054


class Arm(BaseModel):
    model_config = ConfigDict(frozen=True)
    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,31}$")  # a metric label value: short, safe
    share: float = Field(gt=0, le=1)
    ranker: Literal["als", "popularity"] = "als"
    diversity: float | None = Field(None, ge=0, lt=1)  # None: the section's setting
    explore_share: float | None = Field(None, ge=0, lt=1)
    freshness: float | None = Field(None, ge=0)


def check_arms(arms: Sequence[Arm]) -> None:
    """Raise ValueError unless the arms' names are unique and their shares add up to 1."""
    names = [a.name for a in arms]
    if len(set(names)) != len(names):
        raise ValueError(f"arm names must be unique: {names}")
    if arms and abs(sum(a.share for a in arms) - 1.0) > 1e-9:
        raise ValueError(f"arm shares must add up to 1, not {sum(a.share for a in arms)}")


def position(user_id: str, salt: str) -> float:
    """The user's place in [0, 1) for this experiment (salt): uniform, stable, independent across salts."""
    digest = hashlib.sha256(f"{salt}\x00{user_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def assign(user_id: str, arms: Sequence[Arm], salt: str) -> Arm | None:
    """The user's arm (None without arms)."""
    if not arms:
        return None
    at, edge = position(user_id, salt), 0.0
    for arm in arms:
        edge += arm.share
        if at < edge:
            return arm
    return arms[-1]  # shares add up to 1 within rounding


class ListOutcomes:
    """Per user, the latest list served and its arm, until their next event closes it (bounded: the least
    recently served users are forgotten first, their open list then never counted)."""

    def __init__(self, max_users: int = 200_000) -> None:
        self.max_users = max_users
        self._open: OrderedDict[str, tuple[str, frozenset[str]]] = OrderedDict()

    def served(self, user_id: str, arm: str, videos: Iterable[str]) -> None:
        self._open[user_id] = (arm, frozenset(videos))
        self._open.move_to_end(user_id)
        if len(self._open) > self.max_users:
            self._open.popitem(last=False)

    def next_event(self, user_id: str, video_id: str, type_: str) -> tuple[str, str | None] | None:
        """The user's next event closes their open list: (arm, the engaged type if it took up a listed video,
        else None); None when they had no open list."""
        opened = self._open.pop(user_id, None)
        if opened is None:
            return None
        arm, videos = opened
        return arm, (type_ if type_ in ENGAGED and video_id in videos else None)

    def forget(self, user_id: str) -> None:
        self._open.pop(user_id, None)


def replay_outcomes(
    events: Iterable[bytes | None], recommendations: Iterable[bytes | None], *, max_bytes: int, max_text_chars: int
) -> list[tuple[str, str | None]]:
    """(arm, engaged type or None) per closed list, from the raw values of the `events` topic (each partition
    in offset order) and of `recommendations`; invalid events are skipped as the worker dead-letters them,
    repeated event ids as it absorbs them, a user_delete drops the user's open list."""
    from contracts.events import InvalidMessage, UserDelete, parse_event

    latest: dict[str, tuple[str, str, list[str]]] = {}  # source_event_id -> (user, arm, videos), last one wins
    for raw in recommendations:
        if raw is None:
            continue
        rec = orjson.loads(raw)
        if rec.get("arm"):
            latest[rec["source_event_id"]] = (rec["user_id"], rec["arm"], [i["video_id"] for i in rec["items"]])
    outcomes, lists, seen = [], ListOutcomes(max_users=2**62), set()
    for raw in events:
        try:
            event = parse_event(raw, max_bytes=max_bytes, max_text_chars=max_text_chars)
        except InvalidMessage:
            continue
        if isinstance(event, UserDelete):
            lists.forget(event.user_id)
            continue
        if event.event_id in seen:
            continue
        seen.add(event.event_id)
        closed = lists.next_event(event.user_id, event.video_id, event.type)
        if closed is not None:
            outcomes.append(closed)
        served = latest.get(event.event_id)
        if served is not None and served[0] == event.user_id:
            lists.served(event.user_id, served[1], served[2])
    return outcomes


def wilson(hits: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval of a proportion (sound for small n and rates near 0 or 1)."""
    if n == 0:
        return 0.0, 1.0
    p = hits / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def report(outcomes: Iterable[tuple[str, str | None]], arms: Sequence[str] = ()) -> dict:
    """Per arm: closed lists, hits (by engaged type), the hit rate and its 95% interval; for every arm after
    the first (the control, `arms[0]`, else the first seen), the difference from it with its 95% interval."""
    counts: dict[str, dict[str, int]] = {a: {"lists": 0, "hits": 0} for a in arms}
    for arm, engaged in outcomes:
        c = counts.setdefault(arm, {"lists": 0, "hits": 0})
        c["lists"] += 1
        if engaged is not None:
            c["hits"] += 1
            c[engaged] = c.get(engaged, 0) + 1
    out: dict = {"arms": {}}
    for arm, c in counts.items():
        n, h = c["lists"], c["hits"]
        low, high = wilson(h, n)
        out["arms"][arm] = {
            **c,
            "hit_rate": round(h / n, 6) if n else None,
            "ci95": [round(low, 6), round(high, 6)],
        }
    names = list(counts)
    if names:
        control = names[0]
        out["control"] = control
        c0 = counts[control]
        for arm in names[1:]:
            c1 = counts[arm]
            if not c0["lists"] or not c1["lists"]:
                continue
            p0, p1 = c0["hits"] / c0["lists"], c1["hits"] / c1["lists"]
            se = math.sqrt(p0 * (1 - p0) / c0["lists"] + p1 * (1 - p1) / c1["lists"])
            diff = p1 - p0
            out["arms"][arm]["vs_control"] = {
                "difference": round(diff, 6),
                "ci95": [round(diff - Z95 * se, 6), round(diff + Z95 * se, 6)],
            }
    return out
