"""RULER-style tasks as instruction samples (a family per task), for SFT and held-out chat
evaluation. It lives in eval/ because data.corpus may not import eval (docs/CONTRACTS.md).

    from eval.ruler_instructions import ruler_instructions
    samples = ruler_instructions(["niah_single_1", "vt"], [2000, 4000], 8, haystack=texts)
    # Instruction(instruction=question, context=haystack with needles, response=answers)
"""

from __future__ import annotations

from collections.abc import Sequence

from data.corpus.instructions import Instruction
from eval import ruler


def ruler_instructions(tasks: Sequence[str], lengths: Sequence[int], per_length: int, *,
                       seed: int = 0, haystack: Sequence[str] | None = None
                       ) -> list[Instruction]:
    """`per_length` samples per (task, length in characters); the response joins every
    expected answer with ", " (RULER scores string_match_all: every answer must appear)."""
    out = []
    for task in tasks:
        for length in lengths:
            for rec in ruler.generate(task, length, per_length, unit="chars", seed=seed,
                                      haystack=haystack):
                out.append(Instruction(
                    f"{rec['_id']}-{length}", rec["input"], rec["context"],
                    ", ".join(str(a) for a in rec["answers"]), f"ruler:{task}",
                    {"context_chars": length, "answers": rec["answers"], "metric": rec["metric"]}))
    return out
