"""`reelstream train|eval|score|bench` commands of the comment models (models/text)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

import typer

if TYPE_CHECKING:
    from models.text.comments import CommentModels

REPO_ROOT = Path(__file__).resolve().parents[1]  # reelstream/text_commands.py -> the checkout
DEFAULT_DATA = REPO_ROOT.parent / "shared" / "data"
DEFAULT_OUT = REPO_ROOT / "models" / "text" / "weights"


def _decisions(files: list[Path]):  # -> models.text.decisions.DecisionRows
    """Reviewers' decisions from record files (`reelstream record` of review-queue and review-decisions, and
    optionally events for user_delete), read together and joined in time order; topic names from settings."""
    from lab.recording import read_records
    from models.text.decisions import decision_rows
    from streams.settings import get_settings

    s = get_settings()
    records = [r for f in files for r in read_records(f)]
    return decision_rows(
        records, queue_topic=s.topics.review_queue, decisions_topic=s.topics.review_decisions,
        events_topic=s.topics.events, max_decision_bytes=s.max_message_bytes,
    )  # fmt: skip


def _train(
    data: Path, out: Path, epochs: int, threads: int, seed: int, limit: int | None, baseline: bool,
    decisions: list[Path] | None = None, members: int | None = None,
) -> None:  # fmt: skip
    """Train the combined comment model, write weights + MODEL_CARD.md, print the validation summary."""
    import orjson

    from models.text import model_card
    from models.text.bench import rate
    from models.text.data import load_splits
    from models.text.training import TrainOptions, headline, save, train

    opts = TrainOptions(epochs=epochs, threads=threads, seed=seed, limit_per_dataset=limit)
    if members is not None:
        opts.members = members
    rows = _decisions(decisions) if decisions else None
    if rows is not None:
        typer.echo(f"reviewer decisions: {rows.decisions} read, {len(rows.examples)} training rows "
                   f"{rows.by_dataset}, not used: {rows.skipped}", err=True)  # fmt: skip
    result = train(data, opts, decisions=rows)
    weights = save(result, out)
    base = None
    if baseline:
        try:
            from models.text.baseline import baseline_report

            typer.echo("fitting the TF-IDF+LR baseline on the same split for the model card...", err=True)
            base = baseline_report(*load_splits(data, limit))
        except ImportError:
            typer.echo("scikit-learn not installed: model card without baseline", err=True)
    texts = [t for t in ("great video!", "这个视频太好看了", "you are an idiot", "垃圾") for _ in range(64)]
    langs = [None] * len(texts)
    speed = {
        "threads": threads,
        "batch_256_per_s": rate(result.models, texts, langs, 256, 1.0),
        "batch_1_per_s": rate(result.models, texts, langs, 1, 1.0),
    }
    model_card.write(out / "MODEL_CARD.md", model_card.render(result, opts, base, speed))
    summary = {
        "model_version": result.models.model_version,
        "weights": str(weights),
        "best_epoch": result.best_epoch,
        "members": result.members,  # several deep views: each one's seed, epoch kept and headline (else empty)
        "n_train": result.n_train,
        "decision_rows": result.n_decisions,
        "decisions_not_used": result.decisions_skipped,
        "linear_experts_refit_on": result.n_refit,  # train + validation rows, after the choices (empty: not refit)
        "deep_view_refit": result.models.net.config.deep_fit != "train",  # trained again on those rows too
        "validation_headline": headline(result.report),
        "validation": result.report,
    }
    typer.echo(orjson.dumps(summary, option=orjson.OPT_INDENT_2 | orjson.OPT_SERIALIZE_NUMPY).decode())


def _load_models(model_dir: Path | None, batch_size: int | None = None) -> CommentModels:
    from models.text.base import load_comment_models
    from streams.settings import get_settings

    settings = get_settings().moderation
    if model_dir is not None:
        settings = settings.model_copy(update={"model_dir": str(model_dir)})
    if batch_size is not None:
        settings = settings.model_copy(update={"batch_size": batch_size})
    return load_comment_models(settings)


def register(*, app: typer.Typer, train: typer.Typer, eval_: typer.Typer, bench: typer.Typer) -> None:
    """Add this area's commands. Keep imports of heavy libraries inside the command bodies."""
    data_opt = typer.Option(DEFAULT_DATA, "--data", help="Folder of <dataset>/train.jsonl.")
    out_opt = typer.Option(DEFAULT_OUT, "--out", help="Where weights and MODEL_CARD.md go.")
    epochs_opt = typer.Option(8, help="Maximum epochs; the best validation epoch is kept.")
    threads_opt = typer.Option(1, help="torch threads for training.")
    seed_opt = typer.Option(20240607, help="Seed of initialization and batch order (member k: seed + k).")
    members_opt = typer.Option(
        None, min=1, help="Deep views trained from seeds seed, seed + 1, ... over one linear view; scores are their "
        "mean (each adds its epochs to training and a forward pass to serving). Default: the shipped recipe's (3).",
    )  # fmt: skip
    limit_opt = typer.Option(None, "--limit-per-dataset", help="Use only the first N rows of each dataset.")
    baseline_opt = typer.Option(True, help="Also fit the TF-IDF+LR baseline for the model card (sklearn).")
    decisions_opt = typer.Option(
        None, "--decisions", exists=True, dir_okay=False,
        help="Record file(s) of review-queue + review-decisions (+ events), from `reelstream record`: reviewers' "
        "decisions as extra training rows (MODEL_CARD.md, 'Reviewer decisions'). Repeat for several files.",
    )  # fmt: skip

    def train_comment_model(
        data: Path = data_opt, out: Path = out_opt, epochs: int = epochs_opt, threads: int = threads_opt,
        seed: int = seed_opt, limit_per_dataset: int | None = limit_opt, baseline: bool = baseline_opt,
        decisions: list[Path] | None = decisions_opt, members: int | None = members_opt,
    ) -> None:
        """Train the comment model: moderation and sentiment share one network, so either command trains both."""
        _train(data, out, epochs, threads, seed, limit_per_dataset, baseline, decisions, members)

    train.command("moderation")(train_comment_model)
    train.command("sentiment")(train_comment_model)

    @app.command("score")
    def score(
        input: Path = typer.Option(..., "--input", exists=True, dir_okay=False, help='JSONL {"id","text","lang"?}.'),
        output: Path = typer.Option(..., "--output", dir_okay=False, help="JSONL of scores, in input order."),
        batch_size: int = typer.Option(256, "--batch-size", min=1, help="Comments per forward pass."),
        model_dir: Path | None = typer.Option(None, help="Weights folder (default: settings, then shipped)."),
    ) -> None:
        """Score comments: moderation scores, sentiment, action and model_version per line."""
        from models.text.scoring import ScoreInputError, read_comments, write_scores

        try:
            comments = read_comments(input)
        except ScoreInputError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(2) from None
        n = write_scores(_load_models(model_dir, batch_size), comments, output, batch_size)
        print(f"scored {n} comments -> {output}", file=sys.stderr)

    @eval_.command("models")
    def eval_models(
        data: Path = data_opt,
        json: bool = typer.Option(False, "--json", help="Print one JSON object."),
        baseline: bool = typer.Option(True, help="Fit the TF-IDF+LR baseline on the same split."),
        model_dir: Path | None = typer.Option(None, help="Weights folder (default: settings, then shipped)."),
        ood: bool = typer.Option(False, "--ood", help="Also the out-of-distribution view (models/text/ood.py)."),
        folds_dir: Path = typer.Option(Path(".ood-folds"), help="Fold models: trained there unless present."),
        limit_per_dataset: int | None = limit_opt,
        write_thresholds: Path | None = typer.Option(
            None, help="Write the thresholds chosen on the OOD checks to this weights folder (with --ood)."
        ),
    ) -> None:
        """Per dataset and label: AUC, macro-F1, accuracy on the validation split (in distribution), next to the
        baseline; with --ood, the same for sources and groups left out of training, and the thresholds chosen
        on them."""
        import orjson

        from models.text.evaluation import evaluate

        result = evaluate(_load_models(model_dir), data, with_baseline=baseline)
        if ood:
            from models.text.ood import card_section, evaluate_ood, write_card_section, write_thresholds_file

            result["ood"] = evaluate_ood(data, folds_dir, limit=limit_per_dataset, with_baseline=baseline)
            if write_thresholds is not None:
                write_thresholds_file(result["ood"], write_thresholds)
                card = write_thresholds / "MODEL_CARD.md"
                if card.exists():
                    write_card_section(card, card_section(result["ood"], result))
        if json:
            typer.echo(orjson.dumps(result, option=orjson.OPT_SERIALIZE_NUMPY).decode())
            return
        views = [("in distribution (validation split)", result)] + ([("out of distribution", result["ood"])] if ood else [])
        for title, view in views:
            typer.echo(f"-- {title}")
            refit = [name for key, name in (("validation_in_linear_fit", "the linear experts"),
                                            ("validation_in_deep_fit", "the deep view")) if view.get(key)]  # fmt: skip
            if refit:
                typer.echo(f"   ({' and '.join(refit)} were refit on these rows after the choices: a fit, not a validation)")
            for ds, labels in view["lines"].items():
                for label, e in labels.items():
                    key = e["primary"]
                    base = e.get("baseline", {}).get(key, float("nan"))
                    typer.echo(f"{ds:34s} {label:10s} {key:8s} model {e['model'][key]:.4f}  baseline {base:.4f}")
            typer.echo(f"beats baseline on {view['beats_baseline']} lines")

    @bench.command("models")
    def bench_models(
        data: Path = data_opt,
        json: bool = typer.Option(False, "--json", help="Print one JSON object."),
        threads: int = typer.Option(2, help="torch threads."),
        seconds: float = typer.Option(2.0, help="Measuring time per batch size."),
    ) -> None:
        """Comments/s at batch 1/32/256 (cpu, and cuda when present) and through the `score` path."""
        import orjson

        from models.text.bench import bench as run_bench

        result = run_bench(_load_models(None), data, threads, seconds)
        typer.echo(orjson.dumps(result, option=orjson.OPT_INDENT_2 if not json else 0).decode())
