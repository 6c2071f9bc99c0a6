"""The long-context study (jobs/long_context.py) end to end at toy size, its resumption,
the CLI evaluation path on its checkpoints, and the report's target rows."""

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from eval.long_context_report import targets, task_means


@pytest.fixture(scope="module")
def study(tmp_path_factory, local_ray):
    from jobs.long_context import StudyConfig, run_study

    out = tmp_path_factory.mktemp("lc")
    cfg = StudyConfig(out=str(out), lengths=[1200], tasks=["niah_single_1"],
                      heldout_tasks=["niah_multiquery"], train_per_length=3, eval_per_length=1,
                      natural_ratio=0.25, budgets=[3e9], text_depths=[1], short_chars=1200,
                      threads=1)
    return out, cfg, run_study(cfg)


def test_every_family_is_trained_at_the_budget_and_scored_per_task_and_length(study):
    out, cfg, summary = study
    fams = ("vst", "text_cl100k", "text_bytes", "truncation", "text_cl100k_short", "vst_hier")
    assert set(summary["scores"]) == set(fams)
    for fam in fams:
        assert set(summary["scores"][fam]) == {"niah_single_1", "niah_multiquery"}
        assert 0 <= summary["scores"][fam]["niah_single_1"]["1200"] <= 100
    for fam in ("vst", "text_cl100k", "text_bytes", "text_cl100k_short"):  # equal FLOPs: the
        # budget, at most one step over
        assert 3e9 <= summary["train_flops"][fam] < 3e9 * 3
    pos = summary["positions"]
    assert pos["vst"]["1200"] < pos["text_cl100k"]["1200"] < pos["text_bytes"]["1200"]
    # truncation reads as many positions as the VST did (its instruction and latest context)
    assert pos["truncation"]["1200"] <= pos["vst"]["1200"] + 1
    assert summary["budget"] == 3e9 and len(summary["commit"]) >= 7
    # the hierarchical-reader VST: trained at the budget, its reader in its checkpoint
    assert 3e9 <= summary["train_flops"]["vst_hier"]
    hier = json.loads((out / "vst_hier" / "b0" / "result.json").read_text())
    import torch
    from safetensors.torch import load_file

    from codec import load_codec

    trained = load_file(Path(hier["checkpoint"]) / "reader.safetensors")
    start = load_codec("mini", mode="small").trainable_reader().reader_state()
    assert set(trained) == set(start)
    assert any(not torch.equal(trained[k], start[k].cpu()) for k in start)  # it trained
    assert (out / "report.md").read_text().count("| vst |") >= 2
    assert list(out.glob("score_vs_length_*.png"))
    saved = json.loads((out / "summary.json").read_text())
    assert saved["scores"]["vst"]["niah_single_1"]["1200"] == \
        summary["scores"]["vst"]["niah_single_1"]["1200"]


def test_a_rerun_resumes_without_training_again(study):
    from jobs.long_context import run_study

    out, cfg, summary = study
    stamp = (out / "vst" / "b0" / "result.json").stat().st_mtime
    again = run_study(cfg)
    assert (out / "vst" / "b0" / "result.json").stat().st_mtime == stamp
    assert again["scores"] == summary["scores"]


def test_vst_eval_run_and_score_ruler_answer_with_the_study_checkpoints(study, tmp_path):
    from jobs.cli import app

    out, _, _ = study
    ckpt = json.loads((out / "vst" / "b0" / "result.json").read_text())["checkpoint"]
    text = json.loads((out / "text_cl100k" / "b0" / "d1" / "result.json").read_text())
    files = str(out / "curriculum" / "eval" / "niah_single_1_1200.jsonl")
    cli = CliRunner()
    for runner, model, extra in (("vst", ckpt, []),
                                 ("vst-text", text["checkpoint"], ["--context-tokens", "20"])):
        pred = tmp_path / runner
        res = cli.invoke(app, ["eval", "run", files, "--runner", runner, "--model", model,
                               "--out", str(pred), *extra])
        assert res.exit_code == 0, res.output
        rec = json.loads((pred / "niah_single_1_1200.jsonl").read_text().splitlines()[0])
        assert rec["stats"]["positions"] > 0
        if runner == "vst-text":  # the instruction plus the context's last 20 tokens
            assert rec["stats"]["positions"] < 80
        res = cli.invoke(app, ["eval", "score-ruler", str(pred)])
        assert res.exit_code == 0, res.output
        assert "niah_single_1_1200" in json.loads((pred / "summary.json").read_text())


def test_target_rows_follow_the_numbers():
    def summary(vst64, text64, trunc):
        sc = {"vst": {"niah_single_1": {"4000": 95.0, "64000": vst64},
                      "niah_multiquery": {"64000": 10.0}},
              "text_cl100k": {"niah_single_1": {"4000": 92.0, "64000": text64}},
              "truncation": {"niah_single_1": {"4000": 90.0, "64000": trunc}}}
        pos = {"vst": {"64000": 1800}, "text_cl100k": {"64000": 15000},
               "truncation": {"64000": 1800}}
        return {"scores": sc, "positions": pos, "heldout_tasks": ["niah_multiquery"]}

    rows = {r[0]: r for r in targets(summary(80.0, 40.0, 10.0))}
    assert rows["every family >= 90% single NIAH at 4K characters"][2] == "yes"
    assert rows["VST >= best text at 64K, >= 7x fewer positions than cl100k"][2] == "yes"
    assert rows["never-trained family > 0 for the VST"][2] == "yes"
    rows = {r[0]: r for r in targets(summary(30.0, 40.0, 10.0))}
    assert rows["VST >= best text at 64K, >= 7x fewer positions than cl100k"][2] == "no"
    assert task_means({"a": {"1": 10.0}, "b": {"1": 30.0}}, ["a", "b"]) == {"1": 20.0}
