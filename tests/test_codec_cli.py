"""`vst codec train|train-reader|card`: flags, defaults and help from the config dataclasses
in codec/mini/configs.py, and the config each run function receives (no training here)."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
from typer.testing import CliRunner

from codec.mini import MODES, WEIGHTS_DIR
from codec.mini.configs import (
    SHIPPED,
    CardConfig,
    CodecTrainConfig,
    ReaderTrainConfig,
    command_line,
    training_record,
    weights_dir,
)
from jobs.cli import app

ROOT = Path(__file__).resolve().parents[1]
runner = CliRunner()


def help_of(command: str) -> str:
    result = runner.invoke(app, ["codec", command, "--help"],
                           env={"COLUMNS": "250", "TERMINAL_WIDTH": "250"})
    assert result.exit_code == 0, result.output
    return result.output


def default_of(text: str, flag: str) -> str | None:
    """The `[default: ...]` on the help line of `flag`."""
    for line in text.splitlines():
        if re.search(rf"{re.escape(flag)}(\s|$)", line):
            found = re.search(r"\[default: ([^\]]+)\]", line)
            return found.group(1) if found else None
    raise AssertionError(f"{flag} not in help:\n{text}")


def test_train_help_lists_the_stage1_flags_and_defaults():
    text = help_of("train")
    expected = {"--steps": "700", "--workdir": "runs/codec_mini", "--n-docs": "100",
                "--modes": "tiny,small,base", "--batch": "4", "--noise": "0.05",
                "--drop": "0.03", "--synthetic": "0.25", "--val-pages": "16",
                "--val-every": "100", "--seed": "0", "--threads": "2", "--workers": "1",
                "--lr": "0.003", "--warmup": "30", "--dim": "64", "--D": "256",
                "--noise-after": "0.5", "--aligned": "1.0", "--probe": "1.0"}
    for flag, value in expected.items():
        assert default_of(text, flag) == value, flag
    for flag in ("--corpus", "--stop-at", "--init", "--out", "--bf16", "--no-bf16"):
        assert flag in text
    assert "length of the LR schedule" in text and "visual-token width" in text
    assert "weight of the glyph probe on the encoder's per-position codes" in text


def test_train_reader_help_lists_the_stage2_flags_and_defaults():
    text = help_of("train-reader")
    expected = {"--steps": "1500", "--lr": "0.002", "--warmup": "50", "--dim": "128",
                "--depth": "3", "--heads": "4", "--empty-lines": "0.25", "--structured": "0.2",
                "--batch": "4", "--val-every": "100"}
    for flag, value in expected.items():
        assert default_of(text, flag) == value, flag
    for flag in ("--init", "--out", "--tune-trunk", "--no-tune-trunk", "--corpus"):
        assert flag in text
    assert "stage-1 weights folder" in text and "--probe" not in text and "--D " not in text


def test_card_help_lists_its_flags():
    text = help_of("card")
    for flag, help_text in (("--fidelity", "metrics.json of held-out text"),
                            ("--demo", "metrics.json of demo-corpus text"),
                            ("--notes", "markdown appended at the end")):
        assert flag in text and help_text in text
    assert "required" in text


def test_the_defaults_are_the_old_parsers():
    train, reader = CodecTrainConfig(), ReaderTrainConfig()
    assert (train.steps, reader.steps) == (700, 1500)
    assert train.out == reader.out == reader.init == SHIPPED and train.init is None
    assert weights_dir(SHIPPED) == WEIGHTS_DIR and weights_dir("w") == Path("w")
    assert train.stop_at is None and train.corpus is None and train.bf16 is False
    assert reader.tune_trunk is False


@pytest.fixture
def captured(monkeypatch) -> list:
    """Every config a `vst codec` command hands to its training or card function."""
    import codec.mini.card
    import codec.mini.train
    import codec.mini.train_reader

    seen: list = []
    monkeypatch.setattr(codec.mini.train, "train", seen.append)
    monkeypatch.setattr(codec.mini.train_reader, "train", seen.append)
    monkeypatch.setattr(codec.mini.card, "write_card", seen.append)
    return seen


def invoke(args: list[str]) -> None:
    result = runner.invoke(app, ["codec", *args])
    assert result.exit_code == 0, result.output


def test_the_command_line_builds_the_config_train_receives(captured):
    invoke(["train", "--steps", "3000", "--stop-at", "1000", "--val-every", "250",
            "--out", "runs/w6", "--D", "128", "--noise-after", "0", "--bf16"])
    invoke(["train-reader", "--init", "runs/w6", "--steps", "400", "--structured", "0",
            "--tune-trunk", "--modes", "small"])
    invoke(["card", "--fidelity", "runs/fid/metrics.json"])
    assert captured == [
        CodecTrainConfig(steps=3000, stop_at=1000, val_every=250, out="runs/w6", D=128,
                         noise_after=0.0, bf16=True),
        ReaderTrainConfig(init="runs/w6", steps=400, structured=0.0, tune_trunk=True,
                          modes="small"),
        CardConfig(fidelity=Path("runs/fid/metrics.json")),
    ]
    assert type(captured[0]) is CodecTrainConfig and type(captured[1]) is ReaderTrainConfig


def test_the_recorded_command_rebuilds_the_config(captured):
    configs = [CodecTrainConfig(steps=1500, stop_at=1250, lr=7e-4, seed=2, D=128, bf16=True,
                                init="runs/w8", corpus="my corpus.jsonl"),
               ReaderTrainConfig(steps=400, lr=1e-3, warmup=20, tune_trunk=True, seed=1),
               CodecTrainConfig()]
    progs = ["vst codec train", "vst codec train-reader", "vst codec train"]
    for cfg, prog in zip(configs, progs):
        line = command_line(cfg, prog)
        assert line.startswith(prog)
        invoke(shlex.split(line)[2:])
    assert captured == configs
    assert command_line(CodecTrainConfig(), "vst codec train") == "vst codec train"
    record = training_record(configs[0], "vst codec train")
    assert record["config"]["D"] == 128 and record["config"]["steps"] == 1500
    assert "--D 128" in record["command"] and "--bf16" in record["command"]


def test_the_shipped_weights_training_chain_runs_under_vst_codec(captured):
    """Every stage recorded in the shipped weights is a valid `vst codec` command, as the
    model card prints it, and no record names a machine's path."""
    import json

    from codec.mini.card import stages

    for mode in MODES:
        text = (WEIGHTS_DIR / f"{mode}.json").read_text()
        assert "python -m" not in text and str(ROOT) not in text and '"/' not in text
    chain = stages(json.loads((WEIGHTS_DIR / "small.json").read_text())["training"])
    commands = [st["command"] for st in chain]
    assert len(commands) >= 2 and all(c.startswith("vst codec train") for c in commands)
    for command in commands:
        invoke(shlex.split(command)[2:])
    assert [type(c) for c in captured] == [
        ReaderTrainConfig if c.startswith("vst codec train-reader") else CodecTrainConfig
        for c in commands]
    assert captured[0].stop_at == 1000 and captured[-1].structured == 0.2
