"""Fidelity metrics on known strings, and the round-trip report on a tiny random codec."""

from __future__ import annotations

import json

import pytest

from codec.text_metrics import precision
from eval.metrics import UnicodeTokenizer, rouge_l, text_metrics


def test_exact_match_is_perfect():
    refs = ["The quick brown fox.\n", "def f(x):\n    return x\n"]
    m = text_metrics(refs, refs)
    assert m["precision"] == 1.0 and m["cer"] == 0.0 and m["exact_match"] == 1.0
    assert m["rouge_l"] == pytest.approx(1.0) and m["chrf"] == pytest.approx(100.0)
    assert m["bleu"] == pytest.approx(100.0)


def test_empty_output_scores_zero():
    m = text_metrics(["", ""], ["hello world", "abc"])
    assert m["precision"] == 0.0 and m["cer"] == 1.0 and m["rouge_l"] == 0.0
    assert m["exact_match"] == 0.0


def test_precision_is_clipped_and_normalised_by_reference():
    assert precision("abcd", "abce") == pytest.approx(0.75)
    assert precision("x" * 100, "abc") == 0.0  # far longer garbage clips at 0
    assert precision("", "") == 1.0


def test_cjk_reference_gives_nonzero_rouge_l():
    assert UnicodeTokenizer().tokenize("光学压缩 text") == ["光", "学", "压", "缩", "text"]
    assert rouge_l(["我爱北京天安门"], ["我爱北京"]) > 0.5
    assert rouge_l(["完全不同"], ["我爱北京"]) == 0.0


def test_diff_marks_changes():
    from eval.fidelity import diff_html

    out = diff_html("hello world", "hallo world!")
    assert "<del>e</del>" in out and "<ins>a</ins>" in out and "<ins>!</ins>" in out


def test_run_fidelity_writes_report(tmp_path):
    from eval.fidelity import run_fidelity

    texts = ["A short page of text.\nWith two lines.\n", "Another document, " * 40]
    result = run_fidelity(texts, [{"name": "mini", "mode": "tiny", "random_init": True}],
                          tmp_path, max_pages=3, progress=False, source="test")
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    m = metrics["results"]["mini:tiny"]
    for key in ("precision", "cer", "bleu", "chrf", "rouge_l", "exact_match", "compression",
                "chars_per_visual_token", "encode_pages_per_s", "decode_pages_per_s",
                "blind_precision"):
        assert key in m
    assert m["visual_tokens_per_page"] == 16
    assert 0.0 <= m["precision"] <= 1.0
    assert metrics["anchors"] and result["report"].endswith("report.html")
    report = (tmp_path / "report.html").read_text()
    assert "<img src='data:image/png;base64," in report and "Precision vs compression" in report
