"""Start a worker process: load the models named by Settings, build the Faust app, run it."""

from __future__ import annotations

import gc

from streams.app import create_app
from streams.settings import Settings

# Young-generation size of the cyclic garbage collector (CPython's default: 700). Measured on the 50k-event
# `bench pipeline` stream: collections took ~1.4 s of the worker's main thread, each full one a ~100 ms
# stall walking every object of the models, the app and the tables. With the start-up objects frozen and
# this threshold, the main thread's CPU per event went from 150-175 us to 120-127 us. Memory is unaffected:
# reference counting frees almost everything; the collector only finds cycles.
GC_GEN0_THRESHOLD = 20_000


def run_worker(settings: Settings, loglevel: str = "WARNING") -> None:
    import faust

    from models.recs.serving import load_recommender
    from models.text.base import load_comment_models

    recommender = load_recommender(settings.recs, settings.index)
    app = create_app(settings, recommender, load_comment_models(settings.moderation))
    worker = faust.Worker(app, loglevel=loglevel, quiet=True)
    # Faust's terminal spinner sets the root logger to DEBUG, and aiokafka then formats a debug record
    # per produce request: ~6% of a worker's CPU (py-spy). Without it the configured level holds.
    worker.spinner = None
    # What exists now (models, app, libraries) lives as long as the process: keep the collector off it.
    gc.collect()
    gc.freeze()
    gc.set_threshold(GC_GEN0_THRESHOLD, *gc.get_threshold()[1:])
    worker.execute_from_commandline()
