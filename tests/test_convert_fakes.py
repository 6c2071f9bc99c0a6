"""Helpers for the conversion tests: a tiny deterministic codec and a corpus builder.

`TinyCodec` is not a real reader: it pools the page into a 4x4 grid and projects it with a
fixed random matrix, which is enough to exercise render -> encode -> store quickly and
deterministically. Ray workers build it from the spec "test_convert_fakes:tiny_codec"
(the tests put tests/ on PYTHONPATH before Ray starts).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from codec.base import Codec, TextNLL
from data.errors import BadInput
from render.config import RenderConfig

SPEC = "test_convert_fakes:tiny_codec"

# A small page keeps rasterizing cheap: 9 lines of ~24 monospace characters.
TINY_PAGE = RenderConfig(width=128, height=96, dpi=96, font="DejaVuSansMono.ttf",
                         font_size=8.0, line_height=1.2, margin_top=4, margin_right=4,
                         margin_bottom=4, margin_left=4)


class TinyCodec(Codec):
    name = "tiny-test"
    D = 8
    n = 16
    grid = (4, 4)
    version = "tiny-test-1"
    render_config = TINY_PAGE

    def __init__(self, mode: str = "default", delay: float = 0.0,
                 crash_marker: str | None = None, refuse: str | None = None,
                 bug: bool = False) -> None:
        self.mode = mode
        # Every encode raises: a user's mistake with this message (`refuse`), or a bug.
        self.refuse, self.bug = refuse, bug
        # A delay per encode call lets a test kill a run midway; it changes no output byte.
        self.delay = float(delay)
        # The first encode anywhere kills its process (and leaves this file behind).
        self.crash_marker = crash_marker
        gen = torch.Generator().manual_seed(0)
        self.proj = torch.randn(6, self.D, generator=gen)

    def encode(self, pages) -> torch.Tensor:
        if self.delay:
            time.sleep(self.delay)
        if self.crash_marker and not os.path.exists(self.crash_marker):
            Path(self.crash_marker).touch()
            os._exit(1)  # a hard crash: no exception, the process is gone
        if self.refuse:
            raise BadInput(self.refuse)
        if self.bug:
            return 1 / 0
        x = torch.as_tensor(np.asarray(pages)).float() / 255.0  # [B, H, W, 3]
        b, h, w, c = x.shape
        cells = x[:, : h // 4 * 4, : w // 4 * 4].reshape(b, 4, h // 4, 4, w // 4, c)
        feats = torch.cat([cells.mean(dim=(2, 4)), cells.std(dim=(2, 4))], dim=-1)
        return feats.reshape(b, 16, 6) @ self.proj

    def decode(self, tokens: torch.Tensor, max_new_tokens: int | None = None) -> list[str]:
        return [""] * tokens.shape[0]

    def text_nll(self, tokens: torch.Tensor, texts: Sequence[str]) -> TextNLL:
        nll = (tokens * 0).sum(dim=(1, 2))
        return TextNLL(nll, torch.tensor([len(t.encode()) for t in texts]))


def tiny_codec(mode: str = "default", delay: float = 0.0, crash_marker: str | None = None,
               refuse: str | None = None, bug: bool = False) -> TinyCodec:
    return TinyCodec(mode, delay, crash_marker, refuse, bug)


WORDS = ("alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu nu xi omicron "
         "pi rho sigma tau upsilon phi chi psi omega").split()


def make_text(seed: int, n_words: int) -> str:
    rng = np.random.default_rng(seed)
    words = [WORDS[i] for i in rng.integers(0, len(WORDS), n_words)]
    lines, line = [], []
    for i, w in enumerate(words):
        line.append(w)
        if i % 11 == 10:
            lines.append(" ".join(line) + ".")
            line = []
    lines.append(" ".join(line))
    return "\n".join(lines)


def write_jsonl(path: Path, texts: list[str]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as fh:
        for i, t in enumerate(texts):
            fh.write(json.dumps({"text": t, "meta": {"i": i}}) + "\n")
    return path
