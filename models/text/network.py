"""The one comment network: a TF-IDF vector of n-grams (vocabulary ids), two views of it, and many small heads.

Each source dataset labels its own notion of "offensive" or "positive" (Davidson tags any slur as
offensive, OLID only targeted insults; SST-2 is movie reviews, waimai is food delivery), so every
(dataset, label) pair gets its own expert head on the shared representation, and a domain head learns
which dataset a text resembles. Where one language has several experts for a category (en offensive:
Davidson/OLID, en hate: Davidson/HatEval, en and zh sentiment), a linear router trained to tell those
sources apart says how much each expert counts; otherwise the domain posterior does, restricted to experts
of the text's language where any exist. Experts are mixed as likelihood ratios (logit minus the log-odds of
their dataset's base rate, weighted as above) plus the mean base log-odds of the language's experts, so a
text routed to Davidson (6% hate) and one routed to HatEval (41% hate) are scored on one scale.
Only the text and its language are used: no dataset identity is needed or accepted at inference.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
from torch import nn

from models.text.config import CATEGORIES
from models.text.data import DATASETS
from models.text.features import FeatureConfig

# `toxic` is one shared head (see TaskLayout), every other category is a mixture of per-dataset experts.
EXPERT_CATEGORIES = tuple(c for c in CATEGORIES if c != "toxic")
# Which labels of which dataset train the shared toxic head: any offensive, hate or sexist text is toxic.
TOXIC_SOURCES = ("toxic", "offensive", "hate", "sexism")


def _labels_of(dataset: str) -> tuple[str, ...]:
    return next((d.labels for d in DATASETS if d.name == dataset), ())


@dataclass(frozen=True)
class TaskLayout:
    """Where each head sits in the network's output vector."""

    domains: tuple[str, ...] = tuple(d.name for d in DATASETS)
    domain_langs: tuple[str, ...] = tuple(d.lang for d in DATASETS)
    binary: tuple[tuple[str, str], ...] = tuple(
        (d.name, label) for d in DATASETS for label in d.labels if label in EXPERT_CATEGORIES
    )
    sentiment: tuple[str, ...] = tuple(d.name for d in DATASETS if "sentiment" in d.labels)

    @property
    def toxic_col(self) -> int:
        return len(self.binary)

    @property
    def sentiment_start(self) -> int:
        return len(self.binary) + 1

    @property
    def domain_start(self) -> int:
        return self.sentiment_start + 3 * len(self.sentiment)

    @property
    def n_outputs(self) -> int:
        """Outputs of the deep view: every head and the domain head."""
        return self.domain_start + len(self.domains)

    def experts(self, category: str) -> list[str]:
        """Datasets with an expert head for a category (sentiment included)."""
        if category == "sentiment":
            return list(self.sentiment)
        return [d for d, label in self.binary if label == category]

    def languages(self, category: str) -> frozenset[str]:
        """Languages some training data of `category` is in: a head abstains on the others (the spam head
        learned English YouTube comments only, and fired on Chinese abuse)."""
        if category == "toxic":
            return frozenset(
                lang for d, lang in zip(self.domains, self.domain_langs)
                if any(label in TOXIC_SOURCES for label in _labels_of(d))
            )  # fmt: skip
        return frozenset(self.domain_langs[self.domains.index(d)] for d in self.experts(category))

    @property
    def routers(self) -> tuple[tuple[str, str, tuple[str, ...]], ...]:
        """(category, lang, expert datasets) wherever one language has several experts for a category."""
        out = []
        for cat in (*EXPERT_CATEGORIES, "sentiment"):
            for lang in ("en", "zh"):
                names = tuple(d for d in self.experts(cat) if self.domain_langs[self.domains.index(d)] == lang)
                if len(names) > 1:
                    out.append((cat, lang, names))
        return tuple(out)

    @property
    def n_linear(self) -> int:
        """Outputs of the linear view: every head but the domain head, then the routers."""
        return self.domain_start + sum(len(r[2]) for r in self.routers)


@dataclass(frozen=True)
class NetConfig:
    """Everything needed to rebuild the network from a checkpoint."""

    features: FeatureConfig = field(default_factory=FeatureConfig)
    deep_buckets: int = 1 << 16  # rows of the shared embedding (feature ids are folded modulo this)
    dim: int = 32
    hidden: int = 256
    dropout: float = 0.2
    # Static word-piece embeddings distilled from MiniLM (models.text.static_embeddings); 0 = none.
    static_vocab: int = 0
    static_dims: int = 0
    static_scale: float = 0.05  # weight of the standardized static vector among the linear view's features
    # Rows the dataset experts' linear heads were last fitted on: "train", or "train+validation" when they
    # were refit on the validation split too once its choices were made (TrainOptions.refit_on_validation),
    # so that split no longer validates them (models.text.evaluation says so).
    linear_fit: str = "train"
    # Rows the deep view was last trained on: "train", or "train+validation" when it was trained again on both
    # for the chosen epochs (TrainOptions.refit_deep_on_validation).
    deep_fit: str = "train"

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> NetConfig:
        feats = {k: tuple(v) if isinstance(v, list) else v for k, v in d["features"].items()}
        feats.setdefault("sublinear_tf", False)  # checkpoints from before the option counted every occurrence
        return cls(**{**d, "features": FeatureConfig(**feats)})


class CommentNet(nn.Module):
    """Two views of one TF-IDF vector, blended per head, then `combine`d into the public scores.

    - deep: shared embedding -> hidden layer -> every head (multi-task; also the domain head);
    - linear: one convex logistic regression per head over the full hash space (models.text.linear),
      the same model family as the TF-IDF baseline but on shared features.
    `blend[j]` is the linear view's weight in head j's logit, chosen per head on validation data; the
    linear view also holds the routers (see the module docstring).
    """

    def __init__(
        self, config: NetConfig, layout: TaskLayout = TaskLayout(), *, views_of: CommentNet | None = None
    ) -> None:
        """`views_of`: build a member over that net's featurization and linear view (share_views) without
        allocating the linear and static tables it would discard (~55 ms a member). For loading only: the
        skipped tables' random draws are missing, so the deep view's initial weights are not the ones a
        training draws for its seed (training builds members whole)."""
        super().__init__()
        self.config = config
        self.layout = layout
        self.register_buffer("idf", torch.ones(config.features.buckets))
        if config.features.vocabulary:  # sorted uint64 n-gram hashes (stored as int64 bits): see features.py
            self.register_buffer("vocab", torch.zeros(config.features.buckets, dtype=torch.int64))
        self.embedding = nn.EmbeddingBag(config.deep_buckets, config.dim, mode="sum", sparse=True)
        nn.init.uniform_(self.embedding.weight, -0.1, 0.1)
        if config.static_dims:
            if views_of is None:
                self.static = nn.EmbeddingBag(config.static_vocab, config.static_dims, mode="mean")
                self.static.weight.requires_grad_(False)
            self.register_buffer("static_mean", torch.zeros(config.static_dims))
            self.register_buffer("static_std", torch.ones(config.static_dims))
            self.register_buffer("static_linear", torch.zeros(config.static_dims, layout.n_linear))
        self.encoder = nn.Sequential(
            nn.Dropout(config.dropout),
            nn.Linear(config.dim + config.static_dims, config.hidden),
            nn.GELU(),
            nn.Dropout(config.dropout),
        )
        self.heads = nn.Linear(config.hidden, layout.n_outputs)
        if views_of is None:
            self.linear = nn.EmbeddingBag(config.features.buckets, layout.n_linear, mode="sum")
            nn.init.zeros_(self.linear.weight)
            self.linear.weight.requires_grad_(False)
        self.register_buffer("linear_bias", torch.zeros(layout.n_linear))
        self.register_buffer("blend", torch.zeros(layout.domain_start))
        # Training-set log-odds of each binary expert's label: experts are mixed as likelihood ratios.
        self.register_buffer("prior_logit", torch.zeros(len(layout.binary)))
        # Per router: weight of the deep domain head's logits (of the same experts) in its routing logits,
        # chosen on validation data; 0 = the linear router alone.
        self.register_buffer("route_mix", torch.zeros(len(layout.routers)))
        # Per router output: a bias added to its routing logits (a prior over the sources; 0 = as trained).
        self.register_buffer("route_bias", torch.zeros(layout.n_linear - layout.domain_start))
        self._build_mixtures()
        if views_of is not None:
            share_views(self, views_of)

    def _build_mixtures(self) -> None:
        """Per category: expert output columns, their domain columns, a [lang, expert] mask, and per
        language the router's output columns and the experts it ranks (None: use the domain head)."""
        lay = self.layout
        self._mixtures: dict[str, tuple[list[int], list[int]]] = {}
        self._routes: dict[tuple[str, str], tuple[list[int], list[int], list[int], int, slice]] = {}
        start = lay.n_outputs
        for r, (cat, lang, names) in enumerate(lay.routers):
            experts = lay.experts(cat)
            self._routes[(cat, lang)] = (
                list(range(start, start + len(names))),
                [experts.index(n) for n in names],
                [lay.domain_start + lay.domains.index(n) for n in names],
                r,
                slice(start - lay.n_outputs, start - lay.n_outputs + len(names)),  # its route_bias entries
            )
            start += len(names)
        for cat in (*EXPERT_CATEGORIES, "sentiment"):
            names = lay.experts(cat)
            if cat == "sentiment":
                cols = list(range(len(names)))
            else:
                cols = [lay.binary.index((n, cat)) for n in names]
            doms = [lay.domains.index(n) for n in names]
            langs = [lay.domain_langs[i] for i in doms]
            mask = torch.zeros(2, len(names))
            for li, lang in enumerate(("en", "zh")):
                own = [float(x == lang) for x in langs]
                mask[li] = torch.tensor(own if any(own) else [1.0] * len(names))
            self.register_buffer(f"mask_{cat}", mask, persistent=False)
            self._mixtures[cat] = (cols, doms)

    def vocabulary(self) -> np.ndarray | None:
        """The feature vocabulary as sorted uint64 n-gram hashes (what Featurizer takes), or None (hashing)."""
        if not self.config.features.vocabulary:
            return None
        return self.vocab.detach().cpu().numpy().view(np.uint64)

    def forward(
        self,
        indices: torch.Tensor,
        offsets: torch.Tensor,
        tf: torch.Tensor | None = None,
        pieces: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """Blended logits of every head, [batch, n_outputs]."""
        return self.blended(*self.views(indices, offsets, tf, pieces))

    def blended(self, deep: torch.Tensor, lin: torch.Tensor, blend: torch.Tensor | None = None) -> torch.Tensor:
        """[heads blended per head | domain head (deep) | routers (linear)]: the input of `combine`.
        `deep` may stack several members' deep logits [K, batch, n_outputs] over one `lin`, with their blends
        stacked as [K, 1, n] (ensemble_outputs); by default this net's own blend."""
        blend = self.blend if blend is None else blend
        n = self.blend.shape[-1]
        mixed = blend * lin[..., :n] + (1 - blend) * deep[..., :n]
        return torch.cat([mixed, deep[..., n:], lin[..., n:].expand(*deep.shape[:-1], -1)], dim=-1)

    def views(
        self,
        indices: torch.Tensor,
        offsets: torch.Tensor,
        tf: torch.Tensor | None = None,
        pieces: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Deep logits [batch, n_outputs] and linear logits [batch, n_linear] of the same texts.
        `pieces`: MiniLM word-piece ids and offsets of the same texts (needed when the net has a static view)."""
        w = self.tfidf_weights(indices, offsets, tf)
        z = self.static_features(pieces, len(offsets))
        return self._deep(indices, offsets, w, z), self._linear(indices, offsets, w, z)

    def _linear(
        self, indices: torch.Tensor, offsets: torch.Tensor, w: torch.Tensor, static: torch.Tensor | None
    ) -> torch.Tensor:
        lin = self.linear(indices, offsets, per_sample_weights=w) + self.linear_bias
        if static is not None:
            lin = lin + (self.config.static_scale * static) @ self.static_linear
        return lin

    def static_features(
        self, pieces: tuple[torch.Tensor, torch.Tensor] | None, n: int
    ) -> torch.Tensor | None:
        """Standardized mean of the texts' static word-piece vectors [n, static_dims], or None."""
        if not self.config.static_dims:
            return None
        if pieces is None:
            raise ValueError("this network has a static embedding view: pass the texts' word pieces")
        pooled = self.static(pieces[0], pieces[1])
        return (pooled - self.static_mean) / self.static_std

    def deep_logits(
        self,
        indices: torch.Tensor,
        offsets: torch.Tensor,
        tf: torch.Tensor | None = None,
        static: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Deep view only (what SGD trains); `static`: the texts' standardized static vectors."""
        return self._deep(indices, offsets, self.tfidf_weights(indices, offsets, tf), static)

    def _deep(
        self, indices: torch.Tensor, offsets: torch.Tensor, w: torch.Tensor, static: torch.Tensor | None = None
    ) -> torch.Tensor:
        pooled = self.embedding(indices % self.config.deep_buckets, offsets, per_sample_weights=w)
        if static is not None:
            pooled = torch.cat([pooled, static], dim=1)
        return self.heads(self.encoder(pooled))

    def tfidf_weights(
        self, indices: torch.Tensor, offsets: torch.Tensor, tf: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Per entry weight tf * idf / ||tf * idf of the text||: pooling with it projects the text's TF-IDF
        vector (tf: the featurizer's sublinear term frequency of each deduplicated entry, or 1 each)."""
        w = self.idf[indices]
        if tf is not None:
            w = w * tf
        counts = torch.diff(offsets, append=offsets.new_tensor([len(indices)]))
        rows = torch.repeat_interleave(torch.arange(len(offsets), device=offsets.device), counts)
        norm = torch.zeros(len(offsets), device=w.device, dtype=w.dtype).index_add_(0, rows, w * w).sqrt()
        return w / norm.clamp(min=1e-6)[rows]

    def combine(
        self,
        logits: torch.Tensor,
        is_zh: torch.Tensor,
        route_mix: torch.Tensor | None = None,
        route_bias: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Category scores [batch, len(CATEGORIES)] and sentiment probabilities [batch, 3].
        `logits` may stack several members' blended logits [K, batch, n]: the outputs are then [K, batch, ...],
        and the members' routing settings come stacked as [K, 1, n] (ensemble_outputs). One call for K members
        costs about what one call for one did (245 small tensor operations either way), K calls K times that."""
        lay = self.layout
        logits = logits.float()
        routing = (
            self.route_mix if route_mix is None else route_mix,
            self.route_bias if route_bias is None else route_bias,
        )
        p_dom = torch.softmax(logits[..., lay.domain_start : lay.n_outputs], dim=-1)
        cat_scores = []
        for cat in CATEGORIES:
            if cat == "toxic":
                cat_scores.append(torch.sigmoid(logits[..., lay.toxic_col]))
                continue
            cols, _ = self._mixtures[cat]
            weights = self._expert_weights(cat, logits, p_dom, is_zh, routing)
            prior = self.prior_logit[cols]
            masks = getattr(self, f"mask_{cat}")
            base = (masks * prior).sum(1) / masks.sum(1)  # mean base-rate log-odds per language [en, zh]
            cat_scores.append(torch.sigmoid(((logits[..., cols] - prior) * weights).sum(-1) + base[is_zh.long()]))
        weights = self._expert_weights("sentiment", logits, p_dom, is_zh, routing)
        sent = logits[..., lay.sentiment_start : lay.domain_start].unflatten(-1, (-1, 3))
        probs = (torch.softmax(sent, dim=-1) * weights.unsqueeze(-1)).sum(-2)
        return torch.stack(cat_scores, -1).clamp(0.0, 1.0), probs / probs.sum(-1, keepdim=True)

    def _expert_weights(
        self,
        cat: str,
        logits: torch.Tensor,
        p_dom: torch.Tensor,
        is_zh: torch.Tensor,
        routing: tuple[torch.Tensor, torch.Tensor],
    ) -> torch.Tensor:
        """Per text, how much each expert of `cat` counts: the router of the text's language where one
        exists, else the domain posterior over the experts of that language (or all, if it has none).
        `routing`: (route_mix, route_bias), this net's or members' stacked (see `combine`)."""
        _, doms = self._mixtures[cat]
        per_lang = []
        for li, lang in enumerate(("en", "zh")):
            route = self._routes.get((cat, lang))
            if route is not None:
                w = torch.zeros(*logits.shape[:-1], len(doms), device=logits.device)
                mix = routing[0][..., route[3] : route[3] + 1]
                bias = routing[1][..., route[4]]
                route_logits = (1 - mix) * logits[..., route[0]] + mix * logits[..., route[2]] + bias
                w[..., route[1]] = torch.softmax(route_logits, dim=-1)
            else:
                mask = getattr(self, f"mask_{cat}")[li]
                w = p_dom[..., doms] * mask + 1e-12 * mask
                w = w / w.sum(-1, keepdim=True)
            per_lang.append(w)
        return torch.where(is_zh.unsqueeze(-1), per_lang[1], per_lang[0])


DEEP_MODULES = ("embedding", "encoder", "heads")  # what training's epochs train; the linear view is fitted apart
# What one member of an ensemble owns (state-dict keys by their first component): its deep view and the blend
# and routing chosen for it. The featurization, the linear view and the priors are the same for every member.
MEMBER_MODULES = (*DEEP_MODULES, "blend", "route_mix", "route_bias")
_SHARED_BUFFERS = ("idf", "vocab", "static_mean", "static_std", "static_linear", "linear_bias", "prior_logit")


def member_state(net: CommentNet) -> dict[str, torch.Tensor]:
    """The state `net` owns as a member: see MEMBER_MODULES."""
    return {k: v for k, v in net.state_dict().items() if k.split(".")[0] in MEMBER_MODULES}


def share_views(member: CommentNet, base: CommentNet) -> CommentNet:
    """`member` reading `base`'s featurization and linear view through the same tensors, so K members hold one
    copy and a refit of base's linear heads is every member's. (Moving a net to another device copies the small
    shared buffers per member; the linear and static tables are modules and stay shared.)"""
    member.linear = base.linear
    if base.config.static_dims:
        member.static = base.static
    for name in _SHARED_BUFFERS:
        if name in base._buffers:
            setattr(member, name, getattr(base, name))
    return member


def ensemble_outputs(
    members: Sequence[CommentNet],
    is_zh: torch.Tensor,
    indices: torch.Tensor,
    offsets: torch.Tensor,
    tf: torch.Tensor | None = None,
    pieces: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean over `members` (sharing members[0]'s featurization and linear view, see share_views) of `combine`'s
    category scores and sentiment probabilities. Members differ in the deep view, trained from another seed,
    and its blend and routing: the training seed alone moved out-of-distribution lines by up to 0.013, and the
    mean of three seeds held up better there than one seed did on average (issue #17). One member: exactly
    `combine(forward(...))`."""
    first = members[0]
    w = first.tfidf_weights(indices, offsets, tf)
    z = first.static_features(pieces, len(offsets))
    lin = first._linear(indices, offsets, w, z)
    deep = torch.stack([m._deep(indices, offsets, w, z) for m in members])

    def stacked(name: str) -> torch.Tensor:
        return torch.stack([getattr(m, name) for m in members]).unsqueeze(1)  # [K, 1, n]: over the batch

    logits = first.blended(deep, lin, stacked("blend"))
    cats, sent = first.combine(logits, is_zh, stacked("route_mix"), stacked("route_bias"))
    return cats.sum(0) / len(members), sent.sum(0) / len(members)  # x / 1 is x exactly
