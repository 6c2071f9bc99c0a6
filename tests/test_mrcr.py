"""OpenAI MRCR grading: the prefix check, then difflib's ratio of the rest."""

from __future__ import annotations

import json

import pytest

from eval import mrcr


def test_missing_prefix_scores_zero():
    assert mrcr.grade("hello world", "aB3xhello world", "aB3x") == 0.0
    assert mrcr.grade(" aB3xhello", "aB3xhello", "aB3x") == 0.0  # must start with it


def test_exact_answer_scores_one():
    assert mrcr.grade("aB3xhello world", "aB3xhello world", "aB3x") == 1.0


def test_ratio_of_the_rest():
    # after removing the prefix: "helo" vs "hello": matching blocks "hel" + "o" = 4 chars
    expected = 2 * 4 / (4 + 5)
    assert mrcr.grade("aB3xhelo", "aB3xhello", "aB3x") == pytest.approx(expected)
    # the prefix itself earns nothing: "aB3x" + "" vs "aB3x" + "hello" -> 0
    assert mrcr.grade("aB3x", "aB3xhello", "aB3x") == 0.0


def test_summarize_groups():
    def rec(answer: str, n_needles: int, n_chars: int) -> dict:
        prompt = json.dumps([{"role": "user", "content": "hi"}])
        return {
            "prompt": prompt,
            "answer": answer,
            "random_string_to_prepend": "P",
            "n_needles": n_needles,
            "n_chars": n_chars,
        }

    recs = [rec("Pxyz", 2, 3000), rec("Pabc", 4, 5000)]
    s = mrcr.summarize(recs, ["Pxyz", "abc"])
    assert s["score"] == 0.5 and s["n"] == 2
    assert s["by_needles"] == {"2": 1.0, "4": 0.0}
    assert s["by_length"] == {"(2048, 4096]": 1.0, "(4096, 8192]": 0.0}
    s2 = mrcr.summarize(recs, ["Pxyz", "Pabc"], count_fn=len)
    assert s2["by_length"] == {"(4, 8]": 1.0}  # "hi" + answer = 6 chars each
    assert mrcr.messages(recs[0]) == [{"role": "user", "content": "hi"}]
    with pytest.raises(ValueError):
        mrcr.summarize(recs, ["only one"])
