"""Scores of chat answers against checkable references (the generated instruction set):
exact match of the answer's first non-empty line (models may run on after it), normalised as
LongBench/SQuAD do, and ROUGE-L F1 of the whole answer.

    from eval.chat_score import score_answers
    score_answers(["Section 2\\n..."], ["Section 2"])   # {"exact_match": 1.0, "rouge_l": ...}
"""

from __future__ import annotations

from collections.abc import Sequence

from eval.longbench import normalize_answer
from eval.metrics import rouge_l


def first_line(text: str) -> str:
    return next((line for line in text.split("\n") if line.strip()), "")


def exact_match(pred: str, ref: str) -> float:
    return float(normalize_answer(first_line(pred)) == normalize_answer(ref))


def score_answers(preds: Sequence[str], refs: Sequence[str]) -> dict[str, float]:
    if len(preds) != len(refs):
        raise ValueError(f"{len(preds)} answers for {len(refs)} references")
    n = max(len(refs), 1)
    return {"exact_match": sum(exact_match(p, r) for p, r in zip(preds, refs)) / n,
            "rouge_l": rouge_l(preds, refs), "n": len(refs)}
