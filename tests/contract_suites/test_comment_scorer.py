"""Contract checks over every models.text.base.CommentScorer implementation, in the style of River's estimator
checks: each check a plain test function over an implementation built by a factory, run over every
implementation by parametrization.

Implementations: the shipped CommentModels (load_comment_models) on CPU, a `variant` of it with batch_size 2,
whose texts go through the network in many small batches instead of one, and a variant of the model loaded
with configured thresholds far from the defaults.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import pytest
import torch

from models.text.base import ACTIONS, SENTIMENT_KEYS, CommentScore, CommentScorer, decide, load_comment_models
from models.text.comments import SHIPPED_DIR, THRESHOLDS_FILE, CommentModels
from models.text.config import CATEGORIES, ModerationSettings, Thresholds

SETTINGS = ModerationSettings(device="cpu")
# Configured thresholds far from the defaults: a scorer must decide with its own, not the defaults.
STRICT = ModerationSettings(device="cpu", thresholds={c: Thresholds(review=0.02, block=0.2) for c in CATEGORIES})
ZH = "这个视频太好看了，谢谢分享"
TEXTS = [
    "you are a complete idiot",
    ZH,
    "What a lovely video, thanks for sharing!",
    "subscribe to my channel http://spam.example free $$$ 😂",
    "I hate you all, go die",
    "This video 太好看了!! lol 😂😂",
    "",
    "🔥🔥🔥",
    "好看",
]
HOSTILE = [
    "<script>alert(document.cookie)</script><img src=x onerror=alert(1)>",
    "<b>" * 500 + "&lt;&#x3C;&amp;" + "</b>" * 500,
    "spam " * (SETTINGS.max_text_chars // 5),  # exactly max_text_chars
    "😂" * SETTINGS.max_text_chars,
    "\x00\x01\x02\x07\x08\x1b[31mred\x1b[0m\x7f\x9f",
    "\u202eevil\u202c \ufeff\u200b\u200d zero-width",
    "a" + "\u0301" * 1000,  # combining marks
    "\n\r\t" * 300,
    "' OR 1=1; DROP TABLE comments; --",
    "你" * SETTINGS.max_text_chars,
]


@dataclass
class Subject:
    scorer: CommentScorer
    thresholds: Mapping[str, Mapping[str, Thresholds]]  # per language: what its decisions are made with


def _shipped_thresholds() -> dict[str, dict[str, Thresholds]]:
    """Those chosen for the shipped weights (THRESHOLDS_FILE beside them), read here independently."""
    path = SHIPPED_DIR / THRESHOLDS_FILE
    if not path.exists():
        return {lang: dict(SETTINGS.thresholds) for lang in ("en", "zh")}
    chosen = json.loads(path.read_text())["thresholds"]
    return {lang: {c: Thresholds(**chosen[lang].get(c, {})) for c in CATEGORIES} for lang in ("en", "zh")}


SHIPPED = _shipped_thresholds()
STRICT_BY_LANG = {lang: dict(STRICT.thresholds) for lang in ("en", "zh")}  # configuration wins everywhere


@pytest.fixture(scope="module")
def shipped() -> CommentModels:
    return load_comment_models(SETTINGS)


@pytest.fixture(scope="module")
def strict() -> CommentModels:
    return load_comment_models(STRICT)


IMPLEMENTATIONS: list = [
    pytest.param(lambda m, _: Subject(m, SHIPPED), id="comment-models-cpu"),
    pytest.param(lambda m, _: Subject(m.variant(torch.device("cpu"), batch_size=2), SHIPPED), id="variant-cpu-batch2"),
    pytest.param(
        lambda _, strict: Subject(strict.variant(torch.device("cpu"), batch_size=2), STRICT_BY_LANG),
        id="variant-of-strict-thresholds",
    ),
]


@pytest.fixture(params=IMPLEMENTATIONS)
def subject(request: pytest.FixtureRequest, shipped: CommentModels, strict: CommentModels) -> Subject:
    make: Callable[[CommentModels, CommentModels], Subject] = request.param
    return make(shipped, strict)


def _check_score(s: CommentScore, thresholds: Mapping[str, Mapping[str, Thresholds]]) -> None:
    assert isinstance(s, CommentScore)
    assert set(s.scores) == set(CATEGORIES) and len(s.scores) == len(CATEGORIES)
    assert all(isinstance(v, float) and math.isfinite(v) and 0.0 <= v <= 1.0 for v in s.scores.values()), s.scores
    assert set(s.sentiment) == set(SENTIMENT_KEYS) and len(s.sentiment) == len(SENTIMENT_KEYS)
    assert all(isinstance(v, float) and 0.0 <= v <= 1.0 for v in s.sentiment.values()), s.sentiment
    assert sum(s.sentiment.values()) == pytest.approx(1.0, abs=1e-5)
    assert s.lang in ("en", "zh")
    assert s.action in ACTIONS
    assert set(s.abstained) <= set(CATEGORIES)
    assert (s.action, s.reasons) == decide(s.scores, thresholds[s.lang], s.abstained)


def _close(a: CommentScore, b: CommentScore, tol: float = 1e-5) -> None:
    assert a.lang == b.lang
    assert a.scores == pytest.approx(b.scores, abs=tol)
    assert a.sentiment == pytest.approx(b.sentiment, abs=tol)


# ---- checks ----------------------------------------------------------------------------------------------------


def test_is_a_comment_scorer(subject: Subject) -> None:
    assert isinstance(subject.scorer, CommentScorer)
    assert isinstance(subject.scorer.model_version, str) and subject.scorer.model_version


def test_one_score_per_text_in_input_order(subject: Subject) -> None:
    out = subject.scorer.score(TEXTS)
    assert isinstance(out, list) and len(out) == len(TEXTS)
    assert all(isinstance(s, CommentScore) for s in out)
    backward = subject.scorer.score(TEXTS[::-1])[::-1]
    for a, b in zip(out, backward):
        _close(a, b)
    assert [s.lang for s in out] == ["en", "zh", "en", "en", "en", "zh", "en", "en", "zh"]


def test_category_scores_are_exactly_the_categories_in_unit_interval(subject: Subject) -> None:
    for s in subject.scorer.score(TEXTS):
        assert set(s.scores) == set(CATEGORIES) and len(s.scores) == len(CATEGORIES)
        assert all(isinstance(v, float) and math.isfinite(v) and 0.0 <= v <= 1.0 for v in s.scores.values())


def test_sentiment_is_a_distribution_over_negative_neutral_positive(subject: Subject) -> None:
    for s in subject.scorer.score(TEXTS):
        assert set(s.sentiment) == {"negative", "neutral", "positive"}
        assert all(0.0 <= v <= 1.0 for v in s.sentiment.values())
        assert sum(s.sentiment.values()) == pytest.approx(1.0, abs=1e-5)


def test_action_and_reasons_follow_decide(subject: Subject) -> None:
    out = subject.scorer.score(TEXTS + HOSTILE)
    for s in out:
        assert s.action in ACTIONS
        assert (s.action, s.reasons) == decide(s.scores, subject.thresholds[s.lang], s.abstained)


def test_a_head_never_decides_on_a_language_it_has_no_training_data_for(subject: Subject) -> None:
    """The spam head learned English YouTube comments only and blocked Chinese abuse as spam 0.97; the
    sexism head learned Chinese only. On the other language they abstain, and the score says so."""
    garbage_video = "垃圾视频，滚"  # "garbage video, get lost"
    zh, en = subject.scorer.score([garbage_video, "women belong in the kitchen"], ["zh", "en"])
    assert {"spam", "hate"} <= set(zh.abstained) and "offensive" not in zh.abstained
    assert "sexism" in en.abstained and "spam" not in en.abstained
    for s in (zh, en):
        assert not {r.split(">=")[0] for r in s.reasons} & set(s.abstained), s
    # every threshold at 0: only the categories trained in the comment's language decide
    zero = {c: Thresholds(review=0.0, block=0.0) for c in CATEGORIES}
    assert decide(zh.scores, zero, zh.abstained)[1] == [f"{c}>=0.00" for c in CATEGORIES if c not in zh.abstained]


def test_lang_is_given_or_detected(subject: Subject) -> None:
    scorer = subject.scorer
    out = scorer.score([ZH, "what a great video", ZH, "what a great video", ZH], [None, None, "en", "zh", "fr"])
    # None: detected; en/zh: as given, whatever the text; anything else: detected
    assert [s.lang for s in out] == ["zh", "en", "en", "zh", "zh"]
    assert [s.lang for s in scorer.score([ZH, "hello"])] == ["zh", "en"]  # langs absent: all detected
    _close(scorer.score([ZH])[0], scorer.score([ZH], ["zh"])[0])  # detected zh scores as given zh


@pytest.mark.parametrize("n_langs", [0, 1, 3])
def test_langs_of_another_length_raise_value_error(subject: Subject, n_langs: int) -> None:
    with pytest.raises(ValueError):
        subject.scorer.score(["one", "two"], ["en"] * n_langs)


def test_batch_equals_one_by_one(subject: Subject) -> None:
    texts = TEXTS + HOSTILE
    langs = [None, "zh", "en", None] * (len(texts) // 4) + [None] * (len(texts) % 4)
    batch = subject.scorer.score(texts, langs)
    for text, lang, got in zip(texts, langs, batch):
        _close(got, subject.scorer.score([text], [lang])[0])


def test_empty_input_returns_empty_list(subject: Subject) -> None:
    assert subject.scorer.score([]) == []
    assert subject.scorer.score([], []) == []
    assert subject.scorer.score([], None) == []


def test_hostile_texts_score_without_error(subject: Subject) -> None:
    out = subject.scorer.score(HOSTILE)
    assert len(out) == len(HOSTILE)
    for s in out:
        _check_score(s, subject.thresholds)
