"""Page-text metrics the codec layer needs itself (training reports greedy precision).

`eval.metrics` builds its fidelity metrics on these; they live here because the codec
sits below eval and must not import it.
"""

from __future__ import annotations

from rapidfuzz.distance import Levenshtein


def edit_distance(pred: str, ref: str) -> int:
    return Levenshtein.distance(pred, ref)


def precision(pred: str, ref: str) -> float:
    """Fox-style precision of one page: 1 - edit distance / len(ref), clipped at 0."""
    if not ref:
        return 1.0 if not pred else 0.0
    return max(0.0, 1.0 - edit_distance(pred, ref) / len(ref))
