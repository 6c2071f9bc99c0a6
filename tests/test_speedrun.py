"""The speedrun end to end at a 3-minute budget (slow: ~15 minutes on 2 cores, the text
frontier's six candidates and their selection scores included)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

SOURCES = Path("/usr/share/doc/linux-doc-6.1/Documentation")


@pytest.mark.slow
@pytest.mark.timeout(2400)
@pytest.mark.skipif(not SOURCES.exists(), reason="corpus sources not installed: apt-get install "
                    "-y python3.11-doc linux-doc-6.1 debian-reference-en perl-doc "
                    "postgresql-doc-15")
def test_speedrun_twin_writes_every_headline_number(tmp_path, monkeypatch):
    from jobs.speedrun import SpeedrunConfig, speedrun

    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    summary = speedrun(SpeedrunConfig(out=str(tmp_path / "sr"), minutes=3,
                                      corpus_max_chars_per_source=700_000, compare_windows=8,
                                      generations=2))
    required = ["bpb_pred", "bpb_true", "bpb_null", "bpb_pred_heldout_source",
                "bpb_null_heldout_source", "bpb_text_equal_flops", "bpb_text_equal_wallclock",
                "bpb_truncation", "vst_train_flops", "wall_clock_s", "corpus_chars", "commit",
                "gen_vocab_share_vst", "gen_vocab_share_text", "gen_judge_bpb_vst",
                "gen_judge_bpb_text", "gen_judge_bpb_true", "bpb_text_frontier_equal_flops",
                "bpb_text_page_cut", "context_gain_text", "text_frontier_bytes_depth",
                "text_frontier_cl100k_depth"]
    assert all(k in summary for k in required), [k for k in required if k not in summary]
    assert len(summary["text_frontier"]["bytes"]["candidates"]) == 3  # three depths
    assert summary["bpb_true"] < summary["bpb_null"]
    assert all(math.isfinite(summary[k]) for k in ("bpb_pred", "bpb_text_equal_flops"))
    saved = json.loads((tmp_path / "sr" / "summary.json").read_text())
    assert saved["bpb_pred"] == summary["bpb_pred"]
    assert (tmp_path / "sr" / "bpb_vs_flops.png").stat().st_size > 0
    # a re-run resumes: every stage is found done and nothing trains again
    again = speedrun(SpeedrunConfig(out=str(tmp_path / "sr"), minutes=3,
                                    corpus_max_chars_per_source=700_000, compare_windows=8,
                                    generations=2))
    assert again["vst_train_flops"] == summary["vst_train_flops"]


def test_headline_reads_the_frontier_winners_and_the_page_cut():
    from jobs.speedrun import headline

    names = {"text_bytes_wallclock": "text_bytes_wallclock",
             "text_bytes_flops": "text-bytes_d3_C1.00e+12_s0",
             "text_cl100k_flops": "text-cl100k_d2_C1.00e+12_s0"}
    docs = {"bpb_pred": 2.5, "bpb_true": 0.1, "bpb_null": 3.0, "positions": {},
            "kv_bytes_per_position": {},
            "bpb_text_bytes:text_bytes_wallclock": 2.4,
            "bpb_text_bytes:text_bytes_wallclock_page_cut": 2.6,
            "bpb_text_bytes:text-bytes_d3_C1.00e+12_s0": 2.2,
            "bpb_text_bytes:text-bytes_d3_C1.00e+12_s0_page_cut": 2.35,
            "bpb_text_bytes:text-bytes_d3_C1.00e+12_s0_truncated_128": 2.9,
            "bpb_text_cl100k:text-cl100k_d2_C1.00e+12_s0": 2.1,
            "bpb_text_cl100k:text-cl100k_d2_C1.00e+12_s0_page_cut": 2.3}
    frontiers = {f"text-{t}": {"statement": f"text-{t}: ...", "depths": [2, 3, 4],
                               "lrs": [0.003], "candidates": [
                                   {"name": "a", "bpb_select": 2.0, "reached_budget": True},
                                   {"name": "b", "bpb_select": 2.1, "reached_budget": False}],
                               "winner": {"name": names[f"text_{t}_flops"], "depth": d,
                                          "lr": 0.003, "bpb_select": 2.0}}
                 for t, d in (("bytes", 3), ("cl100k", 2))}
    results = {"vst": {"train_flops": 1e12, "train_seconds": 60},
               **{role: {"train_flops": 1e12, "train_seconds": 30} for role in names}}
    s = headline({"splits": {"heldout_docs": docs}}, results, names, frontiers,
                 {"totals": {"characters": 1}}, {"store": {}}, 1.0)
    assert s["bpb_text_equal_flops"] == 2.2 and s["bpb_text_cl100k_equal_flops"] == 2.1
    assert s["bpb_text_frontier_equal_flops"] == 2.1 and s["text_frontier_family"] == "cl100k"
    assert s["text_frontier_bytes_depth"] == 3 and s["text_frontier_cl100k_depth"] == 2
    assert s["bpb_text_page_cut"] == 2.35  # the frontier byte model's, not the wall-clock one's
    assert s["context_gain_text"] == pytest.approx(0.15)
    assert s["bpb_truncation"] == 2.9 and s["bpb_text_equal_wallclock"] == 2.4
    assert s["text_frontier"]["bytes"]["short_of_budget"] == ["b"]
