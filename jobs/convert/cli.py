"""The conversion's command line, derived from `ConvertConfig` (flags, defaults, help).

    python -m jobs.convert --corpus corpus.jsonl.zst --out runs/store --codec mini
    vst convert --corpus corpus.jsonl.zst --out runs/store --num-parts 16 --codec-option k=v
    python -m jobs.convert --help

Heavy imports (Ray, torch) wait until the command runs, so `vst --help` stays fast.
"""

from __future__ import annotations

import sys
from typing import Optional

import typer

from jobs.config_cli import config_command
from jobs.convert.config import ConvertConfig
from jobs.errors import ReportingCommand


def _run(cfg: ConvertConfig) -> None:
    from jobs.convert.driver import convert as run

    run(cfg)


convert = config_command(ConvertConfig, _run)


def main(argv: Optional[list[str]] = None) -> None:
    app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)
    app.command(cls=ReportingCommand)(convert)
    app(args=argv if argv is not None else sys.argv[1:], prog_name="python -m jobs.convert")
