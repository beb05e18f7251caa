"""`reelstream bench models`: comments/s of the comment models per batch size, the `score` CLI path,
and the TF-IDF+LR baseline's prediction speed measured in the same run."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import orjson
import torch

from models.text.comments import CommentModels
from models.text.data import DATASETS, Example, load_dataset
from models.text.scoring import score_file


def bench_texts(data_dir: Path, n: int = 4096) -> list[Example]:
    """Real comments, en and zh interleaved, from the datasets' train files."""
    per = max(1, n // len(DATASETS))
    pool: list[Example] = []
    for spec in DATASETS:
        if (data_dir / spec.name / "train.jsonl").exists():
            pool += load_dataset(data_dir, spec, limit=per)
    if not pool:
        raise FileNotFoundError(f"no datasets under {data_dir} to benchmark with")
    return (pool * (n // len(pool) + 1))[:n]


def rate(models: CommentModels, texts: list[str], langs: list[str], batch: int, min_seconds: float) -> float:
    """Comments/s of CommentModels.score at a fixed batch size (after one warm-up batch)."""
    models.batch_size = batch
    models.score(texts[:batch], langs[:batch])
    done, start, i = 0, time.perf_counter(), 0
    while True:
        chunk_t, chunk_l = texts[i : i + batch], langs[i : i + batch]
        if len(chunk_t) < batch:
            i = 0
            continue
        models.score(chunk_t, chunk_l)
        done += batch
        i += batch
        elapsed = time.perf_counter() - start
        if elapsed >= min_seconds:
            return done / elapsed


def _baseline_rate(examples: list[Example], texts: list[str]) -> float | None:
    """TF-IDF+LR predict_proba speed at batch 256 for ONE dataset's pipeline (the baseline needs one per
    dataset and label, so serving every line costs several times this)."""
    try:
        from models.text.baseline import _pipeline
    except ImportError:
        return None
    en = [e for e in examples if e.dataset == "davidson_hate_offensive"]
    if len({e.labels["offensive"] for e in en}) < 2:
        return None
    model = _pipeline("en").fit([e.text for e in en], [e.labels["offensive"] for e in en])
    start = time.perf_counter()
    for s in range(0, len(texts), 256):
        model.predict_proba(texts[s : s + 256])
    return len(texts) / (time.perf_counter() - start)


def bench(models: CommentModels, data_dir: Path, threads: int, min_seconds: float = 2.0) -> dict:
    """Throughput numbers as one JSON-ready object."""
    examples = bench_texts(data_dir)
    texts = [e.text for e in examples]
    langs = [e.lang for e in examples]
    torch.set_num_threads(threads)
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    # The worker scores micro-batches of up to the configured batch size (64 by default; fewer when comments
    # arrive slower than that fills), `reelstream score` batches of 256: both are measured.
    sizes = sorted({1, 32, models.batch_size, 256})
    rates: dict[str, dict[str, float]] = {}
    for dev in devices:
        m = models.variant(torch.device(dev), batch_size=256)
        rates[dev] = {f"batch_{b}": round(rate(m, texts, langs, b, min_seconds), 1) for b in sizes}
        for net in models.members:  # the variant moved these same nets
            net.to("cpu")

    with tempfile.TemporaryDirectory() as tmp:
        inp, out = Path(tmp) / "in.jsonl", Path(tmp) / "out.jsonl"
        big = (examples * 5)[:20000]
        inp.write_bytes(b"".join(orjson.dumps({"id": i, "text": e.text}) + b"\n" for i, e in enumerate(big)))
        cpu = models.variant(torch.device("cpu"), batch_size=256)
        start = time.perf_counter()
        score_file(cpu, inp, out, batch_size=256, progress=False)
        in_process = len(big) / (time.perf_counter() - start)
        env = {**os.environ, "REELSTREAM_MODERATION__TORCH_THREADS": str(threads), "REELSTREAM_MODERATION__DEVICE": "cpu"}
        start = time.perf_counter()
        subprocess.run(
            [sys.executable, "-c", "from reelstream.cli import main; main()", "score", "--input", str(inp),
             "--output", str(out), "--batch-size", "256"],
            check=True, env=env, stderr=subprocess.DEVNULL,
        )
        end_to_end = len(big) / (time.perf_counter() - start)
    base = _baseline_rate(examples, texts)
    return {
        "model_version": models.model_version,
        "torch_threads": threads,
        "cpu_count": os.cpu_count(),
        "comments_per_s": rates,
        "worker_batch_size": models.batch_size,
        "score_cli": {
            "comments": len(big),
            "in_process_per_s": round(in_process, 1),
            "subprocess_end_to_end_per_s": round(end_to_end, 1),
            "note": "end-to-end includes interpreter start, torch import and weight loading",
        },
        "baseline_tfidf_lr_one_dataset_batch_256_per_s": None if base is None else round(base, 1),
    }
