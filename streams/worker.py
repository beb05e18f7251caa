"""Start a worker process: load the models named by Settings, build the Faust app, run it."""

from __future__ import annotations

import logging

from reelstream.settings import Settings
from streams.app import create_app


def run_worker(settings: Settings, loglevel: str = "WARNING") -> None:
    import faust

    from streams.models import load_recommender, load_scorer

    app = create_app(settings, load_recommender(settings), load_scorer(settings))
    logging.getLogger("faust").setLevel(loglevel)
    faust.Worker(app, loglevel=loglevel, quiet=True).execute_from_commandline()
