"""The scaling sweep: the trainer's data totals, the step-FLOPs bound, a 2x2 debug grid on a
local Ray that resumes an interrupted trial, the scaling fits and the report.

The FLOPs counter on a known shape with the decoder-CE share is tests/test_flops.py
(test_train_step_share, test_trunk_6n_plus_attention_by_hand); that the trainer's budget
counts it is tests/test_budgets.py (test_a_flops_budget_stops_the_run_counts_the_decoder...).
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import replace

import numpy as np
import pytest

from eval.scaling import analyse, fit_compute, fit_size_data, power_law, predict_compute
from eval.scaling_report import write_report
from jobs.sweep import SweepConfig, plan, run_sweep, step_flops_bound, train_config
from vst.train import TrainConfig, train


def quick(out, **kw) -> TrainConfig:
    base = dict(out=str(out), steps=6, batch_size=4, synthetic_docs=24, eval_every=0,
                eval_batches=1, save_every=0, tensorboard=False, progress=False, warmup=2,
                flavour="debug")
    return TrainConfig(**{**base, **kw})


# -- the trainer's totals ------------------------------------------------------------------
def test_result_counts_params_positions_tokens_and_bytes_across_a_resume(tmp_path):
    full = train(quick(tmp_path / "full", save_every=2))
    cut = train(quick(tmp_path / "cut", save_every=2, halt_at=5))  # last checkpoint: step 4
    assert "halted_at" in cut and not (tmp_path / "cut" / "result.json").exists()
    resumed = train(quick(tmp_path / "cut", save_every=2, resume=True))
    assert resumed["history"][0]["step"] == 5  # it did resume
    for key in ("positions_seen", "tokens_seen", "bytes_seen"):
        assert resumed[key] == full[key] > 0, key  # totals survive the resume
    T = 4 * quick(tmp_path).load_codec().n  # 4 pages of the toy codec's tokens
    assert full["positions_seen"] == 6 * 4 * T
    assert 0 < full["tokens_seen"] <= full["positions_seen"]
    assert 0 < full["non_embedding_params"] < full["params"]
    saved = json.loads((tmp_path / "cut" / "result.json").read_text())
    assert saved["bytes_seen"] == full["bytes_seen"]
    # a byte-level text model reads one byte per real token
    text = train(quick(tmp_path / "text", modality="text", tokenizer="bytes", steps=2))
    assert text["bytes_seen"] == text["tokens_seen"] > 0


def test_step_flops_bound_is_an_upper_bound_of_what_the_trainer_counts(tmp_path):
    cfg = SweepConfig(out=str(tmp_path), flavour="debug", depth=[1], budget=[1e9],
                      train_option=["synthetic_docs=24"])
    for trial in plan(cfg):
        tc = replace(train_config(cfg, trial), max_flops=None, steps=2, out=str(
            tmp_path / trial.name), eval_batches=1)
        res = train(tc)
        per_step = res["train_flops"] / res["steps"]
        assert per_step <= step_flops_bound(tc) * 1.0001, trial.name
        assert per_step >= 0.05 * step_flops_bound(tc), trial.name  # a bound, not a guess


# -- the sweep on Ray -----------------------------------------------------------------------
def _runs(trial_dir):
    path = trial_dir / "sweep_runs.jsonl"
    return [json.loads(x) for x in path.read_text().splitlines()] if path.exists() else []


def test_sweep_runs_a_grid_on_ray_resumes_a_killed_trial_and_skips_finished_ones(
        tmp_path, local_ray):
    cfg = SweepConfig(out=str(tmp_path / "sweep"), flavour="debug", depth=[1, 2],
                      budget=[6e8, 1.2e9], train_option=["synthetic_docs=24"],
                      eval_windows=8, bootstrap=20, noise_seeds=2, noise_family="vst",
                      noise_depth=1)
    trials = plan(cfg)
    assert len(trials) == 2 * 2 * 2 + 1  # families x depths x budgets + one extra seed
    assert [(t.recipe, t.depth, t.budget, t.seed) for t in trials if t.role == "noise"] == [
        ("learn", 1, 1.2e9, 1)]  # the chosen depth at the largest budget
    with pytest.raises(ValueError):
        replace(cfg, noise_family="text-cl100k")
    # a trial interrupted mid-run: it checkpointed, then died without a result
    killed = next(t for t in trials if t.family == "vst" and t.depth == 1
                  and t.budget == 1.2e9 and t.role == "grid")
    tc = train_config(cfg, killed)
    assert tc.save_every >= 1 and tc.resume and tc.max_flops == killed.budget
    halted = train(replace(tc, halt_at=tc.save_every + 1))
    assert halted["halted_at"] == tc.save_every + 1
    trial_dir = tmp_path / "sweep" / "trials" / killed.name
    assert not (trial_dir / "result.json").exists()

    summary = run_sweep(cfg, log=lambda m: None)
    assert summary["done"] == len(trials) and summary["failed"] == 0, summary
    assert [r["started_at_step"] for r in _runs(trial_dir)] == [tc.save_every]  # resumed
    other = tmp_path / "sweep" / "trials" / trials[0].name
    assert [r["started_at_step"] for r in _runs(other)] == [0]

    with open(tmp_path / "sweep" / "results.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == len(trials) and all(r["status"] == "done" for r in rows)
    for r in rows:
        assert float(r["train_flops"]) >= float(r["budget"])  # the budget was spent
        assert float(r["positions_seen"]) > 0 and float(r["bytes_seen"]) > 0
        assert 0 < int(r["non_embedding_params"]) < int(r["params"])
        assert math.isfinite(float(r["bpb"])) and float(r["wall_clock_s"]) > 0
        if r["family"] == "vst":
            assert r["bpb"] == r["bpb_pred"] and r["bpb_true"] and r["bpb_null"]
            assert float(r["decoder_flops_per_page"]) > 0
        else:
            assert r["bpb"] == r["bpb_text"] and not r["bpb_pred"]
    assert {r["seed"] for r in rows if r["role"] == "noise"} == {"1"}
    assert (tmp_path / "sweep" / "report.html").exists()
    fits = json.loads((tmp_path / "sweep" / "fits.json").read_text())
    assert set(fits["families"]) == {"vst", "text-bytes"}
    assert fits["families"]["vst"]["seed_noise"] is not None

    before = {t.name: (tmp_path / "sweep" / "trials" / t.name / "result.json").stat().st_mtime
              for t in trials}
    again = run_sweep(cfg, log=lambda m: None)
    assert again["skipped"] == len(trials) and again["done"] == 0
    assert before == {t.name: (tmp_path / "sweep" / "trials" / t.name /
                               "result.json").stat().st_mtime for t in trials}
    assert len(_runs(trial_dir)) == 1  # not run again
    # --report-only rebuilds from the trials the sweep recorded, whatever the grid flags say
    report = run_sweep(replace(cfg, report_only=True, depth=[1], bootstrap=5), log=lambda m: None)
    assert report["finished"] == len(trials) and report["done"] == report["skipped"] == 0


# -- fits -------------------------------------------------------------------------------------
TRUE = dict(E=1.5, A=10 ** 3.6, alpha=0.3)


def _rows(family, params, budgets, depths=(1,), noise=0.004, seed=0):
    rng = np.random.default_rng(seed)
    rows = []
    for b in budgets:
        for d in depths:
            bpb = power_law(b, **params) * (1 + (d - 1) * 0.01) * math.exp(rng.normal(0, noise))
            n = 1e5 * d ** 3  # non-embedding params; positions seen follow from C = 6 N D
            rows.append(dict(family=family, depth=d, budget=b, train_flops=b * 1.01, bpb=bpb,
                             seed=0, role="grid", name=f"{family}_{d}_{b:g}",
                             non_embedding_params=n, positions_seen=b / (6 * n)))
    return rows


def test_the_fit_recovers_known_parameters_and_the_bootstrap_covers_them():
    C = np.geomspace(1e12, 1e16, 9)
    rng = np.random.default_rng(1)
    L = power_law(C, **TRUE) * np.exp(rng.normal(0, 0.003, C.size))
    fit = fit_compute(C, L)
    assert fit["form"] == "E + A * C^-alpha"
    assert fit["E"] == pytest.approx(TRUE["E"], abs=0.05)
    assert fit["alpha"] == pytest.approx(TRUE["alpha"], abs=0.03)
    assert fit["log10_A"] == pytest.approx(3.6, abs=0.4)
    assert float(predict_compute(fit, 3e14)) == pytest.approx(power_law(3e14, **TRUE), rel=0.01)
    # a wrong model must not fit: a curve with another exponent is far off
    assert abs(fit["alpha"] - 0.5) > 0.1
    rows = _rows("vst", TRUE, C, noise=0.003)
    res = analyse(rows, points="all", n_boot=100)["families"]["vst"]
    band = res["bootstrap"]
    assert band["resamples"] >= 90
    assert band["E"][0] <= TRUE["E"] <= band["E"][1]
    assert band["alpha"][0] <= TRUE["alpha"] <= band["alpha"][1]
    assert band["E"][1] - band["E"][0] < 0.5  # and the interval is informative
    # two budgets cannot pin E: a pure power law, said so
    two = fit_compute([1e12, 1e13], [3.0, 2.5])
    assert two["E"] == 0 and "E fixed" in two["form"]
    assert fit_compute([1e12, 1e12], [3.0, 2.9]) is None


def test_hold_out_predicts_the_largest_budget_and_judges_it_by_seed_noise():
    budgets = np.geomspace(1e12, 1e15, 5)
    rows = _rows("vst", TRUE, budgets, depths=(1, 2, 3), noise=0.002)
    # two extra seeds of one configuration at the largest budget
    top = [r for r in rows if r["budget"] == budgets[-1] and r["depth"] == 2][0]
    rows += [dict(top, seed=s, role="noise", bpb=top["bpb"] + 0.01 * s) for s in (1, 2)]
    fam = analyse(rows, points="frontier", n_boot=30)["families"]["vst"]
    assert fam["seed_noise"] == pytest.approx(np.std([top["bpb"] + 0.01 * s for s in
                                                      (0, 1, 2)], ddof=1), rel=1e-6)
    ho = fam["holdout"]
    assert ho["budget"] == budgets[-1] and ho["fit"]["points"] == 4
    (pred,) = ho["predictions"]
    assert pred["depth"] == 1  # the frontier's best size at that budget
    assert pred["predicted"] == pytest.approx(pred["measured"], rel=0.02)
    assert pred["within_noise"] is True
    assert [o["depth"] for o in fam["optimal_depth"]] == [1] * 5
    # the Chinchilla form is fitted (3 sizes x 5 budgets) and stays near the data
    assert fam["size_data_fit"] is None or fam["size_data_fit"]["rmse"] < 0.2


def test_size_data_fit_recovers_a_chinchilla_surface():
    N, D = np.meshgrid(np.geomspace(1e5, 1e7, 4), np.geomspace(1e7, 1e9, 4))
    N, D = N.ravel(), D.ravel()
    L = 1.2 + 300 * N ** -0.35 + 900 * D ** -0.3
    fit = fit_size_data(N, D, L)
    assert fit["E"] == pytest.approx(1.2, abs=0.1)
    assert fit["a"] == pytest.approx(0.35, abs=0.05) and fit["b"] == pytest.approx(0.3, abs=0.05)


# -- the report ---------------------------------------------------------------------------------
def test_the_report_renders_both_families_and_states_the_crossover(tmp_path):
    budgets = np.geomspace(1e12, 1e15, 4)
    text = dict(E=1.9, A=10 ** 3.6, alpha=0.3)  # same slope, higher floor: never crosses
    rows = _rows("vst", TRUE, budgets, depths=(1, 2)) + _rows("text-bytes", text, budgets,
                                                              depths=(1, 2))
    analysis = analyse(rows, n_boot=20)
    (cross,) = analysis["crossovers"]
    assert cross["cross"] is None and "do not cross" in cross["statement"]
    assert "vst is lower throughout" in cross["statement"]
    path = write_report(rows, analysis, tmp_path / "r", {"vst": 400.0, "text-bytes": 5000.0})
    page = path.read_text()
    for name in ("report.html", "bpb_vs_flops.png", "optimal_depth.png", "bpb_vs_positions.png"):
        assert (tmp_path / "r" / name).stat().st_size > 1000, name
    assert "vst" in page and "text-bytes" in page and cross["statement"] in page
    # a steeper text curve from a higher start does cross, where the curves are equal
    steep = dict(E=1.0, A=10 ** 5.0, alpha=0.4)
    rows2 = _rows("vst", TRUE, budgets) + _rows("text-bytes", steep, budgets)
    (c2,) = analyse(rows2, points="all", n_boot=10)["crossovers"]
    assert c2["cross"] is not None and "cross at" in c2["statement"]
    fits = analyse(rows2, points="all", n_boot=0)["families"]
    at = c2["cross"]["C"]
    assert float(predict_compute(fits["vst"]["fit"], at)) == pytest.approx(
        float(predict_compute(fits["text-bytes"]["fit"], at)), rel=1e-4)


def test_the_report_credits_each_vst_against_its_reader_only_control(tmp_path):
    from eval.scaling_report import reader_controls

    budgets = [1e12, 4e12]
    vst = _rows("vst", TRUE, budgets, depths=(1, 2))
    for r in vst:
        r["bpb_null"] = 3.5  # the frozen reader's prior
    hier = _rows("vst-hier", TRUE, budgets, depths=(1, 2), seed=1)
    control = [dict(r, bpb=r["bpb"] + 0.25) for r in _rows("reader-control", TRUE, budgets,
                                                               seed=1)]
    got = {(c["family"], c["budget"]): c for c in reader_controls(vst + hier + control)}
    assert set(got) == {(f, b) for f in ("vst", "vst-hier") for b in budgets}
    for b in budgets:
        best = min(float(r["bpb"]) for r in vst if r["budget"] == b)
        assert got[("vst", b)]["context_gain"] == pytest.approx(3.5 - best)
        assert got[("vst", b)]["control"] == "frozen reader's prior"
        best_h = min(float(r["bpb"]) for r in hier if r["budget"] == b)
        ctl = next(float(r["bpb"]) for r in control if r["budget"] == b)
        assert got[("vst-hier", b)]["context_gain"] == pytest.approx(ctl - best_h)
    page = write_report(vst + hier + control, analyse(vst + hier + control, n_boot=0),
                        tmp_path / "r").read_text()
    assert "What the VST adds over its reader alone" in page and "reader-control" in page


def test_the_plan_trains_the_reader_control_at_one_depth_only():
    cfg = SweepConfig(data="synthetic", family=["hier", "hier-control"], depth=[3, 1, 2],
                      budget=[1e9, 2e9])
    trials = plan(cfg)
    ctl = [t for t in trials if t.recipe == "hier-control"]
    assert {t.depth for t in ctl} == {1} and len(ctl) == 2
    assert len([t for t in trials if t.recipe == "hier"]) == 6
