"""`vst eval ...`: long-context benchmark commands that need no model.

Heavy or slow imports stay inside the commands so that `vst --help` stays fast.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

app = typer.Typer(
    help="Long-context benchmarks: LongBench v1/E/v2, MRCR, RULER-style tasks.",
    no_args_is_help=True,
)
_DirArg = typer.Argument(exists=True, file_okay=False)


@app.command("score-longbench")
def score_longbench(
    pred_dir: Annotated[Path, _DirArg],
    e: Annotated[bool, typer.Option("--e", help="LongBench-E: buckets 0-4k / 4-8k / 8k+")] = False,
) -> None:
    """Score a directory of official-format LongBench predictions (<dataset>.jsonl).

    Writes DIR/result.json with the numbers the official LongBench eval.py writes.
    """
    from eval.longbench import score_directory

    scores = score_directory(pred_dir, longbench_e=e)
    typer.echo(json.dumps(scores, ensure_ascii=False, indent=4))
    typer.echo(f"wrote {pred_dir / 'result.json'}", err=True)


@app.command("score-longbench-v2")
def score_longbench_v2(
    files: Annotated[list[Path], typer.Argument(exists=True, dir_okay=False)],
    compensated: Annotated[bool, typer.Option(help="count unanswered items as 0.25")] = False,
    out: Annotated[Optional[Path], typer.Option(help="also write the table here")] = None,
) -> None:
    """Accuracy overall / easy / hard / short / medium / long of LongBench v2 result files."""
    from eval.longbench_v2 import result_table

    table = result_table(files, compensated=compensated)
    typer.echo(table)
    if out is not None:
        out.write_text(table, encoding="utf-8")


@app.command("score-mrcr")
def score_mrcr(
    file: Annotated[Path, typer.Argument(exists=True, dir_okay=False)],
    tokens: Annotated[bool, typer.Option(help="bin by cl100k tokens, not n_chars")] = False,
) -> None:
    """Mean MRCR score of records with a `response`, by needle count and length bin."""
    from eval.mrcr import summarize

    lines = file.read_text(encoding="utf-8").splitlines()
    records = [json.loads(line) for line in lines if line.strip()]
    count_fn = None
    if tokens:
        from eval.longbench import cl100k_count

        count_fn = cl100k_count
    typer.echo(json.dumps(summarize(records, count_fn=count_fn), indent=2))


@app.command("make-ruler")
def make_ruler(
    out_dir: Annotated[Path, typer.Argument(help="where <task>_<length>.jsonl files go")],
    tasks: Annotated[str, typer.Option("--tasks", "-t", help="comma-separated, or all")] = "all",
    length: Annotated[
        Optional[list[int]], typer.Option("--length", "-l", help="target (repeatable); 4096")
    ] = None,
    unit: Annotated[str, typer.Option(help="length unit: chars or tokens (cl100k)")] = "tokens",
    num_samples: Annotated[int, typer.Option("--num-samples", "-n")] = 20,
    seed: Annotated[int, typer.Option()] = 42,
    reserve: Annotated[int, typer.Option(help="length units kept free for the answer")] = 0,
    haystack: Annotated[
        Optional[list[Path]],
        typer.Option(help=".txt / .jsonl / corpus path (repeatable); default: stdlib docstrings"),
    ] = None,
    max_docs: Annotated[int, typer.Option(help="documents to read from each haystack path")] = 200,
    lm_eval: Annotated[bool, typer.Option(help="also write lm-eval task YAMLs")] = True,
) -> None:
    """Generate seeded RULER-style tasks (NIAH, vt, cwe, fwe) at the requested lengths."""
    from eval import ruler

    names = list(ruler.TASKS) if tasks == "all" else [t.strip() for t in tasks.split(",")]
    unknown = [t for t in names if t not in ruler.TASKS]
    if unknown:
        raise typer.BadParameter(f"unknown tasks {unknown}; choose from {list(ruler.TASKS)}")
    texts = _read_haystack(haystack, max_docs) if haystack else None
    written: list[Path] = []
    for n in length or [4096]:
        for task in names:
            try:
                recs = ruler.generate(
                    task, n, num_samples, unit=unit, seed=seed, haystack=texts, reserve=reserve
                )
            except ValueError as err:
                typer.echo(f"{task} at length {n}: {err}", err=True)
                raise typer.Exit(2) from err
            path = ruler.write_jsonl(recs, out_dir / f"{task}_{n}.jsonl")
            written.append(path)
            mean = sum(r["length"] for r in recs) / len(recs)
            typer.echo(f"{path}  ({len(recs)} samples, mean length {mean:.0f} {unit})")
    if lm_eval:
        from eval.tasks import write_ruler_yamls

        for y in write_ruler_yamls(written, out_dir):
            typer.echo(f"lm-eval task: {y}")


def _read_haystack(paths: list[Path], max_docs: int) -> list[str]:
    """Plain .txt / .jsonl(`text`) files, or anything the project's corpus reader accepts."""
    texts: list[str] = []
    for p in paths:
        if p.suffix == ".txt":
            texts.append(p.read_text(encoding="utf-8"))
        elif p.suffix == ".jsonl":
            with open(p, encoding="utf-8") as f:
                for i, line in enumerate(f):
                    if i >= max_docs:
                        break
                    texts.append(json.loads(line)["text"])
        else:
            from data.corpus import read_corpus  # Pile .jsonl.zst, parquet, directories

            for i, doc in enumerate(read_corpus(p)):
                if i >= max_docs:
                    break
                texts.append(doc.text)
    return texts


@app.command("make-longbench-task")
def make_longbench_task(
    file: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="LongBench JSONL")],
    out_dir: Annotated[Path, typer.Option(help="where the YAML goes")] = Path("runs/lm_eval_tasks"),
    dataset: Annotated[Optional[str], typer.Option(help="default: the file's stem")] = None,
) -> None:
    """Write an lm-eval task YAML (`vst_longbench_<dataset>`) over a local LongBench file."""
    from eval.tasks import write_longbench_yaml

    typer.echo(write_longbench_yaml(file, out_dir, dataset=dataset))


@app.command("score-ruler")
def score_ruler(
    pred_dir: Annotated[Path, _DirArg],
) -> None:
    """RULER string_match_all per <task>.jsonl (records with `pred`); writes DIR/summary.json."""
    from eval.ruler import score_directory

    typer.echo(json.dumps(score_directory(pred_dir), indent=2))
