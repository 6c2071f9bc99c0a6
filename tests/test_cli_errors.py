"""Every `vst` command answers a user's mistake with one line and status 2 (jobs/errors.py),
and its `--help` names no machine's path.

The command tree is walked, not listed: a command added without a bad input below fails
`test_every_command_has_a_bad_input`, and every bad input must give `error: ...` alone on
stderr, status 2 and no traceback. The bad inputs fail before any real work (no training,
no Ray), so the whole walk takes seconds.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from jobs.cli import app

ROOT = Path(__file__).resolve().parents[1]
MISSING = "/nonexistent-vst-input"  # a path no machine has

# One bad input a command: a path that is not there, an unknown name, a value out of range
# or an empty input. OUT is a fresh folder of the test's.
BAD_INPUTS: dict[str, list[str]] = {
    "demo": ["--only", "nosuchstage", "--out", "OUT"],
    "speedrun": ["--minutes", "0", "--out", "OUT"],
    "sweep": ["--family", "nope", "--out", "OUT"],
    "frontier": ["--family", "nope", "--data", MISSING, "--out", "OUT"],
    "render": [f"{MISSING}.txt", "--out", "OUT"],
    "fidelity": ["EMPTY", "--codec", "mini:tiny", "--out", "OUT"],
    "convert": ["--corpus", f"{MISSING}.jsonl", "--out", "OUT"],
    "train": ["--data", MISSING, "--out", "OUT", "--steps", "1", "--threads", "1"],
    "generate": [MISSING],
    "sft": ["--base", MISSING, "--data", "EMPTY", "--out", "OUT"],
    "chat": [MISSING, "--prompt", "hi"],
    "corpus build": ["--out", "OUT", "--sources", "nope"],
    "corpus demo": ["--out", "OUT", "--n-docs", "0"],
    "corpus read": [f"{MISSING}.jsonl"],
    "corpus instructions": ["EMPTY", "--out", "OUT"],
    "codec train": ["--corpus", f"{MISSING}.jsonl", "--workdir", "OUT", "--out", "OUT",
                    "--threads", "1"],
    "codec train-reader": ["--init", MISSING, "--workdir", "OUT", "--out", "OUT",
                           "--threads", "1"],
    "codec card": ["--fidelity", f"{MISSING}.json"],
    "store consolidate": [MISSING],
    "store verify": [MISSING],
    "store info": [MISSING],
    "eval score-longbench": [MISSING],
    "eval score-longbench-v2": [f"{MISSING}.jsonl"],
    "eval score-mrcr": [f"{MISSING}.jsonl"],
    "eval make-ruler": ["OUT", "--tasks", "nosuchtask"],
    "eval make-longbench-task": [f"{MISSING}.jsonl"],
    "eval score-ruler": [MISSING],
    "eval run": [f"{MISSING}.jsonl", "--out", "OUT"],
    "eval lm-eval": ["--tasks", "niah_single_1", "--runner", "vst"],
    "eval efficiency": ["--codec", "nope", "--out", "OUT", "--lengths", "64"],
    "eval compare": ["--store", MISSING, "--vst", MISSING, "--out", "OUT"],
    "eval compression": ["--arms", "nope", "--out", "OUT"],
    "curriculum build": ["--tasks", "nosuchtask", "--out", "OUT"],
    "curriculum study": ["--budgets", "-1", "--out", "OUT"],
}

runner = CliRunner()
WIDE = {"COLUMNS": "300", "TERMINAL_WIDTH": "300"}  # no wrapped help lines


def commands() -> dict[str, typer.core.TyperCommand]:
    """Every leaf command of the tree, by its path ("eval compare")."""
    found = {}

    def walk(command, path: list[str]) -> None:
        if hasattr(command, "commands"):  # a group
            for name, sub in command.commands.items():
                walk(sub, path + [name])
        else:
            found[" ".join(path)] = command

    walk(typer.main.get_command(app), [])
    return found


def groups() -> list[str]:
    return sorted({" ".join(path.split()[:-1]) for path in commands()})


def test_every_command_has_a_bad_input():
    tree = set(commands())
    assert len(tree) >= 30
    assert tree == set(BAD_INPUTS), (
        f"commands without a bad input here: {sorted(tree - set(BAD_INPUTS))}; "
        f"cases of no command: {sorted(set(BAD_INPUTS) - tree)}")


@pytest.mark.parametrize("command", sorted(BAD_INPUTS))
def test_a_bad_input_is_one_line_and_status_2(command, tmp_path):
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    args = [str(empty) if a == "EMPTY" else str(tmp_path / "out") if a == "OUT" else a
            for a in BAD_INPUTS[command]]
    result = runner.invoke(app, command.split() + args, env=WIDE)
    lines = result.stderr.splitlines()
    assert result.exit_code == 2, (result.exit_code, result.output, result.exception)
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.output and str(ROOT) not in lines[0]


def test_debug_shows_the_traceback_of_an_expected_error(monkeypatch):
    bad = ["convert", "--corpus", f"{MISSING}.jsonl", "--out", "x"]
    plain = runner.invoke(app, bad)
    for result in (runner.invoke(app, ["--debug", *bad]),
                   runner.invoke(app, bad, env={"VST_DEBUG": "1"})):
        assert result.exit_code == 2 and "Traceback" in result.stderr
        assert result.stderr.splitlines()[-1] == plain.stderr.strip()
        assert "MissingPath" in result.stderr  # the project's type, raised on purpose


def test_a_bug_keeps_its_traceback_and_status_1():
    """Only the project's user errors and usage errors are expected: a built-in error raised
    by a bug (here a ValueError, which a message-matching handler might mistake) is not."""
    from jobs.errors import ReportingGroup, debug_option

    bugged = typer.Typer(cls=ReportingGroup)
    bugged.callback()(debug_option)

    @bugged.command()
    def div() -> None:
        1 / 0

    @bugged.command()
    def value() -> None:
        int("not a number")  # a ValueError no one raised on purpose

    for name, kind in (("div", ZeroDivisionError), ("value", ValueError)):
        result = runner.invoke(bugged, [name])
        assert result.exit_code == 1 and isinstance(result.exception, kind)
        assert "error:" not in result.output


def test_the_installed_command_exits_2_with_one_line(tmp_path):
    """The real entry point in a fresh process: one line on stderr, status 2."""
    done = subprocess.run(
        [sys.executable, "-m", "jobs.cli", "convert", "--corpus", f"{MISSING}.jsonl",
         "--out", str(tmp_path / "store")], capture_output=True, text=True, cwd=ROOT,
        env={**os.environ, "HF_HUB_OFFLINE": "1"}, timeout=300)
    assert done.returncode == 2, done.stderr
    assert done.stderr.splitlines() == [
        f"error: corpus path does not exist: {MISSING}.jsonl (check --corpus)"]


@pytest.mark.parametrize("group", groups())
def test_help_shows_no_machine_paths(group):
    """Defaults print as relative or symbolic names (e.g. the mini codec's `shipped`)."""
    names = [path for path in commands() if " ".join(path.split()[:-1]) == group]
    for path in [group] + names if group else names:
        result = runner.invoke(app, [*path.split(), "--help"], env=WIDE)
        assert result.exit_code == 0, result.output
        for machine in (str(ROOT), str(Path.home())):
            assert machine not in result.output, (path, machine)
        assert not re.search(r"default: /", result.output), path
