"""Start a worker process: load the models named by Settings, build the Faust app, run it."""

from __future__ import annotations

import gc

from streams.app import create_app
from streams.settings import Settings

# Young-generation size of the cyclic garbage collector (CPython's default: 700). Measured on the 50k-event
# `bench pipeline` stream: collections took ~1.4 s of the worker's main thread, each full one a ~100 ms
# stall walking every object of the models, the app and the tables. With the start-up objects frozen and
# a threshold of 20,000, the main thread's CPU per event went from 150-175 us to 120-127 us. At 100,000
# users (`bench state`, whose caches hold ~1.5M container objects: 50k users' rows in the users table's LRU
# and the confidence prefixes) the main thread still spent 300-349 us per event with 20,000, and 259-280
# with 100,000 (2 runs each, interleaved; the collector off entirely: 285-308 in an earlier run). Memory is
# unaffected (peak RSS 1,549-1,552 MiB against 1,551-1,554): reference counting frees almost everything;
# the collector only finds cycles.
GC_GEN0_THRESHOLD = 100_000


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
