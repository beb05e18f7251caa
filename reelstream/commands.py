"""Commands that run services: the embedded broker, a worker, the demo, the pipeline benchmark."""

from __future__ import annotations

import signal
import threading
from typing import Annotated, Optional

import typer

from streams.settings import get_settings


def register(*, app: typer.Typer, train: typer.Typer, eval_: typer.Typer, bench: typer.Typer) -> None:
    @app.command()
    def broker(
        port: Annotated[int, typer.Option(help="Fixed port to listen on (0 = random).")] = 0,
        addr_file: Annotated[Optional[str], typer.Option(help="Write the bootstrap address here once ready.")] = None,
        topic: Annotated[list[str], typer.Option(help="Extra topic NAME:PARTITIONS (repeatable).")] = [],
    ) -> None:
        """Run an embedded Kafka-protocol broker (librdkafka mock cluster) with every app topic created.

        SIGUSR1 takes the broker down (connections refused) and SIGUSR2 brings it back: outage tests.
        SIGHUP makes the next two SyncGroup requests fail with INVALID_REQUEST: group-join failure tests.
        """
        from lab.broker import MockCluster, write_addr_file
        from streams.topics import all_topics

        topics = all_topics(get_settings())
        for spec in topic:
            name, _, parts = spec.partition(":")
            topics[name] = int(parts or 1)
        cluster = MockCluster(topics, port=port).start()
        if addr_file:
            write_addr_file(addr_file, cluster.bootstrap)
        typer.echo(f"librdkafka {cluster.version} mock cluster on {cluster.bootstrap}: {len(topics)} topics", err=True)
        stop = threading.Event()
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
        signal.signal(signal.SIGINT, lambda *_: stop.set())
        # Fault injection for outage tests: SIGUSR1 takes the broker down, SIGUSR2 brings it back.
        signal.signal(signal.SIGUSR1, lambda *_: cluster.set_down())
        signal.signal(signal.SIGUSR2, lambda *_: cluster.set_up())
        signal.signal(signal.SIGHUP, lambda *_: cluster.fail_next(api_key=14, error=42, count=2))  # SyncGroup
        while not stop.wait(0.5):
            pass
        typer.echo("broker stopped", err=True)

    @app.command()
    def worker(loglevel: Annotated[str, typer.Option()] = "WARNING") -> None:
        """Run a stream worker (Faust) against REELSTREAM_BOOTSTRAP_SERVERS."""
        from streams.worker import run_worker

        run_worker(get_settings(), loglevel=loglevel.upper())

    @app.command()
    def trainer(loglevel: Annotated[str, typer.Option()] = "WARNING") -> None:
        """Run the trainer: re-fits ALS from the users table's changelog and publishes new model versions
        (one active trainer per app; more stand by). Serves /metrics on REELSTREAM_WEB_PORT."""
        import logging

        from streams.trainer import run_trainer

        logging.basicConfig(level=loglevel.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        stop = threading.Event()
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
        signal.signal(signal.SIGINT, lambda *_: stop.set())
        run_trainer(get_settings(), stop)

    @app.command()
    def demo(
        json_: Annotated[bool, typer.Option("--json", help="Print one JSON object instead.")] = False,
        review: Annotated[bool, typer.Option(help="Then serve the review page on the demo's queue until Ctrl-C "
                                             "(reviewers from REELSTREAM_REVIEW__REVIEWERS).")] = False,
    ) -> None:
        """Start the embedded broker and a worker, replay the committed sample, summarise the outputs."""
        import orjson

        from lab.demo import print_summary, run_demo

        settings = get_settings()
        if review and not settings.review.reviewers:
            typer.echo('error: --review needs REELSTREAM_REVIEW__REVIEWERS, e.g. {"ana": "<secret>"}', err=True)
            raise typer.Exit(2)
        hold = None
        if review:
            from lab.demo import serve_review

            hold = serve_review(settings, print_summary)
        result = run_demo(settings, hold=hold)
        if review:
            return
        if json_:
            typer.echo(orjson.dumps(result["summary"]).decode())
        else:
            print_summary(result)

    @app.command()
    def topics(
        create: Annotated[bool, typer.Option(help="Create missing topics on the configured (real) Kafka.")] = False,
        replication: Annotated[int, typer.Option(help="Replication factor for --create.")] = 1,
    ) -> None:
        """List every topic the app needs (name, partitions, cleanup policy, how an erased user's data leaves
        it); --create makes them."""
        from streams.topics import all_topics, erasure_summary, topic_config

        settings = get_settings()
        wanted = all_topics(settings)
        for name, parts in wanted.items():
            policy = topic_config(settings, name).get("cleanup.policy", "delete")
            typer.echo(f"{name}\t{parts}\t{policy}\t{erasure_summary(settings, name)}")
        if not create:
            return
        from confluent_kafka import KafkaError, KafkaException
        from confluent_kafka.admin import AdminClient, NewTopic

        from streams.security import client_config

        admin = AdminClient(client_config(settings.bootstrap_servers, settings.security))
        new = [
            NewTopic(n, p, replication, config=topic_config(settings, n))
            for n, p in wanted.items()
        ]
        for name, fut in admin.create_topics(new, request_timeout=30).items():
            try:
                fut.result()
                typer.echo(f"created {name}", err=True)
            except KafkaException as exc:
                if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                    raise
                typer.echo(f"exists {name}", err=True)

    @app.command()
    def schemas(out: Annotated[str, typer.Option(help="Directory for one JSON Schema file per topic.")] = "docs/schemas") -> None:
        """Write the published JSON Schemas of every topic contract, generated from the pydantic models."""
        import json
        from pathlib import Path

        from contracts.events import json_schemas

        Path(out).mkdir(parents=True, exist_ok=True)
        for name, schema in json_schemas().items():
            path = Path(out) / f"{name}.schema.json"
            path.write_text(json.dumps(schema, indent=2, sort_keys=True) + "\n")
            typer.echo(str(path))

    @bench.command("pipeline")
    def bench_pipeline_cmd(
        events: Annotated[int, typer.Option(help="Messages for the throughput phase.")] = 50_000,
        latency_events: Annotated[int, typer.Option(help="Messages for the paced latency phase.")] = 10_000,
        latency_rate: Annotated[float, typer.Option(help="Messages/s in the latency phase (below capacity).")] = 1_000.0,
        seed: Annotated[int, typer.Option()] = 11,
        json_: Annotated[bool, typer.Option("--json")] = False,
        plot: Annotated[Optional[str], typer.Option(help="Also write a PNG of throughput and latency over time.")] = None,
        backlog_linger_ms: Annotated[
            int,
            typer.Option(help="Producer batching of the throughput backlog: the embedded broker returns one "
                         "batch per partition per fetch, Kafka up to 1 MB (see lab/bench.py)."),
        ] = 5,
    ) -> None:
        """Whole-pipeline events/s and latency, against a raw consumer on the same broker."""
        import orjson

        from lab.bench import bench_pipeline

        result = bench_pipeline(
            get_settings(), events, latency_events, latency_rate, seed, series=plot is not None,
            backlog_linger_ms=backlog_linger_ms,
        )  # fmt: skip
        if plot is not None:
            from monitoring.plots import bench_timeline

            title = f"reelstream bench pipeline: {result['events']} events, {result['events_per_s']:.0f} events/s"
            bench_timeline(result.pop("series"), plot, title=title)
        typer.echo(orjson.dumps(result, option=orjson.OPT_INDENT_2 if not json_ else 0).decode())

    @app.command("recs-api")
    def recs_api(
        bootstrap: Annotated[Optional[str], typer.Option(help="Kafka bootstrap servers (default: settings).")] = None,
    ) -> None:
        """Serve GET /users/{id}/recommendations from the compacted recommendations topic (bearer token from
        REELSTREAM_READ_API__TOKEN; off without one)."""
        from aiohttp import web

        from streams.read_api import LatestLists, make_web_app

        s = get_settings()
        bearer = s.read_api.token.get_secret_value() if s.read_api.token is not None else ""
        if not bearer:
            typer.echo("error: the read API is off: set REELSTREAM_READ_API__TOKEN to a secret its clients send "
                       "as `Authorization: Bearer <token>`", err=True)  # fmt: skip
            raise typer.Exit(2)
        lists = LatestLists(s, bootstrap)
        lists.start()
        typer.echo(f"recs-api: serving on http://{s.read_api.host}:{s.read_api.port}", err=True)
        try:
            web.run_app(make_web_app(lists, bearer), host=s.read_api.host, port=s.read_api.port, print=None)
        finally:
            lists.stop()

    @app.command()
    def config() -> None:
        """Print every setting as its environment variable and effective value."""
        from streams.settings import env_reference

        for var, value in env_reference(get_settings()):
            typer.echo(f"{var}={value}")
