"""Settings section for recommendations (read only through streams.settings.Settings)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, model_validator

from models.recs.arms import Arm, check_arms


class ConfidenceWeights(BaseModel):
    """How much each kind of feedback adds to a (user, video) confidence. Configuration, not code."""

    model_config = ConfigDict(frozen=True)
    watch: float = 1.0  # multiplied by the watch ratio (watch_ms / duration_ms, capped at 1)
    like: float = 4.0
    share: float = 6.0
    skip: float = -0.5
    comment_positive: float = 2.0
    comment_negative: float = -1.0
    comment_neutral: float = 0.5


class RecsSettings(BaseModel):
    model_config = ConfigDict(frozen=True)
    top_k: int = Field(10, ge=1, le=500)
    # ALS hyperparameters and the history decay below were tuned by prequential replay of the first 40% of
    # MovieLens-100K (`reelstream eval recs`, models/recs/evaluate.py): fewer factors and a strong
    # regularisation suit histories that are short or dominated by the latest few minutes.
    factors: int = Field(32, ge=2)
    regularization: float = 10.0
    alpha: float = 3.0
    # ALS confidence = sign(c) * (confidence_offset + alpha * |c|): 1 is Hu-Koren-Volinsky's 1 + alpha r, so
    # observed videos never weigh less than unobserved ones; 0 is implicit's raw convention (alpha * c).
    confidence_offset: float = Field(1.0, ge=0)
    iterations: int = 15
    history_max_events: int = Field(500, ge=1)  # per user; also the event_id dedup window
    popularity_half_life_s: float = Field(3600.0, gt=0)
    # Two time scales of a user's taste (models/recs/confidence.py): a feedback's confidence halves every
    # history_half_life_s of age (vs the user's latest event; 0 = no decay): the session leads; once older
    # than history_session_gap_s it keeps history_long_term_weight of its value for good: long-term taste.
    # Chosen on MovieLens-100K and the synthetic stream (README, Recommendations).
    history_half_life_s: float = Field(150.0, ge=0)
    history_long_term_weight: float = Field(0.1, ge=0, le=1)
    history_session_gap_s: float = Field(1800.0, ge=0)
    # Users whose floored history prefix a worker keeps (models/recs/confidence.py FlooredPrefixCache), the
    # least recently served dropped first; a dropped user's next serve reads their whole history once.
    prefix_cache_users: int = Field(50_000, ge=1)
    item_refresh_interval_s: float = Field(2.0, gt=0)
    # (video, user) pairs one item refresh solves at most; the other touched videos wait for the next ones. A
    # restart re-solves every restored video: a million pairs in one refresh held the event loop ~3 s.
    item_solve_max_pairs: int = Field(200_000, ge=1)
    # Per ALS recommendation, how many videos of the user's history that added most to its score are named
    # (`because`, models/recs/solve.py `contributions`); 0: none.
    explain_top: int = Field(3, ge=0)
    # Diversity (models/recs/diversity.py): MMR strength in [0, 1) over diversity_pool x top_k candidates of
    # the index; 0 serves the plain nearest videos.
    diversity: float = Field(0.0, ge=0, lt=1)
    diversity_pool: int = Field(4, ge=1)
    # Exploration (models/recs/exploration.py): explore_share of the list positions served (the last ones of
    # a list) go to videos with fewer than explore_until_interactions interactions (new uploads get their
    # first ones there), each shown at most explore_max_impressions times per worker that way; 0: off.
    explore_share: float = Field(0.05, ge=0, lt=1)
    # Freshness (models/recs/als.py `_with_fresh`): a video uploaded age seconds ago has its ALS score
    # multiplied by 1 + freshness x 2^(-age / freshness_half_life_s) for 4 half-lives, and competes with the
    # index's candidates; 0: off. ALS ranks by accumulated interactions, so a video a day old loses to one a
    # week old with the same appeal; chosen on the synthetic stream with appeal half-lives of 1 to 4 days
    # and none (README, "Freshness").
    freshness: float = Field(8.0, ge=0)
    freshness_half_life_s: float = Field(86_400.0, gt=0)
    explore_until_interactions: int = Field(5, ge=1)
    explore_max_impressions: int = Field(100, ge=1)
    # Largest norm of an item or user vector read from item-vectors / interactions-by-video; anything above
    # is dead-lettered (a hostile 1e30 vector would rank its video first for everyone). Fits of 3,000 users
    # x 30 interactions gave at most 1.8 (items) and 3.6 (users), at regularization 10 and 0.1.
    max_vector_norm: float = Field(100.0, gt=0)
    # The batch refit (models/recs/refit.py; the `reelstream trainer` process): none before
    # refit_min_interactions stored interactions, then whenever they changed by refit_growth times those of
    # the last fit, or refit_interval_s of event time after it. Warm-started refits run refit_iterations.
    refit_min_interactions: int = Field(100, ge=1)
    refit_growth: float = Field(0.25, gt=0)
    refit_interval_s: float = Field(3600.0, gt=0)
    refit_iterations: int = Field(5, ge=1)
    model_dir: str = ""  # a saved batch model to bootstrap from; empty = start cold
    weights: ConfidenceWeights = ConfidenceWeights()
    # A/B arms (models/recs/arms.py), e.g. REELSTREAM_RECS__ARMS='[{"name": "control", "share": 0.5},
    # {"name": "diverse", "share": 0.5, "diversity": 0.3}]': users assigned by a stable hash of (ab_salt,
    # user id); shares add up to 1. Empty: no experiment, no `arm` on outputs.
    arms: tuple[Arm, ...] = ()
    ab_salt: str = Field("ab-1", min_length=1, max_length=64)

    @model_validator(mode="after")
    def _arms_are_a_partition(self) -> RecsSettings:
        check_arms(self.arms)
        return self
