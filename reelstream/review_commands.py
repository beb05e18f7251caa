"""`reelstream review`: the reviewers' page (streams/review_web.py)."""

from __future__ import annotations

from typing import Annotated, Optional

import typer


def register(*, app: typer.Typer, train: typer.Typer, eval_: typer.Typer, bench: typer.Typer) -> None:
    @app.command()
    def review(
        bootstrap: Annotated[Optional[str], typer.Option(help="Kafka bootstrap servers (default: settings).")] = None,
        loglevel: Annotated[str, typer.Option()] = "WARNING",
    ) -> None:
        """Serve the review queue page: approve / remove / escalate comments and appeals (reviewers and their
        passwords from REELSTREAM_REVIEW__REVIEWERS; off without one)."""
        import logging

        from aiohttp import web

        from streams.producer import make_producer
        from streams.review_web import PendingItems, make_web_app
        from streams.settings import get_settings

        logging.basicConfig(level=loglevel.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        s = get_settings()
        if not s.review.reviewers or not all(p.get_secret_value() for p in s.review.reviewers.values()):
            typer.echo('error: the review page is off: set REELSTREAM_REVIEW__REVIEWERS to a JSON object of reviewer '
                       'names and passwords, e.g. {"ana": "<secret>"}', err=True)  # fmt: skip
            raise typer.Exit(2)
        servers = bootstrap or s.bootstrap_servers
        items = PendingItems(s, servers)
        items.start()
        producer = make_producer(servers, s.security)
        typer.echo(f"review: serving on http://{s.review.host}:{s.review.port}/", err=True)
        try:
            web.run_app(make_web_app(s, items, producer), host=s.review.host, port=s.review.port, print=None)
        finally:
            items.stop()
            producer.flush(10)
