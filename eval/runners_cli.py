"""Command functions for `vst eval run` and `vst eval lm-eval` (heavy imports inside)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

RunnerOpt = Annotated[str, typer.Option(help="hf | vst-text | codec | vst")]
ModelOpt = Annotated[
    Optional[str], typer.Option(help="HF model dir (hf), or checkpoint dir (vst-text, vst)")
]
CodecOpt = Annotated[
    Optional[str], typer.Option(help="codec name: mini | deepseek-ocr2 | toy (codec, vst)")
]
CodecPathOpt = Annotated[Optional[str], typer.Option(help="codec checkpoint directory")]
AnswererOpt = Annotated[
    Optional[str],
    typer.Option(help="codec runner, transcribing codec (mini): the text model that answers"),
]
AnswererRunnerOpt = Annotated[str, typer.Option(help="runner kind of --answerer: hf | vst-text")]
MaxLenOpt = Annotated[Optional[int], typer.Option(help="prompt budget in text tokens")]
MaxVisOpt = Annotated[Optional[int], typer.Option(help="context budget in visual tokens")]
CtxTokOpt = Annotated[Optional[int], typer.Option(
    help="vst-text, instruction-tuned: read only the context's last N tokens (truncation)")]
ChatOpt = Annotated[
    Optional[bool],
    typer.Option("--chat/--no-chat", help="chat template (default: if the tokenizer has one)"),
]
DeviceOpt = Annotated[str, typer.Option(help="cpu, cuda, cuda:N")]


def run(
    tasks: Annotated[
        list[Path], typer.Argument(exists=True, help="task .jsonl files or directories of them")
    ],
    out: Annotated[Path, typer.Option(help="prediction directory: <dataset>.jsonl files")],
    runner: RunnerOpt = "hf",
    model: ModelOpt = None,
    codec: CodecOpt = None,
    codec_path: CodecPathOpt = None,
    answerer: AnswererOpt = None,
    answerer_runner: AnswererRunnerOpt = "hf",
    max_length: MaxLenOpt = None,
    max_visual_tokens: MaxVisOpt = None,
    context_tokens: CtxTokOpt = None,
    chat: ChatOpt = None,
    device: DeviceOpt = "cpu",
    limit: Annotated[Optional[int], typer.Option(help="first N samples of each file")] = None,
) -> None:
    """Predict LongBench / RULER-style task files with a model; resumable (skips done `_id`s).

    Score with `vst eval score-longbench OUT` (LongBench) or `vst eval score-ruler OUT`.
    """
    from eval.runners.common import run_tasks
    from eval.runners.factory import make_runner

    r = make_runner(
        runner, model, codec=codec, codec_path=codec_path, answerer=answerer,
        answerer_runner=answerer_runner, max_length=max_length,
        max_visual_tokens=max_visual_tokens, context_tokens=context_tokens, chat=chat,
        device=device,
    )
    for res in run_tasks(r, tasks, out, limit=limit):
        typer.echo(f"{res.dataset}: {res.predicted} predicted, {res.skipped} already done, "
                   f"{res.seconds:.1f}s -> {res.path}")


def lm_eval_cmd(
    tasks: Annotated[str, typer.Option(help="comma-separated lm-eval task names")],
    include_path: Annotated[
        list[Path], typer.Option(help="directory of task YAMLs (repeatable)")
    ] = [Path("eval/tasks")],  # noqa: B006
    runner: RunnerOpt = "vst",
    model: ModelOpt = None,
    codec: CodecOpt = None,
    codec_path: CodecPathOpt = None,
    answerer: AnswererOpt = None,
    max_length: MaxLenOpt = None,
    max_visual_tokens: MaxVisOpt = None,
    device: DeviceOpt = "cpu",
    limit: Annotated[Optional[int], typer.Option(help="first N documents per task")] = None,
    out: Annotated[Optional[Path], typer.Option(help="write the results JSON here")] = None,
) -> None:
    """Run lm-eval tasks (local YAMLs, offline) with a project model via the "vst" adapter."""
    from eval.lm_eval_adapter import evaluate_local

    res = evaluate_local(
        [t.strip() for t in tasks.split(",") if t.strip()], include_path=include_path,
        limit=limit, runner=runner, model=model, codec=codec, codec_path=codec_path,
        answerer=answerer, max_length=max_length, max_visual_tokens=max_visual_tokens,
        device=device,
    )
    text = json.dumps(res["results"], indent=2, default=str)
    typer.echo(text)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text + "\n", encoding="utf-8")
