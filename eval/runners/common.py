"""What every runner shares: task files, prompts, truncation budgets and resumable output.

A runner turns one task sample into one prediction string. Everything around that
(reading LongBench / RULER-style JSONL, filling the official prompt template, picking
max-new-tokens, skipping samples already predicted, writing the official prediction
line) lives here, so the text, codec-reader and VST runners differ only in `predict`.

Prediction files follow the official LongBench layout: `<out>/<dataset>.jsonl`, one
line per sample with `pred`, `answers`, `all_classes`, `length` and `_id`, which is
exactly what LongBench's `eval.py` (and our `eval/longbench.py`) reads.
"""

from __future__ import annotations

import abc
import hashlib
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

from data.errors import BadInput

# Datasets on which LongBench's pred.py does *not* wrap the prompt in a chat template
# (they are few-shot / completion tasks; chat formatting hurts them).
NO_CHAT_DATASETS = frozenset({"trec", "triviaqa", "samsum", "lsht", "lcc", "repobench-p"})

# Fallbacks for task files that no official template covers (e.g. a custom JSONL).
GENERIC_TEMPLATE = "{context}\n\nQuestion: {input}\nAnswer:"
DEFAULT_MAX_NEW_TOKENS = 128


# --------------------------------------------------------------------------- prompts


@dataclass(frozen=True)
class Prompt:
    """A filled prompt, split around the context so visual runners can render only it.

    `before + context + after` is byte-for-byte the official `template.format(**sample)`.
    """

    before: str
    context: str
    after: str

    @property
    def text(self) -> str:
        return self.before + self.context + self.after

    def with_context(self, context: str) -> "Prompt":
        return Prompt(self.before, context, self.after)


def _official_tables() -> tuple[dict[str, str], dict[str, int]]:
    """LongBench's dataset2prompt and dataset2maxlen (owned by `eval.longbench`)."""
    try:
        from eval import longbench

        return longbench.dataset2prompt(), longbench.dataset2maxlen()
    except (ImportError, AttributeError):  # the same tables, read straight from the data
        from eval import prompts

        return prompts.load("longbench_dataset2prompt"), prompts.load("longbench_dataset2maxlen")


def base_dataset(name: str) -> str:
    """`hotpotqa_e` (LongBench-E file stem) -> `hotpotqa`; other names stay as they are."""
    if name.endswith("_e") and name[:-2] in _official_tables()[0]:
        return name[:-2]
    return name


def prompt_template(dataset: str, sample: dict[str, Any]) -> str:
    """The template for a sample: a per-sample one wins (RULER-style records carry
    `prompt_template`), then the official LongBench one, then a generic one."""
    for key in ("prompt_template", "template"):
        if isinstance(sample.get(key), str):
            return sample[key]
    templates, _ = _official_tables()
    return templates.get(base_dataset(dataset), GENERIC_TEMPLATE)


def max_new_tokens_for(dataset: str, sample: dict[str, Any], default: int | None = None) -> int:
    for key in ("max_new_tokens", "tokens_to_generate"):  # RULER-style files may carry it
        if isinstance(sample.get(key), int):
            return int(sample[key])
    _, maxlen = _official_tables()
    return int(maxlen.get(base_dataset(dataset), default or DEFAULT_MAX_NEW_TOKENS))


def stop_strings(dataset: str) -> list[str]:
    # pred.py stops samsum at the first newline (the model otherwise repeats "\nDialogue").
    return ["\n"] if base_dataset(dataset) == "samsum" else []


def use_chat(dataset: str) -> bool:
    return base_dataset(dataset) not in NO_CHAT_DATASETS


def build_prompt(dataset: str, sample: dict[str, Any]) -> Prompt:
    """Fill the template; split it at `{context}` so the context can travel as pages.

    A RULER-style `answer_prefix` ends the prompt, as in RULER (added unless the
    record's template already ends with it).
    """
    template = prompt_template(dataset, sample)
    fields_ = _FormatDict(sample)
    prefix = str(sample.get("answer_prefix") or "")
    if "{context}" not in template:
        return Prompt(_with_prefix(template.format_map(fields_), prefix), "", "")
    head, tail = template.split("{context}", 1)
    after = _with_prefix(tail.format_map(fields_), prefix)
    return Prompt(head.format_map(fields_), str(sample.get("context", "")), after)


def _with_prefix(text: str, prefix: str) -> str:
    return text if not prefix or text.endswith(prefix) else text + prefix


class _FormatDict(dict):
    """str.format_map mapping that leaves unknown placeholders empty, not a KeyError."""

    def __missing__(self, key: str) -> str:
        return ""


def cut_at_stop(text: str, stops: Sequence[str]) -> str:
    for s in stops:
        i = text.find(s)
        if i >= 0:
            text = text[:i]
    return text


def middle_keep(n: int, budget: int) -> tuple[int, int]:
    """How many units to keep from the head and tail when cutting `n` to `budget`.

    Matches pred.py (`half = int(max_length / 2)`, keep `[:half] + [-half:]`).
    """
    if n <= budget:
        return n, 0
    half = budget // 2
    return half, half


# ----------------------------------------------------------------------- task files


def dataset_name(path: str | Path) -> str:
    """The dataset a task file holds: its stem (`hotpotqa.jsonl` -> `hotpotqa`)."""
    name = Path(path).name
    for suffix in (".jsonl", ".json"):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return Path(path).stem


def task_files(paths: Iterable[str | Path]) -> list[Path]:
    """Expand directories into their `*.jsonl` files, sorted; keep files as given."""
    out: list[Path] = []
    for p in map(Path, paths):
        out.extend(sorted(p.glob("*.jsonl")) if p.is_dir() else [p])
    return out


def read_samples(path: str | Path) -> Iterator[dict[str, Any]]:
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                yield json.loads(line)


def sample_id(sample: dict[str, Any]) -> str:
    """The sample's `_id`, or a content hash for files that have none (stable across runs)."""
    if sample.get("_id") not in (None, ""):
        return str(sample["_id"])
    key = json.dumps([sample.get("input"), sample.get("context"), sample.get("answers")],
                     ensure_ascii=False, sort_keys=True)
    return hashlib.sha1(key.encode("utf-8")).hexdigest()


def prediction_record(
    sample: dict[str, Any], pred: str, runner: str | None = None
) -> dict[str, Any]:
    """One official LongBench prediction line (plus `_id`, and the runner's label)."""
    rec = {
        "pred": pred,
        "answers": sample.get("answers", []),
        "all_classes": sample.get("all_classes"),
        "length": sample.get("length", 0),
        "_id": sample_id(sample),
    }
    if "metric" in sample:  # RULER-style files name their scorer; keep it for scoring
        rec["metric"] = sample["metric"]
    if runner is not None:
        rec["runner"] = runner  # extra key; LongBench's scorer ignores it
    return rec


class PredictionFile:
    """An append-only `<dataset>.jsonl` that knows which `_id`s it already holds.

    A crash mid-write can leave a partial last line; it is dropped on open so the
    sample is simply predicted again.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.done: set[str] = set()
        if self.path.exists():
            self._load()

    def _load(self) -> None:
        good: list[str] = []
        dirty = False
        with open(self.path, encoding="utf-8") as f:
            for line in f:
                try:
                    rec = json.loads(line)
                    self.done.add(str(rec["_id"]))
                    good.append(line if line.endswith("\n") else line + "\n")
                except (json.JSONDecodeError, KeyError, TypeError):
                    dirty = True
        if dirty:  # rewrite without the torn line(s)
            self.path.write_text("".join(good), encoding="utf-8")

    def __contains__(self, sid: str) -> bool:
        return sid in self.done

    def append(self, record: dict[str, Any]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record, ensure_ascii=False) + "\n")
            f.flush()
            os.fsync(f.fileno())
        self.done.add(str(record["_id"]))


# -------------------------------------------------------------------------- runners


class Runner(abc.ABC):
    """Turns a prompt into a prediction. Subclasses set `name` and implement `predict`."""

    name: str = "runner"

    @abc.abstractmethod
    def predict(self, prompt: Prompt, *, dataset: str, max_new_tokens: int) -> str:
        """Greedy answer for one sample (the runner truncates to its own budget)."""

    def describe(self) -> dict[str, Any]:
        """What produced the predictions; written to `run_info.json` beside them."""
        return {"runner": self.name}

    # lm-eval hooks; runners that cannot score text leave these unimplemented.
    def generate(self, context: str, *, max_new_tokens: int, stop: Sequence[str] = ()) -> str:
        """Free continuation of a raw prompt (lm-eval's generate_until)."""
        return cut_at_stop(
            self.predict(Prompt("", context, ""), dataset="", max_new_tokens=max_new_tokens), stop
        )

    def loglikelihood(self, context: str, continuation: str) -> tuple[float, bool]:
        raise NotImplementedError(f"{self.name} does not score continuations")

    def loglikelihood_rolling(self, text: str) -> float:
        raise NotImplementedError(f"{self.name} does not score whole texts")


@dataclass
class TaskResult:
    dataset: str
    path: Path
    predicted: int = 0
    skipped: int = 0
    seconds: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)


def run_task(
    runner: Runner,
    task_path: str | Path,
    out_dir: str | Path,
    *,
    limit: int | None = None,
    progress: bool = True,
) -> TaskResult:
    """Predict every sample of one task file into `<out_dir>/<dataset>.jsonl` (resumable)."""
    from tqdm.auto import tqdm

    task_path = Path(task_path)
    dataset = dataset_name(task_path)
    out = PredictionFile(Path(out_dir) / f"{base_dataset(dataset)}.jsonl")
    samples = list(read_samples(task_path))[:limit]
    result = TaskResult(dataset, out.path)
    t0 = time.perf_counter()
    bar = tqdm(samples, desc=f"{runner.name} {dataset}", unit="sample", disable=not progress)
    for sample in bar:
        sid = sample_id(sample)
        if sid in out:
            result.skipped += 1
            continue
        prompt = build_prompt(dataset, sample)
        n_new = max_new_tokens_for(dataset, sample)
        pred = runner.predict(prompt, dataset=dataset, max_new_tokens=n_new)
        rec = prediction_record(sample, pred, runner.name)
        stats = getattr(runner, "last_stats", None)
        if stats:  # positions read and seconds per sample, where the runner measures them
            rec["stats"] = dict(stats)
        out.append(rec)
        result.predicted += 1
    result.seconds = time.perf_counter() - t0
    return result


def run_tasks(
    runner: Runner,
    paths: Iterable[str | Path],
    out_dir: str | Path,
    *,
    limit: int | None = None,
    progress: bool = True,
) -> list[TaskResult]:
    """Run every task file (or directory of them) and record `run_info.json`."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    info_path = out_dir / "run_info.json"
    info = runner.describe()
    if info_path.exists():
        old = json.loads(info_path.read_text(encoding="utf-8"))
        if old.get("runner") != info.get("runner"):
            # Resuming into another runner's folder would mix two models' predictions.
            raise BadInput(
                f"{out_dir} holds predictions of {old.get('runner')!r}, "
                f"not {info.get('runner')!r}; use another --out"
            )
    info_path.write_text(json.dumps(info, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return [run_task(runner, p, out_dir, limit=limit, progress=progress) for p in task_files(paths)]
