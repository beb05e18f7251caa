"""The `reelstream` command. Each area's commands live in a module here (see `register` in each),
so the CLI stays a thin index and heavy imports (torch, faiss) happen only in the command that needs them.
"""

from __future__ import annotations

import typer

# Never local variables in tracebacks (explicit, whatever typer's default): a Kafka client's config in a crashing
# frame holds its SASL/TLS passwords.
app = typer.Typer(
    no_args_is_help=True, add_completion=False, help=__doc__.split("\n")[0], pretty_exceptions_show_locals=False
)
train_app = typer.Typer(no_args_is_help=True, help="Train models offline.")
eval_app = typer.Typer(no_args_is_help=True, help="Evaluate models; --json prints one object.")
bench_app = typer.Typer(no_args_is_help=True, help="Benchmarks; every one prints JSON with a same-run baseline.")
app.add_typer(train_app, name="train")
app.add_typer(eval_app, name="eval")
app.add_typer(bench_app, name="bench")


def _register_all() -> None:
    from reelstream import commands, index_commands, lab_commands, recs_commands, review_commands, text_commands

    for module in (commands, lab_commands, text_commands, recs_commands, index_commands, review_commands):
        module.register(app=app, train=train_app, eval_=eval_app, bench=bench_app)


_register_all()


def main() -> None:
    app()


if __name__ == "__main__":
    main()
