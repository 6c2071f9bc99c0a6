"""The speedrun end to end at a 3-minute budget (slow: ~10 minutes on 2 cores)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

SOURCES = Path("/usr/share/doc/linux-doc-6.1/Documentation")


@pytest.mark.slow
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
                "gen_judge_bpb_text", "gen_judge_bpb_true"]
    assert all(k in summary for k in required)
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
