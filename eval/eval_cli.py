"""`vst eval ...`: long-context benchmark commands that need no model.

Heavy or slow imports stay inside the commands so that `vst --help` stays fast.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

app = typer.Typer(help="Long-context benchmarks: LongBench v1/E/v2, MRCR, RULER-style tasks.", no_args_is_help=True)


@app.command("score-longbench")
def score_longbench(
    pred_dir: Annotated[Path, typer.Argument(exists=True, file_okay=False, help="directory of <dataset>.jsonl prediction files")],
    e: Annotated[bool, typer.Option("--e", help="LongBench-E: score by length bucket 0-4k / 4-8k / 8k+")] = False,
) -> None:
    """Score official-format LongBench predictions; writes DIR/result.json like the official eval.py."""
    from eval.longbench import score_directory

    scores = score_directory(pred_dir, longbench_e=e)
    typer.echo(json.dumps(scores, ensure_ascii=False, indent=4))
    typer.echo(f"wrote {pred_dir / 'result.json'}", err=True)


@app.command("score-longbench-v2")
def score_longbench_v2(
    files: Annotated[list[Path], typer.Argument(exists=True, dir_okay=False, help="result files (JSONL) from a LongBench v2 run")],
    compensated: Annotated[bool, typer.Option(help="count unanswered items as 0.25")] = False,
    out: Annotated[Optional[Path], typer.Option(help="also write the table here")] = None,
) -> None:
    """Accuracy overall / easy / hard / short / medium / long, like the official result.py."""
    from eval.longbench_v2 import result_table

    table = result_table(files, compensated=compensated)
    typer.echo(table)
    if out is not None:
        out.write_text(table, encoding="utf-8")


@app.command("score-mrcr")
def score_mrcr(
    file: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="JSONL of MRCR records, each with a `response`")],
    tokens: Annotated[bool, typer.Option(help="bin lengths by cl100k tokens instead of n_chars")] = False,
) -> None:
    """Mean MRCR score (prefix check + SequenceMatcher ratio), by needles and length bin."""
    from eval.mrcr import summarize

    records = [json.loads(line) for line in file.read_text(encoding="utf-8").splitlines() if line.strip()]
    count_fn = None
    if tokens:
        from eval.longbench import cl100k_count

        count_fn = cl100k_count
    typer.echo(json.dumps(summarize(records, count_fn=count_fn), indent=2))


@app.command("make-ruler")
def make_ruler(
    out_dir: Annotated[Path, typer.Argument(help="where <task>_<length>.jsonl files go")],
    tasks: Annotated[str, typer.Option(help="comma-separated task names, or 'all'")] = "all",
    length: Annotated[list[int], typer.Option("--length", "-l", help="target length (repeatable)")] = [4096],  # noqa: B006
    unit: Annotated[str, typer.Option(help="length unit: chars or tokens (cl100k)")] = "tokens",
    num_samples: Annotated[int, typer.Option("--num-samples", "-n")] = 20,
    seed: Annotated[int, typer.Option()] = 42,
    reserve: Annotated[int, typer.Option(help="length units kept free (e.g. for the answer)")] = 0,
    haystack: Annotated[Optional[list[Path]], typer.Option(help="haystack text: .txt/.jsonl/corpus path (repeatable); default: stdlib docstrings")] = None,
    max_docs: Annotated[int, typer.Option(help="documents to read from each haystack path")] = 200,
    lm_eval: Annotated[bool, typer.Option(help="also write lm-eval task YAMLs next to the data")] = True,
) -> None:
    """Generate seeded RULER-style tasks (NIAH, vt, cwe, fwe) at the requested lengths."""
    from eval import ruler

    names = list(ruler.TASKS) if tasks == "all" else [t.strip() for t in tasks.split(",") if t.strip()]
    unknown = [t for t in names if t not in ruler.TASKS]
    if unknown:
        raise typer.BadParameter(f"unknown tasks {unknown}; choose from {list(ruler.TASKS)}")
    texts = _read_haystack(haystack, max_docs) if haystack else None
    written: list[Path] = []
    for n in length:
        for task in names:
            recs = ruler.generate(task, n, num_samples, unit=unit, seed=seed, haystack=texts, reserve=reserve)
            path = ruler.write_jsonl(recs, out_dir / f"{task}_{n}.jsonl")
            written.append(path)
            typer.echo(f"{path}  ({len(recs)} samples, mean length {sum(r['length'] for r in recs) / len(recs):.0f} {unit})")
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


@app.command("score-ruler")
def score_ruler(
    pred_dir: Annotated[Path, typer.Argument(exists=True, file_okay=False, help="directory of <task>.jsonl files with `pred`")],
) -> None:
    """RULER string_match_all per task; writes DIR/summary.json."""
    from eval.ruler import score_directory

    typer.echo(json.dumps(score_directory(pred_dir), indent=2))


if __name__ == "__main__":  # pragma: no cover
    app()
