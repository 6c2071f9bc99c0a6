"""The `vst` command line: one entry point, a subcommand per pipeline stage.

    vst demo --out runs/demo          # the main job, end to end on the embedded default
    vst render FILE --out DIR         # text -> page images + pages.jsonl
    vst fidelity FILE --out DIR       # text -> render -> encode -> decode -> text report
    vst corpus build --out DIR        # local corpus from Debian doc packages (Pile format)
    vst convert --corpus C --out S    # corpus -> visual-token store (Ray)
    vst speedrun --out DIR            # corpus -> store -> VST + text baselines -> comparison
    vst generate CKPT ...             # continue a document with a trained VST
    vst eval compare ...              # the VST against text baselines on the same pages
    vst eval --help                   # benchmarks, runners, efficiency

It lives in `eval/` because it sits at the end of the data flow and may import every
stage. Each stage keeps its own command in `<package>/cli.py` with heavy imports inside
the function, so `vst --help` stays fast.
"""

from __future__ import annotations

import typer

from data.corpus_build import corpus_build_command
from data.demo import demo_corpus_command
from eval.demo import demo
from eval.efficiency import efficiency
from eval.eval_cli import app as eval_app
from eval.fidelity import fidelity
from eval.runners.cli import lm_eval_cmd, run
from jobs.config_cli import config_command
from jobs.convert.cli import convert
from jobs.speedrun import speedrun_command
from render.cli import render
from vst.cli import generate

app = typer.Typer(
    name="vst",
    help="Visual-Symbolic Transformer: render long text as pages, encode them with a frozen "
    "optical codec, model the visual tokens, and evaluate against text baselines.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)
app.command("demo")(demo)
app.command("demo-corpus")(demo_corpus_command)
app.command("render")(render)
app.command("fidelity")(fidelity)
app.command("convert")(convert)
app.command("generate")(generate)
eval_app.command("run")(run)
eval_app.command("lm-eval")(lm_eval_cmd)
eval_app.command("efficiency")(efficiency)
app.command("speedrun")(speedrun_command())


def _compare(cfg):
    from eval.compare import compare

    summary = compare(cfg)
    typer.echo((__import__("pathlib").Path(cfg.out) / "compare.md").read_text())
    return summary


def _compare_command():
    from eval.compare import CompareConfig

    return config_command(CompareConfig, _compare)


eval_app.command("compare")(_compare_command())
app.add_typer(eval_app, name="eval", help="Long-context benchmarks, runners and efficiency.")
corpus_app = typer.Typer(no_args_is_help=True, help="Build corpora in The Pile's format.")
corpus_app.command("build")(corpus_build_command)
app.add_typer(corpus_app, name="corpus", help="Build corpora in The Pile's format.")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
