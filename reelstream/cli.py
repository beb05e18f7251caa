"""The `reelstream` command. Each area registers its own commands (see `register` in each module),
so the CLI stays a thin index and heavy imports (torch, faiss) happen only in the command that needs them.
"""

from __future__ import annotations

import typer

app = typer.Typer(no_args_is_help=True, add_completion=False, help=__doc__.split("\n")[0])
train_app = typer.Typer(no_args_is_help=True, help="Train models offline.")
eval_app = typer.Typer(no_args_is_help=True, help="Evaluate models; --json prints one object.")
bench_app = typer.Typer(no_args_is_help=True, help="Benchmarks; every one prints JSON with a same-run baseline.")
app.add_typer(train_app, name="train")
app.add_typer(eval_app, name="eval")
app.add_typer(bench_app, name="bench")


def _register_all() -> None:
    from indexer import cli as indexer_cli
    from models.recs import cli as recs_cli
    from models.text import cli as text_cli
    from reelstream import commands
    from streams import chaos, scale
    from streams import cli as streams_cli

    for module in (commands, streams_cli, chaos, scale, text_cli, recs_cli, indexer_cli):
        module.register(app=app, train=train_app, eval_=eval_app, bench=bench_app)


_register_all()


def main() -> None:
    app()


if __name__ == "__main__":
    main()
