"""Interfaces of the comment models, the threshold decision, and language detection.

Kept free of torch so that the stream workers and tests can import the contracts cheaply;
`load_comment_models` imports the runtime only when called.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from models.text.config import CATEGORIES, ModerationSettings, Thresholds, reaches

if TYPE_CHECKING:
    from models.text.comments import CommentModels

SENTIMENT_KEYS = ("negative", "neutral", "positive")
ACTIONS = ("allow", "review", "block")


@runtime_checkable
class Moderator(Protocol):
    """Scores in [0, 1] for every name in CATEGORIES (toxic, offensive, hate, sexism, spam)."""

    model_version: str

    def score_batch(
        self, texts: Sequence[str], langs: Sequence[str | None] | None = None
    ) -> list[dict[str, float]]: ...


@runtime_checkable
class SentimentModel(Protocol):
    """Probabilities {negative, neutral, positive} summing to 1."""

    model_version: str

    def score_batch(
        self, texts: Sequence[str], langs: Sequence[str | None] | None = None
    ) -> list[dict[str, float]]: ...


@dataclass(frozen=True)
class CommentScore:
    """Everything the moderation-flags message needs about one comment."""

    scores: dict[str, float]
    sentiment: dict[str, float]
    lang: str
    action: str
    reasons: list[str]
    abstained: list[str] = field(default_factory=list)  # categories with no training data in `lang`


@runtime_checkable
class CommentScorer(Protocol):
    """What the worker's moderation agent calls (implementation: models.text.comments.CommentModels): per
    text a CommentScore, in input order; `langs` entries may be None (detected)."""

    model_version: str

    def score(self, texts: Sequence[str], langs: Sequence[str | None] | None = None) -> list[CommentScore]: ...

    def newer(self) -> CommentScorer | None:
        """Another model version saved where this one was loaded from, loaded and ready to score; None when
        there is none (slow when there is: call it off the event loop)."""


def decide(
    scores: Mapping[str, float], thresholds: Mapping[str, Thresholds], abstain: Collection[str] = ()
) -> tuple[str, list[str]]:
    """Block if any category reaches its block threshold, else review if any reaches review (a threshold of
    1.0 is never reached); categories in `abstain` (no training data in the comment's language) never decide.

    Reasons name every category at the level that decided, e.g. ["hate>=0.90"].
    """
    cats = [c for c in CATEGORIES if c not in abstain]
    block = [f"{c}>={_level(thresholds[c].block)}" for c in cats if reaches(scores[c], thresholds[c].block)]
    if block:
        return "block", block
    review = [f"{c}>={_level(thresholds[c].review)}" for c in cats if reaches(scores[c], thresholds[c].review)]
    return ("review", review) if review else ("allow", [])


def _level(threshold: float) -> str:
    """Two decimals, as reasons always read, unless that would misstate it (0.9999 is not "1.00")."""
    return f"{threshold:.2f}" if round(threshold, 2) == threshold else f"{threshold:g}"


_CJK = re.compile("[\u4e00-\u9fff\u3400-\u4dbf\uf900-\ufaff\U00020000-\U0002fa1f]")


def detect_lang(text: str, sample_chars: int = 500) -> str:
    """"zh" when CJK ideographs make up at least a fifth of the letters in the first chars, else "en".

    Chinese comments often mix in Latin words, emoji and digits, so the ratio is over letters only
    (isalpha is true for CJK ideographs) and the bar is low. Counted with C-level scans (map, a regex) rather
    than a Python loop per character, which took ~6% of `reelstream score` when `lang` is absent.
    """
    sample = text[:sample_chars]
    if sample.isascii():
        return "en"  # no ideographs: "en" whatever the letters
    letters = sum(map(str.isalpha, sample))
    if not letters:
        return "en"
    cjk = sum(map(str.isalpha, _CJK.findall(sample)))  # isalpha: the ranges hold a few unassigned code points
    return "zh" if cjk * 5 >= letters else "en"


def resolve_langs(texts: Sequence[str], langs: Sequence[str | None] | None) -> list[str]:
    """The given language where it is en/zh, detected otherwise (absent, None or unsupported)."""
    if langs is not None and len(langs) != len(texts):
        raise ValueError(f"{len(texts)} texts but {len(langs)} langs")
    given = langs if langs is not None else [None] * len(texts)
    return [lang if lang in ("en", "zh") else detect_lang(t) for t, lang in zip(texts, given)]


def load_comment_models(settings: ModerationSettings) -> CommentModels:
    """The shipped (or settings.model_dir) weights on the configured device, ready to `score`."""
    from models.text.comments import CommentModels

    return CommentModels.load(settings)
