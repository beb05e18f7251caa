"""The loaded comment models: one featurization and one forward pass serve moderation and sentiment.

`CommentModels` is what the stream worker and `reelstream score` use; `moderator` and `sentiment`
expose the same network through the two narrower protocols of models.text.base.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch

from models.text.base import SENTIMENT_KEYS, CommentScore, decide, resolve_langs
from models.text.calibration import Calibration
from models.text.config import CATEGORIES, ModerationSettings, Thresholds
from models.text.features import Featurizer
from models.text.network import CommentNet, NetConfig, ensemble_outputs, member_state
from models.text.static_embeddings import TOKENIZER_FILE, StaticTokenizer

WEIGHTS_FILE = "comment_net.pt"
THRESHOLDS_FILE = "thresholds.json"
LANGS = ("en", "zh")
SHIPPED_DIR = Path(__file__).resolve().parent / "weights"


def select_device(device: str) -> torch.device:
    """"auto" means cuda when torch sees one, else cpu."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def fp16_state(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A state dict as the checkpoint holds it (floating tensors in fp16, on the CPU)."""
    return {k: v.detach().cpu().half() if v.is_floating_point() else v.cpu() for k, v in state.items()}


def fp32_state(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A checkpoint's state dict as the network computes with it (floating tensors in fp32)."""
    return {k: v.float() if v.is_floating_point() else v for k, v in state.items()}


def save_checkpoint(net: CommentNet, path: Path, model_version: str, members: Sequence[CommentNet] = ()) -> None:
    """fp16 weights plus the config needed to rebuild; loadable with weights_only=True. `members`: the
    ensemble's other deep views over `net`'s linear view, each stored as what it owns (network.member_state).
    Written beside and renamed into place: a worker polling the directory (`CommentModels.newer`) never reads
    half a file."""
    ckpt: dict = {"model_version": model_version, "config": net.config.to_dict(), "state": fp16_state(net.state_dict())}
    if members:
        ckpt["members"] = [fp16_state(member_state(m)) for m in members]
    tmp = path.with_name(f".{path.name}.tmp")
    torch.save(ckpt, tmp)
    os.replace(tmp, path)


def _weights_path(settings: ModerationSettings) -> Path:
    return Path(settings.model_dir or SHIPPED_DIR) / WEIGHTS_FILE


def _signature(path: Path) -> tuple[int, int]:
    st = path.stat()
    return st.st_mtime_ns, st.st_size


def thresholds_for(settings: ModerationSettings, weights_dir: Path) -> dict[str, dict[str, Thresholds]]:
    """Per language, per category: the thresholds set in configuration (for every language), else those
    chosen for these weights on out-of-distribution checks (THRESHOLDS_FILE beside them, written by
    `reelstream eval models --ood --write-thresholds`), else the configuration's defaults."""
    path = weights_dir / THRESHOLDS_FILE
    if "thresholds" in settings.model_fields_set or not path.exists():
        return {lang: dict(settings.thresholds) for lang in LANGS}
    chosen = json.loads(path.read_text())["thresholds"]
    return {
        lang: {c: Thresholds(**chosen[lang][c]) if c in chosen.get(lang, {}) else settings.thresholds[c] for c in CATEGORIES}
        for lang in LANGS
    }


def calibration_for(weights_dir: Path) -> Calibration | None:
    """The calibration fitted for these weights on out-of-distribution checks (in THRESHOLDS_FILE, written by
    `reelstream eval models --ood --write-thresholds`), or None: then scores are the network's own."""
    path = weights_dir / THRESHOLDS_FILE
    if not path.exists():
        return None
    data = json.loads(path.read_text()).get("calibration")
    return None if data is None else Calibration.from_json(data)


class CommentModels:
    """Shared featurizer + network; `score` gives both heads' outputs and the moderation decision.

    `members`: further deep views over `net`'s featurization and linear view (network.share_views); scores
    are the mean over `net` and them (network.ensemble_outputs)."""

    def __init__(
        self,
        net: CommentNet,
        model_version: str,
        *,
        max_text_chars: int = 5000,
        thresholds: Mapping[str, Mapping[str, Thresholds]] | None = None,
        device: torch.device | None = None,
        batch_size: int = 256,
        static_tokenizer: Path | None = None,
        calibration: Calibration | None = None,
        members: Sequence[CommentNet] = (),
    ) -> None:
        self.device = device or torch.device("cpu")
        self.net = net.to(self.device).eval()
        self.members = (self.net, *(m.to(self.device).eval() for m in members))
        self.model_version = model_version
        self.featurizer = Featurizer(net.config.features, net.vocabulary())
        self.max_text_chars = max_text_chars
        default = ModerationSettings().thresholds
        self.thresholds = {lang: dict((thresholds or {}).get(lang, default)) for lang in LANGS}  # lang -> category
        self.languages = {c: net.layout.languages(c) for c in CATEGORIES}  # where each head may decide
        self.calibration = calibration  # raw -> calibrated category scores; None: the network's own
        # Where `load` read the weights from (None: built in memory), and the file's (mtime, size) then.
        self.source: tuple[ModerationSettings, tuple[int, int]] | None = None
        self.batch_size = batch_size
        # Word-piece tokenizer of the static embedding view (the shipped one unless given).
        self.static_tokenizer_path: Path | None = None
        self.pieces: StaticTokenizer | None = None
        if net.config.static_dims:
            self.static_tokenizer_path = Path(static_tokenizer or SHIPPED_DIR / TOKENIZER_FILE)
            self.pieces = StaticTokenizer(self.static_tokenizer_path)

    def variant(self, device: torch.device, batch_size: int) -> CommentModels:
        """The same weights, text cap, thresholds and tokenizer on another device or batch size (benchmarks)."""
        return CommentModels(
            self.net, self.model_version, max_text_chars=self.max_text_chars, thresholds=self.thresholds,
            device=device, batch_size=batch_size, static_tokenizer=self.static_tokenizer_path,
            calibration=self.calibration, members=self.members[1:],
        )  # fmt: skip

    @classmethod
    def load(cls, settings: ModerationSettings) -> CommentModels:
        """Read weights from settings.model_dir (or the shipped ones) and set torch's thread count."""
        torch.set_num_threads(settings.torch_threads)
        path = _weights_path(settings)
        if not path.exists():
            raise FileNotFoundError(f"no comment model weights at {path}; run `reelstream train moderation`")
        signature = _signature(path)  # before reading: a file replaced meanwhile is read again at the next poll
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
        config = NetConfig.from_dict(ckpt["config"])
        net = CommentNet(config)
        state = fp32_state(ckpt["state"])
        state.setdefault("route_mix", net.route_mix)  # checkpoints from before routers mixed in the domain head
        state.setdefault("route_bias", net.route_bias)  # ... and before routers had a source prior
        net.load_state_dict(state)
        members = []
        for own in ckpt.get("members", []):
            member = CommentNet(config, views_of=net)
            member.load_state_dict({**state, **fp32_state(own)})
            members.append(member)
        models = cls(
            net,
            ckpt["model_version"],
            max_text_chars=settings.max_text_chars,
            thresholds=thresholds_for(settings, path.parent),
            device=select_device(settings.device),
            batch_size=max(settings.batch_size, 1),
            static_tokenizer=path.parent / TOKENIZER_FILE,
            calibration=calibration_for(path.parent),
            members=members,
        )
        models.source = (settings, signature)
        return models

    def save(self, path: Path, model_version: str | None = None) -> None:
        """Write these weights, every member included, as a checkpoint (save_checkpoint), under their own
        model version unless another is given."""
        save_checkpoint(self.net, path, model_version or self.model_version, self.members[1:])

    def newer(self) -> CommentModels | None:
        """The weights now in the directory this model was loaded from, when they changed and carry another
        model version; None otherwise (slow when not None: call it off the event loop)."""
        if self.source is None:
            return None
        settings, seen = self.source
        path = _weights_path(settings)
        try:
            if _signature(path) == seen:
                return None
            models = CommentModels.load(settings)
        except (OSError, RuntimeError, ValueError, KeyError):
            return None  # gone or unreadable right now: looked at again at the next poll
        if models.model_version == self.model_version:
            self.source = models.source
            return None
        return models

    @torch.inference_mode()
    def predict(
        self, texts: Sequence[str], langs: Sequence[str | None] | None = None
    ) -> tuple[np.ndarray, np.ndarray, list[str]]:
        """Category scores [n, 5] (CATEGORIES order, calibrated when a calibration came with the weights),
        sentiment [n, 3] and the resolved languages."""
        capped = [t[: self.max_text_chars] for t in texts]
        resolved = resolve_langs(capped, langs)
        scores = np.zeros((len(capped), len(CATEGORIES)), dtype=np.float32)
        sentiment = np.zeros((len(capped), len(SENTIMENT_KEYS)), dtype=np.float32)
        for start in range(0, len(capped), self.batch_size):
            stop = start + self.batch_size
            is_zh = torch.tensor([lang == "zh" for lang in resolved[start:stop]], device=self.device)
            cat, sent = ensemble_outputs(self.members, is_zh, *self.inputs(capped[start:stop], resolved[start:stop]))
            scores[start:stop] = cat.cpu().numpy()
            sentiment[start:stop] = sent.cpu().numpy()
        if self.calibration is not None:
            scores = self.calibration.apply(scores, resolved)
        return scores, sentiment, resolved

    def inputs(
        self, texts: Sequence[str], langs: Sequence[str]
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, tuple[torch.Tensor, torch.Tensor] | None]:
        """The network's inputs for already capped texts with resolved languages."""
        batch = self.featurizer(texts, langs)
        tf = None if batch.tf is None else torch.from_numpy(batch.tf).to(self.device)
        pieces = None
        if self.pieces is not None:
            ids, offs = self.pieces(texts)
            pieces = (torch.from_numpy(ids).to(self.device), torch.from_numpy(offs).to(self.device))
        return (
            torch.from_numpy(batch.indices).to(self.device), torch.from_numpy(batch.offsets).to(self.device), tf, pieces
        )

    def score(self, texts: Sequence[str], langs: Sequence[str | None] | None = None) -> list[CommentScore]:
        """One CommentScore per text, in order."""
        scores, sentiment, resolved = self.predict(texts, langs)
        out = []
        for row, sent, lang in zip(scores.tolist(), sentiment.tolist(), resolved):
            cats = dict(zip(CATEGORIES, row))
            abstained = [c for c in CATEGORIES if lang not in self.languages[c]]
            action, reasons = decide(cats, self.thresholds[lang], abstained)
            out.append(CommentScore(cats, dict(zip(SENTIMENT_KEYS, sent)), lang, action, reasons, abstained))
        return out

    @property
    def moderator(self) -> HeadView:
        return HeadView(self, 0, CATEGORIES)

    @property
    def sentiment(self) -> HeadView:
        return HeadView(self, 1, SENTIMENT_KEYS)


class HeadView:
    """One protocol (Moderator or SentimentModel) over the shared network: which output, and its keys."""

    def __init__(self, models: CommentModels, output: int, keys: Sequence[str]) -> None:
        self.models = models
        self.model_version = models.model_version
        self.output = output
        self.keys = keys

    def score_batch(self, texts: Sequence[str], langs: Sequence[str | None] | None = None) -> list[dict[str, float]]:
        rows = self.models.predict(texts, langs)[self.output]
        return [dict(zip(self.keys, row)) for row in rows.tolist()]
