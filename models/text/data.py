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


def check_row(rec: object, spec: DatasetSpec, where: str) -> Example:
    """One labeled row of `spec`'s dataset, or ValueError naming `where`: a train.jsonl line and a reviewer
    decision (models/text/decisions.py) pass the same checks, so neither can slip a malformed label in.

    A row is an object with a non-empty `text`, an optional `lang` that must be the dataset's own (its
    experts are per language), and `labels` holding at least one of the dataset's labels, each 0/1 (0/1/2
    for 3-class sentiment); other keys of `labels` are ignored, as train.jsonl files carry extra columns."""
    if not isinstance(rec, dict):
        raise ValueError(f"{where}: not a JSON object")  # noqa: TRY004 (one error type for any malformed row)
    text, lang, labels = rec.get("text"), rec.get("lang"), rec.get("labels")
    if not isinstance(text, str) or not text.strip():
        raise ValueError(f"{where}: text must be a non-empty string")
    if lang is not None and lang != spec.lang:
        raise ValueError(f"{where}: lang {lang!r} is not {spec.name}'s language {spec.lang!r}")
    if not isinstance(labels, dict):
        raise ValueError(f"{where}: labels must be an object")  # noqa: TRY004
    out: dict[str, int] = {}
    for k in spec.labels:
        if k not in labels:
            continue
        v = labels[k]
        top = 2 if k == "sentiment" and spec.name not in BINARY_SENTIMENT else 1
        if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v <= top:
            raise ValueError(f"{where}: label {k}={v!r} is not an integer in 0..{top}")
        out[k] = v
    if not out:
        raise ValueError(f"{where}: none of {spec.name}'s labels {spec.labels}")
    if spec.name in BINARY_SENTIMENT and "sentiment" in out:
        out["sentiment"] *= 2
    meta = rec.get("meta") or {}
    tags = {k: v for k, v in meta.items() if isinstance(v, str)} if isinstance(meta, dict) else {}
    return Example(spec.name, text, lang or spec.lang, out, tags)


def load_dataset(data_dir: Path, spec: DatasetSpec, limit: int | None = None) -> list[Example]:
    """Read one train.jsonl, keeping only this spec's labels; binary sentiment 1 becomes 2 (positive).
    Every line goes through `check_row`; a malformed one raises ValueError naming file and line.

    `limit` keeps a seeded random sample of that many rows (files are often sorted by label)."""
    out: list[Example] = []
    path = data_dir / spec.name / "train.jsonl"
    with open(path, "rb") as f:
        for lineno, line in enumerate(f, 1):
            try:
                rec = orjson.loads(line)
            except orjson.JSONDecodeError as exc:
                raise ValueError(f"{path}:{lineno}: not valid JSON ({exc})") from None
            out.append(check_row(rec, spec, f"{path}:{lineno}"))
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
