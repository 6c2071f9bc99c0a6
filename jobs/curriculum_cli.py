"""`vst curriculum`: the retrieval curriculum of #23 (eval/curriculum.py builds it).

    vst curriculum build --out runs/curriculum      # train / val / eval files, store segments
    vst curriculum study --out runs/long_context    # the whole study (jobs/long_context.py)

The sub-app is mounted by jobs/cli.py; later commands of the study join `curriculum_app`.
"""

from __future__ import annotations

import typer

from eval.curriculum import CurriculumConfig
from jobs.config_cli import config_command
from jobs.long_context import StudyConfig

curriculum_app = typer.Typer(
    name="curriculum", no_args_is_help=True,
    help="The retrieval curriculum (#23): RULER-style retrieval samples as instruction data, "
    "natural continuations, and held-out RULER evaluation files.")


def _build(cfg: CurriculumConfig) -> dict:
    from eval.curriculum import build_and_print

    return build_and_print(cfg)


curriculum_app.command("build")(config_command(CurriculumConfig, _build))


def _study(cfg: StudyConfig) -> dict:
    from jobs.long_context import run_study

    return run_study(cfg)


curriculum_app.command("study")(config_command(StudyConfig, _study))
