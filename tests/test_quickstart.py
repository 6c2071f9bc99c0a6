"""docs/quickstart.md runs: every `vst` command of its bash blocks, in order, in a fresh
folder (about 10 minutes on a 2-core CPU, so `-m slow`). The set-up lines (clone, venv)
are the README's, which CI runs."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
GUIDE = ROOT / "docs" / "quickstart.md"


def guide_commands(text: str) -> list[list[str]]:
    """The `vst ...` lines of the guide's ```bash blocks, split as a shell would."""
    blocks = re.findall(r"^```bash\n(.*?)^```", text, flags=re.S | re.M)
    return [shlex.split(line) for block in blocks for line in block.splitlines()
            if line.startswith("vst ")]


def test_the_guide_has_a_command_a_step():
    commands = guide_commands(GUIDE.read_text())
    assert [c[1] for c in commands] == ["corpus", "convert", "train", "train", "eval",
                                        "corpus", "sft", "chat", "curriculum"]


@pytest.mark.slow
def test_the_quickstart_runs(tmp_path):
    vst = Path(sys.executable).parent / "vst"  # the installed command of this environment
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    for command in guide_commands(GUIDE.read_text()):
        t0 = time.perf_counter()
        done = subprocess.run([str(vst), *command[1:]], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=900)
        print(f"{time.perf_counter() - t0:6.1f} s  {shlex.join(command)}", flush=True)
        assert done.returncode == 0, (command, done.stdout[-2000:], done.stderr[-4000:])
    assert (tmp_path / "runs" / "quickstart" / "compare" / "compare.md").exists()
