"""Commands of the lab: record, replay, generate, bench chaos, bench scale."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Optional

import orjson
import typer

Bootstrap = Annotated[
    Optional[str], typer.Option("--bootstrap", help="Kafka bootstrap servers (default: settings.bootstrap_servers).")
]


def _bootstrap(value: str | None) -> str:
    from streams.settings import get_settings

    return value or get_settings().bootstrap_servers


def _kafka_errors_exit() -> "contextlib.AbstractContextManager[None]":
    """Print a broker error as one line and exit 2, instead of a traceback."""
    from confluent_kafka import KafkaException

    @contextlib.contextmanager
    def guard() -> Iterator[None]:
        try:
            yield
        except KafkaException as exc:
            typer.echo(f"error: {exc.args[0] if exc.args else exc}", err=True)
            raise typer.Exit(2) from None

    return guard()


def register(*, app: typer.Typer, train: typer.Typer, eval_: typer.Typer, bench: typer.Typer) -> None:
    """Add this area's commands. Keep imports of heavy libraries inside the command bodies."""

    @app.command("record")
    def record_cmd(
        topic: Annotated[str, typer.Argument(help="Topic to copy, every partition from the beginning.")],
        file: Annotated[Path, typer.Argument(help="Record file to write (.jsonl, or .jsonl.gz for gzip).")],
        count: Annotated[Optional[int], typer.Option(help="Stop after this many messages.")] = None,
        timeout: Annotated[float, typer.Option(help="Stop after this many seconds without a new message.")] = 5.0,
        bootstrap: Bootstrap = None,
    ) -> None:
        """Record a topic to a JSONL file; stops at the end of the topic, at --count, or when idle."""
        from lab.recording import record

        with _kafka_errors_exit():
            stats = record(_bootstrap(bootstrap), topic, file, count=count, timeout_s=timeout)
        typer.echo(
            f"recorded {stats.count} messages from {topic} ({stats.partitions} partition"
            f"{'s' * (stats.partitions != 1)}) to {file} in {stats.seconds:.1f} s, stopped by {stats.stopped_by}"
        )

    @app.command("replay")
    def replay_cmd(
        file: Annotated[Path, typer.Argument(help="Record file (as written by record or generate).")],
        topic: Annotated[Optional[str], typer.Option(help="Send every record here instead of its own topic.")] = None,
        rate: Annotated[Optional[float], typer.Option(help="Messages per second (default: unlimited).")] = None,
        bootstrap: Bootstrap = None,
    ) -> None:
        """Produce a record file again, keeping keys, values, timestamps and headers."""
        from lab.recording import replay

        with _kafka_errors_exit():
            stats = replay(_bootstrap(bootstrap), file, topic=topic, rate=rate)
        per_topic = ", ".join(f"{t}: {n}" for t, n in sorted(stats.by_topic.items()))
        typer.echo(
            f"replayed {stats.sent} messages ({per_topic or 'none'}), {stats.failed} failed, "
            f"in {stats.seconds:.1f} s" + (f"; first error: {stats.first_error}" if stats.first_error else "")
        )
        if stats.failed:
            raise typer.Exit(1)

    @app.command("generate")
    def generate_cmd(
        out: Annotated[Path, typer.Option(help="Record file to write (.jsonl or .jsonl.gz).")],
        users: Annotated[int, typer.Option(help="Number of users.")] = 200,
        videos: Annotated[int, typer.Option(help="Number of videos.")] = 300,
        events: Annotated[int, typer.Option(help="User events (video events and malformed ones come on top).")] = 4000,
        seed: Annotated[int, typer.Option(help="Same seed, same data files: byte-identical output.")] = 7,
        clusters: Annotated[int, typer.Option(help="Latent video clusters (user tastes mix 1-3 of them).")] = 8,
        data: Annotated[Optional[Path], typer.Option(help="Labeled comment datasets (default ../shared/data).")] = None,
        truth: Annotated[Optional[Path], typer.Option(help="Write the ground truth here (JSON).")] = None,
        with_malformed: Annotated[bool, typer.Option(help="Add a bad message per DLQ reason, a duplicate.")] = False,
    ) -> None:
        """Generate a synthetic event stream with known latent structure, as a replayable record file."""


        from lab.generator import GeneratorConfig, generate
        from streams.settings import get_settings

        topics = get_settings().topics
        try:
            config = GeneratorConfig(
                users=users, videos=videos, events=events, seed=seed, clusters=clusters,
                events_topic=topics.events, videos_topic=topics.videos, with_faults=with_malformed,
            )  # fmt: skip
        except ValueError as exc:
            raise typer.BadParameter(str(exc)) from None
        try:
            result = generate(config, out, data)
        except FileNotFoundError as exc:
            raise typer.BadParameter(str(exc), param_hint="--data") from None
        if truth is not None:
            truth.write_bytes(orjson.dumps(result, option=orjson.OPT_INDENT_2 | orjson.OPT_APPEND_NEWLINE))
        groups: dict[str, list[str]] = {}
        for key, n in result["counts"].items():
            group, name = key.split(".", 1)
            groups.setdefault(group, []).append(f"{name} {n}")
        summary = "; ".join(f"{group}: {', '.join(items)}" for group, items in groups.items())
        typer.echo(f"wrote {out}: {summary}" + (f"; truth in {truth}" if truth else ""))

    @bench.command("chaos")
    def bench_chaos_cmd(
        kills: Annotated[int, typer.Option(help="kill -9 of the worker at this many seeded random points.")] = 3,
        outage_s: Annotated[float, typer.Option(help="Seconds the broker is down mid-replay (0: none).")] = 30.0,
        events: Annotated[int, typer.Option(help="Generated user events (video events and faults on top).")] = 3000,
        rate: Annotated[float, typer.Option(help="Messages/s fed to the worker.")] = 100.0,
        seed: Annotated[int, typer.Option()] = 7,
        json_: Annotated[bool, typer.Option("--json")] = False,
    ) -> None:
        """Kills and a broker outage during a replay; counts lost and double-counted events in final state, and
        compares the derived state (item side, vectors, Gram) with the same replay without faults."""
        from lab.chaos import derived_ok, run_chaos

        result = run_chaos(kills=kills, outage_s=outage_s, events=events, rate=rate, seed=seed)
        report = result.report()
        typer.echo(orjson.dumps(report, option=0 if json_ else orjson.OPT_INDENT_2).decode())
        if not json_ and result.problems:
            typer.echo("\n".join(result.problems), err=True)
        if result.lost or result.double_counted or result.unexpected or result.crashes or not derived_ok(report):
            raise typer.Exit(1)

    @bench.command("state")
    def bench_state_cmd(
        users: Annotated[int, typer.Option(help="Users in the local store, 20 interactions each.")] = 1_000_000,
        videos: Annotated[int, typer.Option(help="Videos of the saved batch model.")] = 100_000,
        factors: Annotated[int, typer.Option()] = 64,
        events: Annotated[
            int,
            typer.Option(help="Events of the `one_event_per_user` run after the restart, one per stored user not "
                         "yet served (the worst case; `events_per_s_after_recovery`, on `bench pipeline`'s stream, "
                         "takes its 50,000)."),
        ] = 20_000,
        baseline: Annotated[
            bool,
            typer.Option(help="Then `bench pipeline` as usual and on this bench's model (~4 min more), and the "
                         "events/s ratios to both."),
        ] = False,
        json_: Annotated[bool, typer.Option("--json")] = False,
    ) -> None:
        """A worker on a large local store: kill -9, restart, time to serve a stored user, memory, throughput."""
        from lab.state_bench import bench_state

        result = bench_state(users, videos, factors, events, baseline={} if baseline else None)
        typer.echo(orjson.dumps(result, option=0 if json_ else orjson.OPT_INDENT_2).decode())

    @bench.command("scale")
    def bench_scale_cmd(
        workers: Annotated[int, typer.Option(help="Worker processes in the consumer group.")] = 2,
        events: Annotated[int, typer.Option(help="Generated user events.")] = 20_000,
        rebalance: Annotated[bool, typer.Option(help="Add a worker at 1/3 of the feed, stop one at 2/3.")] = False,
        seed: Annotated[int, typer.Option()] = 5,
        json_: Annotated[bool, typer.Option("--json")] = False,
    ) -> None:
        """Throughput of N workers, with lost events and users without recommendations from the final state."""
        from lab.scale import run_scale

        # With a rebalance the feed is paced, so that the join and the leave fall in the middle of processing.
        result = run_scale(workers, events, seed, rebalance, rate=1000.0 if rebalance else None)
        problems = result.pop("problems")
        typer.echo(orjson.dumps(result, option=0 if json_ else orjson.OPT_INDENT_2).decode())
        if problems:
            typer.echo("\n".join(problems), err=True)
