"""A synthetic, replayable event stream with known latent structure.

Why synthetic: evaluations need ground truth that real logs lack ("does a user's top-10 move toward the
clusters they like?", "which comments are abusive?"). Videos belong to one of C clusters with Zipf
popularity inside each cluster; every user likes a Dirichlet mix of 1–3 clusters and behaves accordingly:
long watches, likes and shares in taste, skips and short watches outside it. Comment texts are real labeled
comments from ../shared/data (English and Chinese, mostly benign, some negative, offensive, hateful, sexist
or spam; trolls and spammers concentrate the abuse). Around the interactions: most uploads first, the rest
during the stream, a few removals and blocks, a few user_delete events.

Only the stdlib `random` drives it, so a seed gives byte-identical output across machines and numpy versions
(given the same data files). Output is a record file (lab.recording), ready for `reelstream replay`.
"""

from __future__ import annotations

import math
import random
from bisect import bisect_left
from collections import Counter
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from itertools import accumulate
from pathlib import Path

import orjson

from contracts.events import Comment, Like, Share, Skip, Unlike, UserDelete, VideoEvent, Watch
from lab.recording import Record, write_records

DEFAULT_START_TS = 1_767_225_600  # 2026-01-01T00:00:00Z: a fixed clock keeps output independent of when it runs
MEAN_GAP_MS = 500  # mean time between two sessions of the whole platform
MAX_COMMENT_CHARS = 1000  # longer dataset rows (reviews) are not comment-like
FAULT_HEADER = "x-reelstream-fault"

# Comment categories -> labeled sources (dataset, label, value).
COMMENT_SOURCES: dict[tuple[str, str], list[tuple[str, str, object]]] = {
    ("en", "positive"): [("sst2", "sentiment", 1), ("tweeteval_sentiment", "sentiment", 2)],
    ("en", "neutral"): [("tweeteval_sentiment", "sentiment", 1)],
    ("en", "negative"): [("sst2", "sentiment", 0), ("tweeteval_sentiment", "sentiment", 0)],
    ("en", "offensive"): [("davidson_hate_offensive", "class", "offensive"), ("olid_offensive", "offensive", 1)],
    ("en", "hate"): [("davidson_hate_offensive", "class", "hate"), ("hateval_en", "hate", 1)],
    ("en", "spam"): [("youtube_spam", "spam", 1)],
    ("zh", "positive"): [
        ("waimai_10k", "sentiment", 1),
        ("online_shopping_10_cats", "sentiment", 1),
        ("chnsenticorp_htl", "sentiment", 1),
    ],
    ("zh", "neutral"): [("cold_offensive", "offensive", 0)],
    ("zh", "negative"): [
        ("waimai_10k", "sentiment", 0),
        ("online_shopping_10_cats", "sentiment", 0),
        ("chnsenticorp_htl", "sentiment", 0),
    ],
    ("zh", "offensive"): [("cold_offensive", "offensive", 1)],
    ("zh", "sexism"): [("swsr_sexism", "sexism", 1)],
}
# Where a language lacks a category, the comment takes its nearest one: (lang, category) -> (lang, category).
COMMENT_FALLBACK = {("zh", "hate"): ("zh", "sexism"), ("zh", "spam"): ("en", "spam")}

# Comment category mix by user kind and whether the video is in the user's taste.
COMMENT_MIX: dict[str, dict[str, float]] = {
    "in_taste": {"positive": 0.56, "neutral": 0.22, "negative": 0.12, "offensive": 0.05, "hate": 0.02, "spam": 0.03},
    "out_of_taste": {"positive": 0.15, "neutral": 0.27, "negative": 0.43, "offensive": 0.09, "hate": 0.03,
                     "spam": 0.03},
    "troll": {"positive": 0.05, "neutral": 0.10, "negative": 0.25, "offensive": 0.40, "hate": 0.20},
    "spammer": {"positive": 0.10, "neutral": 0.05, "spam": 0.85},
}
USER_KINDS = {"normal": 0.95, "troll": 0.03, "spammer": 0.02}
COMMENT_RATE = {"normal": 0.06, "troll": 0.15, "spammer": 0.15}  # chance of a comment after a watch
EVENT_MODELS = {"watch": Watch, "like": Like, "unlike": Unlike, "share": Share, "skip": Skip, "comment": Comment}
TOPICS = [
    "cooking", "gaming", "music", "dance", "pets", "travel", "comedy", "sports",
    "beauty", "tech", "fitness", "diy", "fashion", "cars", "science", "anime",
]  # fmt: skip
ADJECTIVES = ["quick", "epic", "daily", "easy", "weird", "best", "first", "late-night", "tiny", "ultimate"]

# Malformed or repeated messages mixed into a stream for DLQ and dedup tests -> the DLQ reason each must
# get from contracts.events.parse_event (None: valid, but a duplicate to be dropped by event_id).
FAULTS: dict[str, str | None] = {
    "bad_json": "bad_json",
    "tombstone": "bad_json",
    "invalid_utf8": "bad_encoding",
    "not_an_object": "not_an_object",
    "unknown_schema_version": "unknown_schema_version",
    "unknown_type": "unknown_type",
    "missing_field": "missing_field",
    "wrong_type": "bad_field",
    "absurd_timestamp": "bad_field",
    "oversized_text": "text_too_long",
    "duplicate": None,
}


def default_data_dir() -> Path:
    """../shared/data relative to the repository root (this file is <root>/lab/generator.py)."""
    return Path(__file__).resolve().parents[2] / "shared" / "data"


@dataclass(frozen=True)
class CommentText:
    category: str
    text: str
    lang: str
    dataset: str
    source_id: str


class CommentPool:
    """Labeled comment texts by (lang, category), in file order so sampling is deterministic."""

    def __init__(self, data_dir: str | Path | None = None) -> None:
        root = Path(data_dir) if data_dir is not None else default_data_dir()
        if not root.is_dir():
            raise FileNotFoundError(
                f"comment datasets not found at {root}: pass --data DIR (the folder of <name>/train.jsonl, "
                "see ../shared/data/README.md)"
            )
        rows: dict[str, list[dict]] = {}
        for dataset in sorted({d for sources in COMMENT_SOURCES.values() for d, _, _ in sources}):
            path = root / dataset / "train.jsonl"
            if not path.is_file():
                raise FileNotFoundError(f"missing comment dataset {path} (expected under {root})")
            with open(path, "rb") as f:
                rows[dataset] = [orjson.loads(line) for line in f if line.strip()]
        self.pools: dict[tuple[str, str], list[CommentText]] = {}
        for (lang, category), sources in COMMENT_SOURCES.items():
            pool = [
                CommentText(category, row["text"], lang, dataset, str(row["id"]))
                for dataset, label, value in sources
                for row in rows[dataset]
                if row["labels"].get(label) == value and 0 < len(row["text"]) <= MAX_COMMENT_CHARS
            ]
            if not pool:
                raise ValueError(f"no comment texts for {lang}/{category} in {root}")
            self.pools[(lang, category)] = pool

    def sample(self, rng: random.Random, lang: str, category: str) -> CommentText:
        pool = self.pools[COMMENT_FALLBACK.get((lang, category), (lang, category))]
        return pool[rng.randrange(len(pool))]


@dataclass(frozen=True)
class GeneratorConfig:
    users: int = 200
    videos: int = 300
    events: int = 4000  # user events (watch, like, ..., user_delete); video events and faults come on top
    seed: int = 7
    clusters: int = 8
    start_ts: int = DEFAULT_START_TS
    events_topic: str = "events"
    videos_topic: str = "videos"
    with_faults: bool = False

    def __post_init__(self) -> None:
        if self.users < 1 or self.videos < 1 or self.events < 0 or self.clusters < 1:
            raise ValueError("users, videos and clusters must be >= 1, events >= 0")


def _weighted(rng: random.Random, cum: list[float]) -> int:
    return bisect_left(cum, rng.random() * cum[-1])


class StreamGenerator:
    """Iterate `records()` once; `truth()` then describes the latent structure and what was emitted."""

    def __init__(self, config: GeneratorConfig, comments: CommentPool) -> None:
        self.cfg = config
        self.comments = comments
        rng = self.rng = random.Random(config.seed)
        c = config.clusters

        # Videos: a cluster each; Zipf popularity by a random rank inside the cluster.
        self.video_cluster = [rng.randrange(c) for _ in range(config.videos)]
        self.video_duration_ms = [
            int(min(600_000, max(5_000, rng.lognormvariate(math.log(30_000), 0.6)))) for _ in range(config.videos)
        ]
        self.cluster_videos: list[list[int]] = [[] for _ in range(c)]
        for v, vc in enumerate(self.video_cluster):
            self.cluster_videos[vc].append(v)
        self.cluster_cum: list[list[float]] = []
        self.popularity = [0.0] * config.videos
        for members in self.cluster_videos:
            ranks = list(range(len(members)))
            rng.shuffle(ranks)
            for v, rank in zip(members, ranks):
                self.popularity[v] = 1.0 / (rank + 1)
            self.cluster_cum.append(list(accumulate(self.popularity[v] for v in members)))
        self.all_cum = list(accumulate(self.popularity))

        # Users: a Dirichlet(1) taste over 1-3 clusters, a language, a kind, an activity level.
        self.user_taste: list[dict[int, float]] = []
        for _ in range(config.users):
            k = min(c, rng.choices((1, 2, 3), weights=(0.4, 0.4, 0.2))[0])
            chosen = sorted(rng.sample(range(c), k))
            gammas = [rng.gammavariate(1.0, 1.0) for _ in chosen]
            self.user_taste.append({cl: g / sum(gammas) for cl, g in zip(chosen, gammas)})
        self.user_kind = rng.choices(list(USER_KINDS), weights=list(USER_KINDS.values()), k=config.users)
        self.user_lang = ["en" if kind == "spammer" or rng.random() < 0.6 else "zh" for kind in self.user_kind]
        self.user_cum = list(accumulate(rng.lognormvariate(0.0, 1.0) for _ in range(config.users)))

        # Schedule, by count of user events emitted: late uploads, removals, blocks, user deletes.
        n, v_all = config.events, list(range(config.videos))
        late = rng.sample(v_all, config.videos // 5)
        initial = sorted(set(v_all) - set(late))
        n_remove = min(max(1, round(0.02 * config.videos)), len(initial) - 1)
        n_block = min(max(1, round(0.01 * config.videos)), len(initial) - 1 - n_remove)
        gone = rng.sample(initial, n_remove + n_block) if n_remove + n_block > 0 else []
        deleted = rng.sample(range(config.users), min(max(1, round(0.01 * config.users)), config.users - 1))
        self.initial_uploads = initial

        def between(lo: float, hi: float) -> int:
            return rng.randint(int(lo * n), max(int(lo * n), int(hi * n) - 1))

        self.schedule: list[tuple[int, int, str, int]] = sorted(
            [(between(0.0, 0.7), 0, "upload", v) for v in late]
            + [(between(0.2, 0.95), 1, "remove", v) for v in gone[:n_remove]]
            + [(between(0.2, 0.95), 1, "block", v) for v in gone[n_remove:]]
            + [(between(0.3, 0.95), 2, "user_delete", u) for u in deleted]
        )
        faults = list(FAULTS) if config.with_faults else []
        self.fault_schedule = [((i + 1) * n // (len(faults) + 1), kind) for i, kind in enumerate(faults)]

        self.available = [False] * config.videos
        self.active = [True] * config.users
        self.n_active = config.users
        self.liked: list[list[int]] = [[] for _ in range(config.users)]
        self.t_ms = config.start_ts * 1000
        self.seq = 0
        self.emitted = 0
        self.counts: Counter[str] = Counter()
        self.comment_truth: dict[str, dict[str, str]] = {}
        self.removed: list[str] = []
        self.blocked: list[str] = []
        self.deleted_users: list[str] = []
        self._last_event: Record | None = None

    # ids and the clock ---------------------------------------------------------------------------------------
    @staticmethod
    def user_id(u: int) -> str:
        return f"u{u:06d}"

    @staticmethod
    def video_id(v: int) -> str:
        return f"v{v:06d}"

    def _tick(self, mean_ms: float) -> float:
        """Advance the clock (strictly: every record gets a later timestamp) and return it in seconds."""
        self.t_ms += 1 + int(self.rng.expovariate(1.0 / mean_ms))
        return self.t_ms / 1000

    def _next_event_id(self) -> str:
        self.seq += 1
        return f"s{self.cfg.seed}-{self.seq:08d}"

    # records ------------------------------------------------------------------------------------------------
    def _video_record(self, v: int, kind: str) -> Record:
        ts = self._tick(50)
        cl = self.video_cluster[v]
        topic = TOPICS[cl] if cl < len(TOPICS) else f"topic{cl}"
        extra = {}
        if kind == "upload":
            rng = self.rng
            extra = {
                "title": f"{rng.choice(ADJECTIVES)} {topic} #{v}",
                "tags": [topic, f"{topic}-{rng.randrange(10)}"] + (["fyp"] if rng.random() < 0.3 else []),
            }
            self.available[v] = True
        else:
            self.available[v] = False
            (self.removed if kind == "remove" else self.blocked).append(self.video_id(v))
        event = VideoEvent(video_id=self.video_id(v), type=kind, ts=ts, **extra)
        self.counts[f"videos.{kind}"] += 1
        return Record(
            self.cfg.videos_topic, -1, -1, self.t_ms, self.video_id(v).encode(),
            event.model_dump_json(exclude_none=True).encode(),
        )  # fmt: skip

    def _user_record(self, event: Watch | Like | Unlike | Share | Skip | Comment | UserDelete) -> Record:
        self.counts[f"events.{event.type}"] += 1
        self.emitted += 1
        rec = Record(
            self.cfg.events_topic, -1, -1, self.t_ms, event.user_id.encode(),
            event.model_dump_json(exclude_none=True).encode(),
        )  # fmt: skip
        self._last_event = rec
        return rec

    def _pick_user(self) -> int:
        while True:
            u = _weighted(self.rng, self.user_cum)
            if self.active[u]:
                return u

    def _pick_video(self, u: int) -> tuple[int, bool] | None:
        """A video the user meets: mostly from their taste, sometimes exploration by global popularity."""
        rng, taste = self.rng, self.user_taste[u]
        for _ in range(50):
            if rng.random() < 0.85:
                cl = rng.choices(list(taste), weights=list(taste.values()))[0]
                if not self.cluster_videos[cl]:
                    continue
                v = self.cluster_videos[cl][_weighted(rng, self.cluster_cum[cl])]
            else:
                v = _weighted(rng, self.all_cum)
            if self.available[v]:
                return v, self.video_cluster[v] in taste
        candidates = [v for v in range(self.cfg.videos) if self.available[v]]
        if not candidates:
            return None
        v = rng.choice(candidates)
        return v, self.video_cluster[v] in taste

    def _interaction(self, type_: str, u: int, v: int, gap_ms: float, event_id: str | None = None, **fields) -> Record:
        event = EVENT_MODELS[type_](
            event_id=event_id or self._next_event_id(), type=type_, user_id=self.user_id(u),
            video_id=self.video_id(v), ts=self._tick(gap_ms), **fields,
        )  # fmt: skip
        return self._user_record(event)

    def _session(self, u: int) -> Iterator[Record]:
        """One user meeting one video: skip, or watch then maybe like / share / comment; sometimes an unlike."""
        rng = self.rng
        self._tick(MEAN_GAP_MS)
        if self.liked[u] and rng.random() < 0.01:
            yield self._interaction("unlike", u, self.liked[u].pop(rng.randrange(len(self.liked[u]))), 100)
            return
        picked = self._pick_video(u)
        if picked is None:
            return
        v, in_taste = picked
        if rng.random() < (0.06 if in_taste else 0.5):
            yield self._interaction("skip", u, v, 1500)
            return
        ratio = rng.betavariate(4.0, 1.5) if in_taste else rng.betavariate(1.2, 4.0)
        if in_taste and rng.random() < 0.1:
            ratio += 1.0  # watched on loop
        duration = self.video_duration_ms[v]
        yield self._interaction("watch", u, v, 100, watch_ms=int(duration * ratio), duration_ms=duration)
        if v not in self.liked[u] and rng.random() < (0.1 + 0.4 * min(ratio, 1.0) if in_taste else 0.02):
            self.liked[u].append(v)
            yield self._interaction("like", u, v, 1500)
        if rng.random() < (0.05 if in_taste else 0.003):
            yield self._interaction("share", u, v, 2000)
        kind = self.user_kind[u]
        if rng.random() < COMMENT_RATE[kind]:
            mix = COMMENT_MIX[kind if kind != "normal" else ("in_taste" if in_taste else "out_of_taste")]
            category = rng.choices(list(mix), weights=list(mix.values()))[0]
            comment = self.comments.sample(rng, self.user_lang[u], category)
            event_id = self._next_event_id()
            self.comment_truth[event_id] = {
                "category": comment.category, "lang": comment.lang,
                "dataset": comment.dataset, "source_id": comment.source_id,
            }  # fmt: skip
            self.counts[f"comments.{comment.lang}.{comment.category}"] += 1
            lang = comment.lang if rng.random() < 0.9 else None  # lang is optional: the pipeline detects it
            yield self._interaction("comment", u, v, 4000, event_id, text=comment.text, lang=lang)

    def _scheduled(self, kind: str, target: int) -> Iterator[Record]:
        if kind == "user_delete":
            if self.n_active <= 1 or not self.active[target]:
                return
            self.active[target] = False
            self.n_active -= 1
            self.deleted_users.append(self.user_id(target))
            ts = self._tick(MEAN_GAP_MS)
            yield self._user_record(
                UserDelete(event_id=self._next_event_id(), type="user_delete", user_id=self.user_id(target), ts=ts)
            )
        else:
            yield self._video_record(target, kind)

    def _fault(self, kind: str) -> Record:
        """A malformed (or duplicated) message, shaped like the real one before it."""
        assert self._last_event is not None and self._last_event.value is not None
        last = orjson.loads(self._last_event.value)
        self.t_ms += 1
        ts = self.t_ms / 1000
        base = {
            "schema_version": 1, "event_id": self._next_event_id(), "type": "watch", "user_id": last["user_id"],
            "video_id": last.get("video_id") or self.video_id(0), "ts": ts, "watch_ms": 1200, "duration_ms": 15000,
        }  # fmt: skip
        value: bytes | None
        if kind == "duplicate":
            value = self._last_event.value
        elif kind == "bad_json":
            value = orjson.dumps(base)[:-20]
        elif kind == "tombstone":
            value = None
        elif kind == "invalid_utf8":
            latin1 = "café".encode("latin-1")
            value = orjson.dumps({**base, "type": "comment", "text": "CAFE_"}).replace(b"CAFE_", latin1)
        elif kind == "not_an_object":
            value = orjson.dumps([base])
        elif kind == "unknown_schema_version":
            value = orjson.dumps({**base, "schema_version": 2})
        elif kind == "unknown_type":
            value = orjson.dumps({**base, "type": "superlike"})
        elif kind == "missing_field":
            value = orjson.dumps({k: val for k, val in base.items() if k != "video_id"})
        elif kind == "wrong_type":
            value = orjson.dumps({**base, "watch_ms": "a while"})
        elif kind == "absurd_timestamp":
            value = orjson.dumps({**base, "ts": self.t_ms * 1000})  # microseconds sent as seconds
        elif kind == "oversized_text":
            value = orjson.dumps({**base, "type": "comment", "lang": "en", "text": "spam " * 1200})
        else:
            raise ValueError(kind)
        self.counts[f"faults.{kind}"] += 1
        return Record(self.cfg.events_topic, -1, -1, self.t_ms, last["user_id"].encode(), value,
                      [(FAULT_HEADER, kind.encode())])  # fmt: skip

    def records(self) -> Iterator[Record]:
        for v in self.initial_uploads:
            yield self._video_record(v, "upload")
        pending = iter(self.schedule)
        next_item = next(pending, None)
        faults = list(self.fault_schedule)
        while self.emitted < self.cfg.events:
            while next_item is not None and next_item[0] <= self.emitted:
                yield from self._scheduled(next_item[2], next_item[3])
                next_item = next(pending, None)
            while faults and faults[0][0] <= self.emitted and self._last_event is not None:
                yield self._fault(faults.pop(0)[1])
            if self.emitted >= self.cfg.events:
                break
            # Sessions are lazy: stopping here means the next event of the session is never made nor counted.
            for rec in self._session(self._pick_user()):
                yield rec
                if self.emitted >= self.cfg.events:
                    break

    def truth(self) -> dict:
        """Ground truth for evaluations: clusters, tastes, what was removed or deleted, per-comment labels."""
        return {
            "config": asdict(self.cfg),
            "video_cluster": {self.video_id(v): c for v, c in enumerate(self.video_cluster)},
            "video_popularity": {self.video_id(v): round(p, 6) for v, p in enumerate(self.popularity)},
            "user_taste": {
                self.user_id(u): {str(c): round(w, 6) for c, w in taste.items()}
                for u, taste in enumerate(self.user_taste)
            },
            "user_lang": {self.user_id(u): lang for u, lang in enumerate(self.user_lang)},
            "user_kind": {self.user_id(u): kind for u, kind in enumerate(self.user_kind)},
            "deleted_users": self.deleted_users,
            "removed_videos": self.removed,
            "blocked_videos": self.blocked,
            "comments": self.comment_truth,
            "faults": FAULTS if self.cfg.with_faults else {},
            "counts": dict(sorted(self.counts.items())),
        }


def generate(config: GeneratorConfig, out: str | Path, data_dir: str | Path | None = None) -> dict:
    """Write the stream of `config` to the record file `out`; returns the ground truth."""
    gen = StreamGenerator(config, CommentPool(data_dir))
    write_records(out, gen.records())
    return gen.truth()
