"""LongBench v2: multiple-choice prompts, answer extraction and accuracy tables.

Follows THUDM/LongBench `pred.py` (templates, `$...$` substitution, answer regexes,
generation settings) and `result.py` (accuracy overall, by difficulty and by length,
x 100 rounded to 1 place). Templates are data: `eval/prompts/longbench_v2_templates.json`.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Iterable, Sequence

from eval.prompts import load as _load_prompts

TEMPLATES: tuple[str, ...] = (
    "0shot", "0shot_cot", "0shot_cot_ans", "0shot_no_context", "0shot_rag",
)  # fmt: skip
# Upstream generation settings: greedy-ish sampling, 128 new tokens (1024 for the CoT pass).
MAX_NEW_TOKENS = 128
MAX_NEW_TOKENS_COT = 1024
TEMPERATURE = 0.1
CHOICES = ("A", "B", "C", "D")

_ANSWER_PAREN = re.compile(r"The correct answer is \(([A-D])\)")
_ANSWER_BARE = re.compile(r"The correct answer is ([A-D])")


def template(name: str) -> str:
    return _load_prompts("longbench_v2_templates")[name]


def rag_context(retrieved: Sequence[dict], top_n: int) -> str:
    """Top-n retrieved chunks, put back in document order, numbered as upstream."""
    chunks = sorted(retrieved[:top_n], key=lambda x: x["c_idx"])
    return "\n\n".join(f"Retrieved chunk {i + 1}: {c['content']}" for i, c in enumerate(chunks))


def build_prompt(
    item: dict, kind: str = "0shot", context: str | None = None, cot: str | None = None
) -> str:
    """Fill a template from a LongBench v2 record (`question`, `choice_A`..`choice_D`, `context`).

    `kind` is one of TEMPLATES; `context` overrides the record's (e.g. `rag_context(...)`);
    `cot` is the first-pass reasoning, needed by `0shot_cot_ans`.
    """
    text = template(kind)
    ctx = item["context"] if context is None else context
    # Same replacement order as upstream, so a `$Q$` inside the document is replaced too.
    text = text.replace("$DOC$", ctx.strip()).replace("$Q$", item["question"].strip())
    for c in CHOICES:
        text = text.replace(f"$C_{c}$", item[f"choice_{c}"].strip())
    if kind == "0shot_cot_ans":
        if cot is None:
            raise ValueError("0shot_cot_ans needs the chain-of-thought response (`cot`)")
        text = text.replace("$COT$", cot)
    return text


def extract_answer(response: str) -> str | None:
    """The chosen letter, or None. Markdown stars are removed before matching."""
    response = response.replace("*", "")
    m = _ANSWER_PAREN.search(response) or _ANSWER_BARE.search(response)
    return m.group(1) if m else None


def judge(item: dict) -> bool:
    """Use the record's `judge` if present, else compare `pred` (or the extracted answer)."""
    if "judge" in item:
        return bool(item["judge"])
    pred = item["pred"] if "pred" in item else extract_answer(item.get("response", ""))
    return pred == item["answer"]


def summarize(records: Iterable[dict], compensated: bool = False) -> dict[str, float | None]:
    """Accuracy (%) overall, easy/hard and short/medium/long, rounded to 1 place.

    As upstream: anything not "easy" counts as hard, anything not short/medium as long;
    with `compensated`, an unanswered item (pred None) counts 0.25. Empty groups give None.
    """
    groups: dict[str, list[float]] = {k: [] for k in ("easy", "hard", "short", "medium", "long")}
    overall: list[float] = []
    for r in records:
        acc = float(judge(r))
        if compensated and r.get("pred", "") is None:
            acc = 0.25
        overall.append(acc)
        groups["easy" if r["difficulty"] == "easy" else "hard"].append(acc)
        length = r["length"] if r["length"] in ("short", "medium") else "long"
        groups[length].append(acc)

    def pct(xs: list[float]) -> float | None:
        return round(100 * sum(xs) / len(xs), 1) if xs else None

    return {"overall": pct(overall), **{k: pct(v) for k, v in groups.items()}}


def read_records(path: str | Path) -> list[dict]:
    """A results file as upstream writes it (JSONL), or a JSON list."""
    text = Path(path).read_text(encoding="utf-8")
    try:
        data = json.loads(text)
        if isinstance(data, list):
            return data
    except json.JSONDecodeError:
        pass
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def result_table(paths: Sequence[str | Path], compensated: bool = False) -> str:
    """Tab-separated table like upstream result.txt (Model, Overall, Easy, Hard, Short, ...)."""
    rows = ["Model\tOverall\tEasy\tHard\tShort\tMedium\tLong"]
    for p in paths:
        s = summarize(read_records(p), compensated)
        cols = [s[k] for k in ("overall", "easy", "hard", "short", "medium", "long")]
        rows.append("\t".join([Path(p).stem, *map(str, cols)]))
    return "\n".join(rows)
