"""`reelstream score`: JSONL comments in, one JSON line of scores out per comment, in input order.

The whole input is parsed and validated before anything is scored, so a bad line stops the run with its
line number instead of leaving a half-written output.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import orjson
from tqdm import tqdm

from models.text.comments import CommentModels


class ScoreInputError(ValueError):
    """A line of the input file that is not a valid comment record."""


@dataclass(frozen=True)
class Comment:
    id: object
    text: str
    lang: str | None


def read_comments(path: Path) -> list[Comment]:
    """Parse {"id", "text", "lang"?} lines; blank lines are skipped, anything else invalid raises."""
    comments: list[Comment] = []
    with open(path, "rb") as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                rec = orjson.loads(line)
            except orjson.JSONDecodeError as exc:
                raise ScoreInputError(f"{path}:{lineno}: not valid JSON ({exc})") from None
            if not isinstance(rec, dict):
                raise ScoreInputError(f"{path}:{lineno}: expected a JSON object, got {type(rec).__name__}")
            if "id" not in rec:
                raise ScoreInputError(f"{path}:{lineno}: missing \"id\"")
            text = rec.get("text")
            if not isinstance(text, str):
                raise ScoreInputError(f"{path}:{lineno}: \"text\" must be a string, got {type(text).__name__}")
            lang = rec.get("lang")
            if lang is not None and not isinstance(lang, str):
                raise ScoreInputError(f"{path}:{lineno}: \"lang\" must be a string or absent")
            comments.append(Comment(rec["id"], text, lang))
    return comments


def _batches(items: list[Comment], size: int) -> Iterator[list[Comment]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def score_file(models: CommentModels, input_path: Path, output_path: Path, batch_size: int, progress: bool = True) -> int:
    """Score every comment of input_path into output_path; returns the number of comments written."""
    return write_scores(models, read_comments(input_path), output_path, batch_size, progress)


def write_scores(
    models: CommentModels, comments: list[Comment], output_path: Path, batch_size: int, progress: bool = True
) -> int:
    """One output line per comment, in order, scored batch by batch."""
    version = models.model_version
    with open(output_path, "wb") as out, tqdm(
        total=len(comments), unit="comment", file=sys.stderr, disable=not progress
    ) as bar:
        for batch in _batches(comments, batch_size):
            results = models.score([c.text for c in batch], [c.lang for c in batch])
            lines = [
                orjson.dumps(
                    {
                        "id": c.id,
                        "scores": {k: round(v, 6) for k, v in r.scores.items()},
                        "sentiment": {k: round(v, 6) for k, v in r.sentiment.items()},
                        "action": r.action,
                        "reasons": r.reasons,
                        "abstained": r.abstained,
                        "model_version": version,
                    }
                )
                for c, r in zip(batch, results)
            ]
            out.write(b"\n".join(lines) + b"\n")
            bar.update(len(batch))
    return len(comments)
