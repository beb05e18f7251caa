"""`reelstream bench index`: the FAISS index benchmark."""

from __future__ import annotations

import typer


def register(*, app: typer.Typer, train: typer.Typer, eval_: typer.Typer, bench: typer.Typer) -> None:
    """Add this area's commands. Keep imports of heavy libraries inside the command bodies."""

    @bench.command("index")
    def bench_index(
        items: int = typer.Option(..., min=1, help="Synthetic ALS-like items to index."),
        dim: int = typer.Option(64, min=1),
        queries: int = typer.Option(500, min=1, help="Queries for recall, latency and throughput."),
        k: int = typer.Option(20, min=1),
        nlist: int | None = typer.Option(None, min=1, help="Override the IVF setting (for tuning)."),
        nprobe: int | None = typer.Option(None, min=1, help="Override the IVF setting (for tuning)."),
        json: bool = typer.Option(False, "--json", help="One JSON object on one line (default: indented)."),
    ) -> None:
        """Exact vs IVF: build time, recall@k vs exact, query latency/throughput, upsert and remove cost."""
        import orjson

        from indexer.bench import run
        from streams.settings import get_settings

        overrides = {name: v for name, v in (("nlist", nlist), ("nprobe", nprobe)) if v is not None}
        settings = get_settings().index.model_copy(update=overrides)
        result = run(settings, items=items, dim=dim, queries=queries, k=k)
        typer.echo(orjson.dumps(result, option=orjson.OPT_INDENT_2 if not json else 0).decode())
