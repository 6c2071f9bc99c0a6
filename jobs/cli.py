"""The `vst` command: one tree, a subcommand per pipeline stage (`python -m jobs.cli` too).

    vst demo --out runs/demo          # the main job, end to end on the embedded default
    vst speedrun --out DIR            # corpus -> store -> VST + text baselines -> comparison
    vst sweep --data STORE ...        # scaling study: a grid of trainings on Ray, fits, report
    vst frontier --data STORE ...     # the best text model of several sizes at one budget
    vst corpus build --out DIR        # local corpus from Debian doc packages (Pile format)
    vst corpus demo --out DIR         # the small demo corpus (Python's own docs); also read
    vst render FILE --out DIR         # text -> page images + pages.jsonl
    vst codec train|train-reader|card # the shipped `mini` codec: training and model card
    vst fidelity FILE --out DIR       # text -> render -> encode -> decode -> text report
    vst convert --corpus C --out S    # corpus -> visual-token store (Ray)
    vst store info|verify ROOT        # inspect and check a token store
    vst train --recipe learn ...      # train the VST or a text baseline (alias: vst-train)
    vst generate CKPT ...             # continue a document with a trained VST
    vst sft --base RUN --data FILE    # instruction tuning; vst chat CKPT: talk to it
    vst eval run|lm-eval|compare|...  # benchmarks, runners, efficiency, comparisons
    vst curriculum build --out DIR    # the retrieval curriculum: SFT sets + held-out RULER files

jobs/ sits on top of the data flow (corpus -> render -> codec -> store -> vst -> eval), so
this is the only module that imports every stage. Each command's flags come from its
config dataclass (`jobs.config_cli.config_command`) or its package's own command function,
with heavy imports inside, so `vst --help` stays fast.
"""

from __future__ import annotations

import json
from pathlib import Path

import typer

from jobs.config_cli import config_command
from jobs.errors import ReportingCommand, ReportingGroup, debug_option

# ReportingGroup: a user's mistake in any subcommand prints `error: ...` and exits 2; a bug
# keeps its traceback (jobs/errors.py).
app = typer.Typer(
    name="vst",
    cls=ReportingGroup,
    help="Visual-Symbolic Transformer: render long text as pages, encode them with a frozen "
    "optical codec, model the visual tokens, and evaluate against text baselines.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)
app.callback()(debug_option)


def _train(cfg) -> None:
    from vst.train import dist_env, train

    result = train(cfg)
    if dist_env()[0] == 0:
        print(json.dumps(result["eval"], indent=1))
        print(f"checkpoint: {result['checkpoint']}")


def _compare(cfg) -> dict:
    from eval.compare import compare

    summary = compare(cfg)
    typer.echo((Path(cfg.out) / "compare.md").read_text())
    return summary


def _run(target: str):
    """A command's run function, imported when the command runs (`vst --help` stays fast)."""
    def run(cfg):
        import importlib

        module, _, name = target.partition(":")
        return getattr(importlib.import_module(module), name)(cfg)

    return run


def _mount() -> None:
    from codec.mini import configs as mini
    from data.cli import corpus_app, store_app
    from eval.compare import CompareConfig
    from eval.efficiency import EfficiencyConfig, report
    from eval.eval_cli import app as eval_app
    from eval.fidelity import fidelity
    from eval.runners_cli import lm_eval_cmd, run
    from jobs.convert.cli import convert
    from jobs.curriculum_cli import curriculum_app
    from jobs.demo import demo_command
    from jobs.frontier import FrontierConfig, run_frontier_and_print
    from jobs.speedrun import speedrun_command
    from jobs.sweep import SweepConfig, run_sweep_and_print
    from render.cli import render
    from vst.cli import chat, generate
    from vst.sft_config import SFTConfig
    from vst.train_config import TrainConfig

    app.command("demo")(demo_command())
    app.command("speedrun")(speedrun_command())
    app.command("sweep")(config_command(SweepConfig, run_sweep_and_print))
    app.command("frontier")(config_command(FrontierConfig, run_frontier_and_print))
    app.add_typer(corpus_app, name="corpus")
    app.command("render")(render)
    codec_app = typer.Typer(no_args_is_help=True, help="Train the shipped `mini` codec.")
    codec_app.command("train")(config_command(mini.CodecTrainConfig, _run("codec.mini.train:train")))
    codec_app.command("train-reader")(
        config_command(mini.ReaderTrainConfig, _run("codec.mini.train_reader:train")))
    codec_app.command("card")(config_command(mini.CardConfig, _run("codec.mini.card:write_card")))
    app.add_typer(codec_app, name="codec", help="Train the shipped `mini` codec (stage 1: "
                  "encoder + CTC read-out, stage 2: causal reader) and write its model card.")
    app.command("fidelity")(fidelity)
    app.command("convert")(convert)
    app.add_typer(store_app, name="store")
    app.command("train")(config_command(TrainConfig, _train, doc=TRAIN_DOC))
    app.command("generate")(generate)
    app.command("sft")(config_command(SFTConfig, _run("vst.sft:sft_and_print"), doc=SFT_DOC))
    app.command("chat")(chat)
    eval_app.command("run")(run)
    eval_app.command("lm-eval")(lm_eval_cmd)
    eval_app.command("efficiency")(config_command(EfficiencyConfig, report))
    eval_app.command("compare")(config_command(CompareConfig, _compare))
    from jobs.compression import CompressionConfig, run as run_compression
    eval_app.command("compression")(config_command(CompressionConfig, run_compression))
    app.add_typer(eval_app, name="eval", help="Long-context benchmarks, runners, efficiency and "
                  "the comparison with text baselines.")
    app.add_typer(curriculum_app, name="curriculum")


TRAIN_DOC = """Train a VST (--modality vector) or the same-shape text baseline (--modality text).

--recipe learn | text-bytes | text-cl100k fills every flag you do not give. DDP:
torchrun --standalone --nproc_per_node N -m jobs.cli train ... (see vst/train.py)."""

SFT_DOC = """Instruction-tune a VST run (--base) on instruction / context / response samples.

Full-parameter fine-tuning; the loss falls on response positions only (see vst/sft.py)."""

_mount()


def main() -> None:
    app()


def train_main() -> None:
    """`vst-train`: an alias of `vst train`."""
    from vst.train_config import TrainConfig

    alias = typer.Typer(add_completion=False, pretty_exceptions_show_locals=False)
    alias.command(cls=ReportingCommand)(config_command(TrainConfig, _train, doc=TRAIN_DOC))
    alias()


if __name__ == "__main__":
    main()
