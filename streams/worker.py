"""Start a worker process: load the models named by Settings, build the Faust app, run it."""

from __future__ import annotations

from reelstream.settings import Settings
from streams.app import create_app


def run_worker(settings: Settings, loglevel: str = "WARNING") -> None:
    import faust

    from streams.models import load_recommender, load_scorer

    app = create_app(settings, load_recommender(settings), load_scorer(settings))
    worker = faust.Worker(app, loglevel=loglevel, quiet=True)
    # Faust's terminal spinner sets the root logger to DEBUG, and aiokafka then formats a debug record
    # per produce request: ~6% of a worker's CPU (py-spy). Without it the configured level holds.
    worker.spinner = None
    worker.execute_from_commandline()
