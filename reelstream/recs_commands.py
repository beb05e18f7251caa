"""`reelstream train als` and `reelstream eval recs`: the recommendation models' offline commands."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer

PLOT_EVERY = 250  # evaluated events between two points of the --plot curves


class Dataset(str, Enum):
    ml100k = "ml100k"
    synthetic = "synthetic"


def register(*, app: typer.Typer, train: typer.Typer, eval_: typer.Typer, bench: typer.Typer) -> None:
    """Add this area's commands. Keep imports of heavy libraries inside the command bodies."""
    register_report(app)

    @train.command("als")
    def train_als_cmd(
        from_: Annotated[Path, typer.Option("--from", help="Recorded events file (reelstream record events FILE).")],
        out: Annotated[Path, typer.Option("--out", help="Directory for model.npz + meta.json.")],
        topic: Annotated[str, typer.Option(help="Topic of the records to train on.")] = "events",
    ) -> None:
        """Fit a batch ALS model (implicit) on a recorded events file and save it as a new model version."""
        import orjson

        from lab.recording import read_records
        from models.recs.train import train_als
        from streams.settings import get_settings

        s = get_settings()
        values = (r.value for r in read_records(from_) if r.topic == topic)
        model, counts = train_als(values, s.recs, max_bytes=s.max_message_bytes, max_text_chars=s.max_text_chars)
        if not model.n_items:
            typer.echo(f"error: no valid interactions on topic {topic!r} in {from_}", err=True)
            raise typer.Exit(2)
        model.save(out)
        typer.echo(orjson.dumps({"model_version": model.model_version, "out": str(out), **counts}).decode())

    @eval_.command("recs")
    def eval_recs_cmd(
        dataset: Annotated[Dataset, typer.Option(help="ml100k: MovieLens-100K replay; synthetic: generated.")],
        json_: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
        users: Annotated[Optional[int], typer.Option(help="Synthetic users [20000; --via-kafka: 300].")] = None,
        videos: Annotated[Optional[int], typer.Option(help="Synthetic videos [2000; --via-kafka: 200].")] = None,
        events: Annotated[Optional[int], typer.Option(help="Synthetic events [80000; --via-kafka: 3000].")] = None,
        seed: int = 0,
        warmup: Annotated[float, typer.Option(help="Leading fraction learned but not evaluated.")] = 0.2,
        eval_fraction: Annotated[Optional[float], typer.Option(help="Share of events evaluated.")] = None,
        plot: Annotated[Optional[Path], typer.Option(help="Also write a PNG of HR@10 along the replay per model.")] = None,
        via_kafka: Annotated[bool, typer.Option(
            "--via-kafka", help="Replay through the embedded broker into real worker and trainer processes, with "
            "worker kills (lab/recs_replay.py); scores what the workers emitted.")] = False,
        workers: Annotated[int, typer.Option(help="--via-kafka: worker processes.", min=1)] = 1,
        restarts: Annotated[int, typer.Option(help="--via-kafka: kill -9 and replace a worker this many times.",
                                              min=0)] = 1,
        partitions: Annotated[int, typer.Option(
            help="--via-kafka: partitions per topic (the embedded broker keeps 5 MiB per partition).", min=1)] = 4,
        video_half_life_s: Annotated[Optional[float], typer.Option(
            help="Synthetic: a video's appeal halves every this many seconds of age [2 days]; 0: never fades "
            "(the stationary stream).", min=0)] = None,
    ) -> None:
        """Prequential replay: streaming ALS vs daily batch refit vs popularity, HR@10 and NDCG@10."""
        import orjson

        from models.recs.evaluate import SYNTHETIC_VIDEO_HALF_LIFE_S

        lifecycle = SYNTHETIC_VIDEO_HALF_LIFE_S if video_half_life_s is None else video_half_life_s
        if via_kafka:
            import sys

            from lab.recs_replay import SYNTHETIC_SMALL, run_via_kafka

            if eval_fraction is not None or plot is not None:
                typer.echo("error: --eval-fraction and --plot are in-process options (not with --via-kafka)", err=True)
                raise typer.Exit(2)
            sizes = {k: v for k, v in {"users": users, "videos": videos, "events": events}.items() if v is not None}
            result = run_via_kafka(
                dataset.value, **{**SYNTHETIC_SMALL, **sizes}, seed=seed, warmup=warmup, workers=workers,
                restarts=restarts, partitions=partitions, progress=lambda line: print(line, file=sys.stderr, flush=True),
                video_half_life_s=lifecycle,
            )  # fmt: skip
            names: tuple[str, ...] = ("streaming", "popularity", "popularity_decayed")
        else:
            from models.recs.evaluate import run
            from streams.settings import get_settings

            result = run(
                dataset.value,
                get_settings().recs,
                **{k: v for k, v in {"users": users, "videos": videos, "events": events}.items() if v is not None},
                seed=seed,
                warmup=warmup,
                eval_fraction=eval_fraction,
                curve_every=PLOT_EVERY if plot is not None else 0,
                video_half_life_s=lifecycle,
            )
            names = ("streaming", "batch_periodic", "popularity", "popularity_decayed")
        if plot is not None:
            from monitoring.plots import hit_rate_curves

            hit_rate_curves(result.pop("curves"), plot, title=f"HR@10 over the {dataset.value} replay")
        if json_:
            typer.echo(orjson.dumps(result).decode())
            return
        for name in names:
            r = result[name]
            hr, ndcg, unknown = r["hr@10"], r["ndcg@10"], r["unknown_user_events"]
            typer.echo(f"{name:20s} HR@10 {hr:.4f}  NDCG@10 {ndcg:.4f}  unknown-user events {unknown}")
        typer.echo(f"{result['events']} evaluated events in {result['seconds']} s")
        if via_kafka:
            keys = ("restarts", "refits", "model_versions", "stale_recs", "offset_gaps", "dead_letters")
            typer.echo(", ".join(f"{k} {result[k]}" for k in keys))


def register_report(app: typer.Typer) -> None:
    """`reelstream report ab`: per-arm outcomes of an A/B experiment from the topics (recorded or live)."""
    report_app = typer.Typer(no_args_is_help=True, help="Reports over what the pipeline emitted.")
    app.add_typer(report_app, name="report")

    @report_app.command("ab")
    def report_ab_cmd(
        from_: Annotated[
            Optional[list[Path]],
            typer.Option("--from", help="Record files (reelstream record) of the events and recommendations topics."),
        ] = None,
        bootstrap: Annotated[
            Optional[str], typer.Option("--bootstrap", help="Read both topics live from these brokers instead.")
        ] = None,
        arms: Annotated[
            Optional[str], typer.Option("--arms", help="Arm names in order, the control first (default: settings).")
        ] = None,
        json_: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
    ) -> None:
        """Per A/B arm: served lists closed by the user's next event, how many of those took up a listed video
        (watch or like), the rate with its 95% interval, and each arm's difference from the control."""
        import orjson

        from models.recs.arms import replay_outcomes, report
        from streams.settings import get_settings

        s = get_settings()
        t = s.topics
        if bool(from_) == bool(bootstrap):
            typer.echo("error: give --from FILE... or --bootstrap (live topics), one of them", err=True)
            raise typer.Exit(2)
        if from_:
            from lab.recording import read_records

            records = [r for path in from_ for r in read_records(path)]
        else:
            from lab.recording import read_topic

            records = [r for topic in (t.events, t.recommendations) for r in read_topic(bootstrap, topic)]
        # Each partition in offset order: a user's events (keyed by user) are then in their order.
        records.sort(key=lambda r: (r.topic, r.partition, r.offset))
        outcomes = replay_outcomes(
            (r.value for r in records if r.topic == t.events),
            (r.value for r in records if r.topic == t.recommendations),
            max_bytes=s.max_message_bytes, max_text_chars=s.max_text_chars,
        )  # fmt: skip
        names = arms.split(",") if arms else [a.name for a in s.recs.arms]
        result = report(outcomes, names) | {"lists_closed": len(outcomes)}
        if json_:
            typer.echo(orjson.dumps(result).decode())
            return
        for name, a in result["arms"].items():
            vs = a.get("vs_control")
            extra = f", vs {result['control']}: {vs['difference']:+.4f} {vs['ci95']}" if vs else ""
            typer.echo(f"{name}: {a['hits']}/{a['lists']} lists taken up, rate {a['hit_rate']} {a['ci95']}{extra}")
