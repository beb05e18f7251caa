"""`reelstream bench index` end to end on a small synthetic catalogue."""

from __future__ import annotations

import orjson
import pytest
import typer
from typer.testing import CliRunner

from reelstream import index_commands as cli

pytestmark = pytest.mark.slow


def test_bench_index_prints_one_json_object() -> None:
    app, bench = typer.Typer(), typer.Typer()
    app.add_typer(bench, name="bench")
    cli.register(app=app, train=typer.Typer(), eval_=typer.Typer(), bench=bench)
    args = "bench index --items 3000 --dim 16 --queries 50 --nlist 16 --nprobe 8 --json".split()
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    report = orjson.loads(result.stdout)
    assert report["items"] == 3000 and report["settings"]["nlist"] == 16
    assert report["exact"]["recall_at_20"] == 1.0 and report["exact"]["upsert_visible"] == 1.0
    ivf = report["ivf"]
    assert ivf["approximate"] and ivf["recall_at_20"] >= 0.9 and ivf["upsert_visible"] >= 0.95
    for kind in ("exact", "ivf"):
        for metric in ("single_query_ms", "upsert_ms", "remove_ms"):
            assert 0 <= report[kind][metric]["p50"] <= report[kind][metric]["p99"]
    assert set(report["ivf_to_exact"]) >= {"build_s", "single_query_p50", "batch_queries_per_s", "remove_p50"}
