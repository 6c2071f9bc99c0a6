"""The main job (`vst demo`): the README's command, end to end, on tiny settings."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import typer

from jobs.demo import DemoSettings, Section, stages_to_run, write_report


def _run_demo(out: Path, *args: str) -> dict:
    cmd = [sys.executable, "-m", "jobs.cli", "demo", "--out", str(out), *args]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "RAY_AUTH_MODE": "disabled"}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=1500)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return json.loads((out / "summary.json").read_text())


def test_report_lists_every_stage_with_its_numbers(tmp_path):
    settings = DemoSettings(out=tmp_path)
    sections = [Section("Render", {"pages_per_s": 123.4, "pages": 7}, "<p>r</p>"),
                Section("Fidelity", {"mini:base precision": 0.91}, "<p>f</p>")]
    report = write_report(settings, sections, total=1.5).read_text()
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["stages"]["Render"]["pages_per_s"] == 123.4
    assert summary["stages"]["Fidelity"]["mini:base precision"] == 0.91
    assert "<h2>Render" in report and "<h2>Fidelity" in report and "123.4" in report


def test_only_pulls_in_what_a_stage_needs_and_rejects_unknown_names():
    assert stages_to_run(["evaluate"]) == ["corpus", "evaluate"]
    assert stages_to_run(["chat"]) == ["corpus", "convert", "train", "chat"]
    assert stages_to_run(["fidelity"]) == ["fidelity"]
    assert len(stages_to_run(None)) == 7
    assert stages_to_run(["chat"]) == ["corpus", "convert", "train", "chat"]
    with pytest.raises(typer.BadParameter, match="bogus"):
        stages_to_run(["bogus"])


def test_demo_help_names_the_codec_flags():
    proc = subprocess.run([sys.executable, "-m", "jobs.cli", "demo", "--help"],
                          capture_output=True, text=True, timeout=120,
                          env={**os.environ, "COLUMNS": "200", "TERM": "dumb"})
    assert proc.returncode == 0
    for flag in ("--codec", "--codec-path", "--trust-remote-code", "--only"):
        assert flag in proc.stdout


@pytest.mark.slow
def test_main_job_end_to_end_on_a_tiny_corpus(tmp_path):
    summary = _run_demo(tmp_path / "demo", "--n-docs", "4", "--train-steps", "4",
                        "--fidelity-pages", "4", "--eval-samples", "1", "--sft-steps", "2",
                        "--chat-samples", "1")
    stages = summary["stages"]
    assert len(stages) == 7, list(stages)
    render = next(v for k, v in stages.items() if k.startswith("Render"))
    convert = next(v for k, v in stages.items() if k.startswith("Convert"))
    train = next(v for k, v in stages.items() if k.startswith("Train"))
    assert render["pages"] > 0 and render["pages_per_s"] > 0
    assert convert["pages"] == render["pages"] and convert["skips"] == 0
    assert train["bpb_given_true_tokens"] < train["bpb_given_null_tokens"]
    assert (tmp_path / "demo" / "report.html").stat().st_size > 1000
    assert (tmp_path / "demo" / "fidelity" / "report.html").exists()
    assert (tmp_path / "demo" / "store" / "manifest.json").exists()


@pytest.mark.slow
def test_main_job_runs_on_a_deepseek_ocr2_checkpoint_directory(tmp_path):
    tiny = pytest.importorskip("tests.tiny_deepseek")
    ckpt = tiny.save_tiny_checkpoint(tmp_path / "ckpt")
    summary = _run_demo(tmp_path / "demo", "--codec", "deepseek-ocr2", "--codec-path", str(ckpt),
                        "--n-docs", "2", "--fidelity-pages", "2",
                        "--only", "render", "--only", "fidelity", "--only", "convert")
    assert summary["settings"]["codec"] == "deepseek-ocr2"
    fidelity = next(v for k, v in summary["stages"].items() if k.startswith("Fidelity"))
    assert any(key.startswith("deepseek-ocr2") for key in fidelity)
    convert = next(v for k, v in summary["stages"].items() if k.startswith("Convert"))
    assert convert["pages"] > 0


def test_codec_mode_reaches_every_stage(tmp_path, monkeypatch):
    """`vst demo --codec-mode tiny` converts, trains and evaluates with 16 tokens a page.

    The stages' heavy work is replaced by recorders; what is checked is what each stage
    hands on: before the fix the evaluate stage built its runners with the default mode.
    """
    import eval.compare
    import jobs.convert.driver
    import jobs.long_context
    import vst.train
    from jobs.demo import DemoState, stage_convert, stage_evaluate, stage_train

    seen: dict = {}

    def convert(corpus, store, **kw):
        seen["convert"] = kw
        return {"docs": 1, "pages": 1, "tokens": 16, "skips": 0, "pages_per_s": 1.0,
                "wall_time_s": 1.0, "parts": 1,
                "compression": {"visual_tokens_per_page": 16, "text_to_visual_tokens": 1.0,
                                "chars_per_visual_token": 1.0}}

    def train(cfg):
        seen.setdefault("train", []).append(cfg)
        return {"checkpoint": tmp_path / cfg.out, "evals": [], "eval": {}, "steps": 1,
                "train_flops": 1.0}

    class Stop(Exception):
        pass

    def study(cfg, codec=None):
        seen["study"] = (cfg, codec)
        raise Stop

    monkeypatch.setattr(jobs.convert.driver, "run_conversion", convert)
    monkeypatch.setattr(vst.train, "train", train)
    monkeypatch.setattr(eval.compare, "plot_bpb_vs_flops", lambda *a, **k: tmp_path / "p.png")
    monkeypatch.setattr(jobs.long_context, "run_study", study)
    settings = DemoSettings(out=tmp_path, codec="mini", codec_mode="tiny", eval_samples=1)
    state = DemoState(settings, corpus=tmp_path / "c.jsonl", docs=[])
    stage_convert(settings, state)
    stage_train(settings, state)
    with pytest.raises(Stop):
        stage_evaluate(settings, state)
    assert seen["convert"]["codec_mode"] == "tiny"
    assert [cfg.codec_mode for cfg in seen["train"]] == ["tiny", "tiny"]
    cfg, codec = seen["study"]
    assert cfg.codec == "mini:tiny" and cfg.corpus == str(tmp_path / "c.jsonl")
    assert (codec.name, codec.mode, codec.n) == ("mini", "tiny", 16)
