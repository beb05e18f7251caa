"""Stable ids of the worker's steps (its agents and periodic tasks), as Bytewax names its steps: one string is
the Faust agent's name, the `agent` or `task` label of its metrics (monitoring/metrics.py, the Grafana
dashboard and the alert rules select on them) and the step its log lines name. Changing one renames a
metric series: dashboards and rules must follow."""

from __future__ import annotations

INTERACTIONS = "interactions"  # events: history, dedup, erasure, user factors, recommendations
CATALOG = "catalog"  # videos: upload / remove / block
ITEM_TRAINER = "item-trainer"  # interactions-by-video: the item side's inputs
MODERATION = "moderation"  # comments: torch models, moderation flags, sentiment fed back
REVIEW_DECISIONS = "review-decisions"  # reviewers' decisions: overriding flags, statements of reasons, appeals

SWAP_MODEL = "swap_model"  # a newer saved batch model, served without stopping
SWAP_COMMENT_MODEL = "swap_comment_model"  # newer comment-model weights, served without stopping
REFRESH_ITEMS = "refresh_items"  # the item cadence: re-solved item vectors and user Gram sums published
REFRESH_RECS = "refresh_recs"  # every user served again after a new batch model version
PURGE_STORES = "purge_stores"  # keys deleted from the local stores (erasures) compacted out of their files
RESTORE_FACTORS = "restore_factors"  # the factors of users in partitions new to a worker, for its Gram sums
REFIT = "refit"  # the trainer process: a batch refit published as a new model version
