"""TEMPORARY wiring adapter (replaced when the model helpers land)."""
from __future__ import annotations
from dataclasses import dataclass, field
from typing import Any
from models.recs.popularity import PopularityRecommender
from reelstream.settings import Settings


class _Pop:
    model_version = "popularity-v1"
    def __init__(self, s: Settings) -> None:
        self.p = PopularityRecommender(s.recs.popularity_half_life_s)
    def learn(self, user_id, history, new):
        for e in new: self.p.observe(e[1], 1.0, e[3])
    def recommend(self, user_id, history, k, exclude):
        return self.p.recommend({}, k, exclude)
    def forget_user(self, user_id): pass
    def remove_video(self, video_id): self.p.remove_videos([video_id])


@dataclass
class _R:
    lang: str; scores: dict; sentiment: dict; action: str; reasons: list = field(default_factory=list)

class _Scorer:
    model_version = "temp"
    def score(self, texts, langs):
        return [_R(l or "en", {c: 0.0 for c in ("toxic","offensive","hate","sexism","spam")}, {"negative":0.2,"neutral":0.6,"positive":0.2}, "allow") for t, l in zip(texts, langs)]


def load_recommender(s): return _Pop(s)
def load_scorer(s): return _Scorer()
