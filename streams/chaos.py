"""Reliability experiments (kills, broker outages, hostile input) and `reelstream bench chaos`."""

from __future__ import annotations

import typer


def register(*, app: typer.Typer, train: typer.Typer, eval_: typer.Typer, bench: typer.Typer) -> None:
    """Add this area's commands. Keep imports of heavy libraries inside the command bodies."""
