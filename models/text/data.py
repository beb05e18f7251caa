"""The labeled comment datasets: which label each one carries, loading, and the fixed validation split.

Only `train.jsonl` of each dataset is read; the held-out test splits live elsewhere and judge the models,
so every choice here (epochs, architecture) is made on a validation split carved from train with a seed.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path

import orjson

VALIDATION_FRACTION = 0.1
SPLIT_SEED = "reelstream-text-val-v1"


@dataclass(frozen=True)
class DatasetSpec:
    """One source dataset: its language and the labels it provides (binary unless it is sentiment)."""

    name: str
    lang: str
    labels: tuple[str, ...]


DATASETS: tuple[DatasetSpec, ...] = (
    DatasetSpec("davidson_hate_offensive", "en", ("offensive", "hate")),
    DatasetSpec("olid_offensive", "en", ("offensive",)),
    DatasetSpec("hateval_en", "en", ("hate",)),
    DatasetSpec("jigsaw_toxic_sample", "en", ("toxic",)),
    DatasetSpec("youtube_spam", "en", ("spam",)),
    DatasetSpec("cold_offensive", "zh", ("offensive",)),
    DatasetSpec("swsr_sexism", "zh", ("sexism",)),
    DatasetSpec("sst2", "en", ("sentiment",)),
    DatasetSpec("tweeteval_sentiment", "en", ("sentiment",)),
    DatasetSpec("chnsenticorp_htl", "zh", ("sentiment",)),
    DatasetSpec("waimai_10k", "zh", ("sentiment",)),
    DatasetSpec("online_shopping_10_cats", "zh", ("sentiment",)),
)
DATASET_NAMES = tuple(d.name for d in DATASETS)
BINARY_SENTIMENT = {"sst2", "chnsenticorp_htl", "waimai_10k", "online_shopping_10_cats"}


@dataclass(frozen=True)
class Example:
    """One labeled text. `sentiment` uses 0/1/2 = negative/neutral/positive for every dataset."""

    dataset: str
    text: str
    lang: str
    labels: dict[str, int]
    tags: dict[str, str] = field(default_factory=dict)  # the source's string metadata (COLD topic, YouTube video)


def selected(example: Example, selectors: tuple[str, ...]) -> bool:
    """Whether a selector names this example: "dataset", or "dataset:key=value" for one of its tags (the
    out-of-distribution folds of models/text/ood.py leave such groups out of training)."""
    for sel in selectors:
        name, _, tag = sel.partition(":")
        if name != example.dataset:
            continue
        if not tag:
            return True
        key, _, value = tag.partition("=")
        if example.tags.get(key) == value:
            return True
    return False


def default_data_dir() -> Path:
    """../shared/data relative to the repository root, as the project's README says."""
    return Path(__file__).resolve().parents[2].parent / "shared" / "data"


def load_dataset(data_dir: Path, spec: DatasetSpec, limit: int | None = None) -> list[Example]:
    """Read one train.jsonl, keeping only this spec's labels; binary sentiment 1 becomes 2 (positive).

    `limit` keeps a seeded random sample of that many rows (files are often sorted by label)."""
    out: list[Example] = []
    with open(data_dir / spec.name / "train.jsonl", "rb") as f:
        for line in f:
            rec = orjson.loads(line)
            labels = {k: int(rec["labels"][k]) for k in spec.labels if k in rec["labels"]}
            if spec.name in BINARY_SENTIMENT and "sentiment" in labels:
                labels["sentiment"] *= 2
            tags = {k: v for k, v in (rec.get("meta") or {}).items() if isinstance(v, str)}
            out.append(Example(spec.name, rec["text"], rec.get("lang") or spec.lang, labels, tags))
    if limit is not None and limit < len(out):
        keep = sorted(random.Random(f"{SPLIT_SEED}-limit-{spec.name}").sample(range(len(out)), limit))
        out = [out[i] for i in keep]
    return out


def split(examples: list[Example], fraction: float = VALIDATION_FRACTION) -> tuple[list[Example], list[Example]]:
    """Seeded shuffle per dataset, so the validation split never changes between runs."""
    if not examples:
        return [], []
    order = list(range(len(examples)))
    random.Random(f"{SPLIT_SEED}-{examples[0].dataset}").shuffle(order)
    n_val = max(1, round(len(examples) * fraction))
    return [examples[i] for i in order[n_val:]], [examples[i] for i in order[:n_val]]


def load_splits(
    data_dir: Path, limit_per_dataset: int | None = None
) -> tuple[list[Example], list[Example]]:
    """Train and validation examples of every known dataset present under data_dir."""
    train: list[Example] = []
    val: list[Example] = []
    for spec in DATASETS:
        if not (data_dir / spec.name / "train.jsonl").exists():
            continue
        tr, va = split(load_dataset(data_dir, spec, limit_per_dataset))
        train += tr
        val += va
    if not train:
        raise FileNotFoundError(f"no <dataset>/train.jsonl under {data_dir}")
    return train, val
