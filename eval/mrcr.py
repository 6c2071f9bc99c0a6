"""OpenAI MRCR (multi-round co-reference resolution): grading and summaries.

Each MRCR record (HF `openai/mrcr`) holds `prompt` (a JSON list of chat messages),
`answer`, `random_string_to_prepend`, `n_needles`, `desired_msg_index`,
`total_messages` and `n_chars`. The model must start its reply with the random
string; the dataset card's grader gives 0 when it does not, and otherwise the
`difflib.SequenceMatcher` ratio between reply and answer with that prefix removed.
"""

from __future__ import annotations

import json
from difflib import SequenceMatcher
from statistics import fmean
from typing import Callable, Iterable

from data.errors import BadInput


def grade(response: str, answer: str, random_string_to_prepend: str) -> float:
    """MRCR score in [0, 1]: prefix check, then SequenceMatcher ratio of the rest."""
    if not response.startswith(random_string_to_prepend):
        return 0.0
    response = response.removeprefix(random_string_to_prepend)
    answer = answer.removeprefix(random_string_to_prepend)
    return float(SequenceMatcher(None, response, answer).ratio())


def messages(record: dict) -> list[dict]:
    """The conversation as a list of {role, content}; `prompt` is stored JSON-encoded."""
    prompt = record["prompt"]
    return json.loads(prompt) if isinstance(prompt, str) else list(prompt)


def length_bin(n: int) -> str:
    """Power-of-two bin `(lo, hi]` that holds a context length, as MRCR plots bin by tokens."""
    hi = 1
    while hi < n:
        hi *= 2
    return f"({hi // 2}, {hi}]"


def summarize(
    records: Iterable[dict],
    responses: Iterable[str] | None = None,
    count_fn: Callable[[str], int] | None = None,
) -> dict:
    """Mean score overall, by `n_needles`, and by context-length bin.

    `responses` default to each record's `response` field. Length bins count
    `count_fn(prompt text + answer)` (e.g. text or visual tokens); without `count_fn`
    they use the record's `n_chars`.
    """
    records = list(records)
    resp = list(responses) if responses is not None else [r["response"] for r in records]
    if len(resp) != len(records):
        raise BadInput("one response per record is needed")
    by_needles: dict[str, list[float]] = {}
    by_length: dict[str, list[float]] = {}
    scores: list[float] = []
    for rec, r in zip(records, resp):
        s = grade(r, rec["answer"], rec["random_string_to_prepend"])
        scores.append(s)
        by_needles.setdefault(str(rec.get("n_needles", "?")), []).append(s)
        if count_fn is not None:
            text = "".join(m["content"] for m in messages(rec)) + rec["answer"]
            n = count_fn(text)
        else:
            n = int(rec.get("n_chars", 0))
        by_length.setdefault(length_bin(n), []).append(s)

    def mean(d: dict[str, list[float]]) -> dict[str, float]:
        return {k: fmean(v) for k, v in sorted(d.items(), key=lambda kv: _bin_key(kv[0]))}

    return {
        "score": fmean(scores) if scores else float("nan"),
        "n": len(scores),
        "by_needles": mean(by_needles),
        "by_length": mean(by_length),
    }


def _bin_key(k: str) -> tuple[int, str]:
    digits = "".join(ch if ch.isdigit() else " " for ch in k).split()
    return (int(digits[-1]) if digits else 0, k)
