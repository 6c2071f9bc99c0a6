"""`vst render` on small files the tests write themselves."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import typer
from PIL import Image
from typer.testing import CliRunner

from render import RenderConfig, get_preset
from render.cli import render

app = typer.Typer()
app.command()(render)
runner = CliRunner()


def _spans_tile(records: list[dict], text: str) -> None:
    assert records[0]["start"] == 0 and records[-1]["end"] == len(text)
    for before, after in zip(records, records[1:]):
        assert before["end"] == after["start"]
    assert [r["page"] for r in records] == list(range(len(records)))


def test_render_text_file(tmp_path: Path) -> None:
    text = "".join(f"Paragraph {i}: " + "some words to wrap " * 25 + "\n\n" for i in range(12))
    text += "missing \ue000 glyph"  # (data.corpus may repair control characters away)
    source = tmp_path / "doc.txt"
    source.write_text(text, encoding="utf-8")
    out = tmp_path / "out"
    result = runner.invoke(app, [str(source), "--out", str(out), "--preset", "ds-tiny"])
    assert result.exit_code == 0, result.output

    config = RenderConfig.load(out / "config.json")
    assert config == get_preset("ds-tiny")
    records = [json.loads(line) for line in (out / "pages.jsonl").read_text().splitlines()]
    assert len(records) > 1
    _spans_tile(records, text)
    assert {r["render_config_id"] for r in records} == {config.id}
    assert records[-1]["missing_glyphs"] == ["U+E000"]
    for record in records:
        with Image.open(out / record["image"]) as image:
            assert image.size == (512, 512) and image.mode == "RGB"
            assert (np.asarray(image) < 128).any()


def test_render_with_config_file_and_limits(tmp_path: Path) -> None:
    config = get_preset("mini").replace(font_size=14.0)
    config_path = config.save(tmp_path / "cfg.json")
    source = tmp_path / "doc.txt"
    source.write_text("word " * 5000, encoding="utf-8")
    out = tmp_path / "out"
    result = runner.invoke(app, [str(source), "-o", str(out), "--config", str(config_path),
                                 "--max-pages", "2", "--no-images"])
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in (out / "pages.jsonl").read_text().splitlines()]
    assert [r["page"] for r in records] == [0, 1]
    assert records[0]["render_config_id"] == config.id
    assert not (out / "pages").exists()


def test_render_rejects_unknown_preset(tmp_path: Path) -> None:
    source = tmp_path / "doc.txt"
    source.write_text("x", encoding="utf-8")
    result = runner.invoke(app, [str(source), "--out", str(tmp_path / "o"), "--preset", "huge"])
    assert result.exit_code != 0
    assert "ds-base" in result.output and "mini" in result.output


def test_python_dash_m_render(tmp_path: Path) -> None:
    source = tmp_path / "doc.txt"
    source.write_text("hello from python -m jobs.cli render\n", encoding="utf-8")
    out = tmp_path / "out"
    done = subprocess.run([sys.executable, "-m", "jobs.cli", "render", str(source), "--out", str(out)],
                          capture_output=True, text=True, cwd=Path(__file__).parents[1],
                          timeout=120)
    assert done.returncode == 0, done.stderr
    assert (out / "pages.jsonl").is_file() and (out / "pages" / "000000_00000.png").is_file()
