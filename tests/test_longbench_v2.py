"""LongBench v2: prompt filling, answer extraction, accuracy tables."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from eval import longbench_v2 as v2
from eval.eval_cli import app

ITEM = {
    "_id": "x1",
    "question": "  Which one?  ",
    "choice_A": " alpha ",
    "choice_B": "beta",
    "choice_C": "gamma",
    "choice_D": "delta",
    "context": "\n The document. \n",
    "answer": "B",
    "difficulty": "hard",
    "length": "short",
}


@pytest.mark.parametrize(
    "response, letter",
    [
        ("The correct answer is (B)", "B"),
        ("**The correct answer is (C)**", "C"),  # markdown stars are stripped first
        ("The correct answer is D.", "D"),  # bare letter, second regex
        ("The correct answer is (E)", None),  # only A-D
        ("the correct answer is (A)", None),  # case-sensitive, as upstream
        ("The correct answer is A, no wait: The correct answer is (B)", "B"),  # parenthesised wins
        ("", None),
    ],
)
def test_extract_answer(response, letter):
    assert v2.extract_answer(response) == letter


def test_build_prompt_fills_and_strips():
    p = v2.build_prompt(ITEM)
    for token in ("$DOC$", "$Q$", "$C_A$", "$C_D$"):
        assert token not in p
    assert "<text>\nThe document.\n</text>" in p
    assert "question: Which one?\n" in p and "(A) alpha\n" in p and "(D) delta" in p
    assert p.endswith('"The correct answer is (insert answer here)".')
    with pytest.raises(ValueError):
        v2.build_prompt(ITEM, "0shot_cot_ans")
    cot = v2.build_prompt(ITEM, "0shot_cot_ans", cot="step one")
    assert "Let’s think step by step: step one" in cot and "The document" not in cot
    assert "$DOC$" not in v2.build_prompt(ITEM, "0shot_no_context")


def test_rag_context_orders_by_chunk_index():
    chunks = [
        {"c_idx": 5, "content": "five"},
        {"c_idx": 1, "content": "one"},
        {"c_idx": 0, "content": "zero"},
    ]
    assert v2.rag_context(chunks, 2) == "Retrieved chunk 1: one\n\nRetrieved chunk 2: five"


def _records():
    # (difficulty, length, pred, answer)
    rows = [
        ("easy", "short", "A", "A"),
        ("easy", "medium", "B", "A"),
        ("hard", "long", "C", "C"),
        ("hard", "short", None, "D"),
        ("hard", "medium", "D", "D"),
    ]
    return [
        {"difficulty": d, "length": n, "pred": p, "answer": a, "judge": p == a}
        for d, n, p, a in rows
    ]


def test_summarize_by_difficulty_and_length():
    recs = _records()
    s = v2.summarize(recs)
    # correct: rows 0, 2, 4
    assert s == {
        "overall": round(100 * 3 / 5, 1),
        "easy": round(100 * 1 / 2, 1),
        "hard": round(100 * 2 / 3, 1),
        "short": round(100 * 1 / 2, 1),
        "medium": round(100 * 1 / 2, 1),
        "long": 100.0,
    }
    comp = v2.summarize(recs, compensated=True)  # the unanswered item counts 0.25
    assert comp["overall"] == round(100 * 3.25 / 5, 1)
    assert comp["short"] == round(100 * 1.25 / 2, 1)


def test_judge_without_judge_field_uses_response():
    rec = {"response": "The correct answer is (C)", "answer": "C"}
    assert v2.judge(rec) is True
    assert v2.judge({"pred": "A", "answer": "C"}) is False


def test_cli_table(tmp_path):
    path = tmp_path / "model-x.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in _records()))
    res = CliRunner().invoke(app, ["score-longbench-v2", str(path)])
    assert res.exit_code == 0, res.output
    header, row = res.output.strip().splitlines()
    assert header.split("\t")[:3] == ["Model", "Overall", "Easy"]
    assert row.split("\t") == ["model-x", "60.0", "50.0", "66.7", "50.0", "50.0", "100.0"]
