"""Training budgets (steps, wall-clock, FLOPs), evaluation points, recipes on the command
line, and commands derived from config dataclasses."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import pytest
import typer
from typer.testing import CliRunner

from vst.train import TrainConfig, budget_used, lr_at, train


def quick(out, **kw) -> TrainConfig:
    base = dict(out=str(out), steps=10_000, batch_size=4, synthetic_docs=24, eval_every=0,
                eval_batches=1, save_every=0, tensorboard=False, progress=False, warmup=2,
                lr=3e-3, flavour="debug")
    return TrainConfig(**{**base, **kw})


def test_the_budget_used_is_the_largest_share_and_the_schedule_follows_it():
    cfg = TrainConfig(steps=100, warmup=10, max_seconds=60.0, max_flops=1e12)
    assert budget_used(50, cfg, 6.0, 1e11) == pytest.approx(0.5)  # steps lead
    assert budget_used(5, cfg, 45.0, 1e11) == pytest.approx(0.75)  # time leads
    assert budget_used(5, cfg, 6.0, 9e11) == pytest.approx(0.9)  # FLOPs lead
    # without caps the schedule is the plain step schedule; at the end it reaches the floor
    plain = TrainConfig(steps=100, warmup=10)
    assert [lr_at(s, plain) for s in (10, 55, 99)] == pytest.approx(
        [lr_at(s, plain, s / 100) for s in (10, 55, 99)])
    assert lr_at(50, cfg, 1.0) == pytest.approx(cfg.lr * cfg.min_lr_ratio)


def test_a_flops_budget_stops_the_run_counts_the_decoder_and_spreads_evaluations(tmp_path):
    first = train(quick(tmp_path / "probe", steps=3, dec=0.5, dec_pages=-1))
    per_step = first["train_flops"] / 3
    assert first["decoder_flops_per_page"] > 0
    # FLOPs: the trunk on every position plus decoder-CE on every page it read
    h = first["history"][0]
    assert h["train_flops"] == pytest.approx(
        4 * 32 * first["flops_per_token"] + h["dec_n"] * first["decoder_flops_per_page"])
    res = train(quick(tmp_path / "run", dec=0.5, dec_pages=-1, max_flops=4.5 * per_step,
                      eval_points=2))
    assert res["steps"] in (4, 5)  # stops once the budget is spent
    assert res["train_flops"] >= 4.5 * per_step * 0.9
    assert res["history"][-1]["lr"] < 0.5 * res["history"][2]["lr"]  # annealed to the budget
    mid = res["evals"][:-1]
    assert len(mid) == 1 and 0 < mid[0]["train_flops"] < res["train_flops"]
    saved = json.loads((tmp_path / "run" / "result.json").read_text())
    assert saved["train_flops"] == pytest.approx(res["train_flops"])


def test_recipe_on_the_command_line_fills_only_what_is_not_given(tmp_path):
    from jobs.cli import TRAIN_DOC, _train
    from jobs.config_cli import config_command

    app = typer.Typer()
    app.command()(config_command(TrainConfig, _train, doc=TRAIN_DOC))
    out = tmp_path / "run"
    result = CliRunner().invoke(app, [
        "--recipe", "learn", "--data", "synthetic", "--flavour", "debug", "--steps", "1",
        "--dec-lines", "0", "--eval-every", "0", "--save-every", "0", "--no-progress",
        "--no-tensorboard", "--out", str(out)])
    assert result.exit_code == 0, result.output
    cfg = json.loads((out / "config.json").read_text())["train"]
    assert cfg["recipe"] == "learn"
    assert (cfg["flavour"], cfg["dec_lines"], cfg["steps"]) == ("debug", 0, 1)  # given: kept
    assert (cfg["mse"], cfg["dec_pages"], cfg["head_init"]) == (0.0, -1, "zero")  # recipe


def test_config_command_derives_flags_defaults_and_help_from_the_dataclass():
    from jobs.config_cli import config_command

    @dataclass
    class Demo:
        """Run the demo thing."""

        name: str = field(default="x", metadata={"help": "what to call it"})
        count: int = 3
        tags: list[str] = field(default_factory=list, metadata={"help": "repeatable tag"})
        limit: float | None = None

    seen = []
    app = typer.Typer()
    app.command()(config_command(Demo, seen.append))
    runner = CliRunner()
    assert runner.invoke(app, ["--count", "5", "--tags", "a", "--tags", "b"]).exit_code == 0
    assert seen[-1] == Demo(name="x", count=5, tags=["a", "b"], limit=None)
    assert runner.invoke(app, ["--limit", "2.5"]).exit_code == 0
    assert seen[-1].limit == 2.5 and seen[-1].tags == []
    text = runner.invoke(app, ["--help"]).output
    assert "what to call it" in text and "Run the demo thing" in text
    assert runner.invoke(app, ["--count", "many"]).exit_code != 0  # typed
