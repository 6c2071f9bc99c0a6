"""`mini`: the project's own small optical codec, trained here on CPU, shipped in the repo.

    from codec import load_codec
    codec = load_codec("mini")                 # default mode, shipped weights, offline
    codec = load_codec("mini", mode="tiny")    # 16 tokens per page
    codec = load_codec("mini-zh:small")         # mini-zh: reads Chinese (GB2312) and English
    tokens = codec.encode(images)              # [B, n, D]
    texts = codec.decode(tokens)

See docs/codec.md and codec/mini/MODEL_CARD.md.
"""

from __future__ import annotations


import copy
import json
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
import torch

from codec.base import Codec, PageImages, TextNLL, utf8_bytes
from codec.registry import register_codec
from codec.mini.ctc import band_nll, best_path
from codec.mini.layout import (PAGE_END_BLANK_LINES, drop_blank_tail, settle_line_ends,
                               text_bands)
from codec.mini.model import Geometry, MiniConfig, MiniNet, to_ink
from codec.mini import vocab
from codec.mini.reader import line_nll
from codec.mini.speculative import ReadStats
from codec.mini.speculative import read_lines as fast_read_lines
from data.errors import BadCheckpoint, BadInput, MissingPath

WEIGHTS_DIR = Path(__file__).parent / "weights"
DEFAULT_MODE = "small"
RENDER_PRESET = "mini"
READER_PREFIXES = ("readout.", "reader.")  # what a trainable reader learns (the encoder stays)

# Token grid of each mode on the `mini` page (32 lines): rows are bands of lines.
MODES: dict[str, dict] = {
    "tiny": {"lines_per_band": 2, "cols": 1},  # 16 tokens: two lines per token
    "small": {"lines_per_band": 1, "cols": 1},  # 32 tokens: one line per token
    "base": {"lines_per_band": 1, "cols": 2},  # 64 tokens: half a line per token
}


# Token grid of each mini-zh mode on the `mini-zh` page (24 lines of 51 half-width cells:
# 25 hanzi or 51 ASCII characters); columns split a line.
ZH_MODES: dict[str, dict] = {
    "tiny": {"lines_per_band": 1, "cols": 1},  # 24 tokens: a line (25 hanzi) per token
    "small": {"lines_per_band": 1, "cols": 2},  # 48 tokens: half a line (12-13 hanzi) per token
    "base": {"lines_per_band": 1, "cols": 4},  # 96 tokens: a quarter line per token
}


@dataclass(frozen=True)
class Variant:
    """A family of mini checkpoints: registry name, shipped weights, page, modes, vocabulary."""

    name: str
    weights_dir: Path
    render_preset: str
    modes: dict
    vocab: str


VARIANTS: dict[str, Variant] = {
    "mini": Variant("mini", WEIGHTS_DIR, RENDER_PRESET, MODES, "en"),
    "mini-zh": Variant("mini-zh", Path(__file__).parent / "weights_zh", "mini-zh", ZH_MODES,
                       "zh"),
}


def variant_of(name: str) -> Variant:
    if name not in VARIANTS:
        raise BadInput(f"unknown mini variant {name!r}; choose one of {', '.join(VARIANTS)}")
    return VARIANTS[name]


def mode_config(mode: str, render_config=None, variant: str = "mini", **overrides) -> MiniConfig:
    from render import get_preset

    v = variant_of(variant)
    if mode not in v.modes:
        raise BadInput(f"unknown {v.name} mode {mode!r}; choose one of {', '.join(v.modes)}")
    geometry = Geometry.of(render_config or get_preset(v.render_preset))
    return MiniConfig(mode=mode, geometry=geometry, vocab=v.vocab,
                      **{**v.modes[mode], **overrides})


class MiniCodec(Codec):
    name = "mini"

    def __init__(self, net: MiniNet, render_config, version: str, batch_size: int = 16,
                 fast_decode: bool | None = None):
        cfg = net.cfg
        self.net = net.eval().requires_grad_(False)  # frozen: no codec weight ever trains here
        self.cfg = cfg
        self.mode = cfg.mode
        self.D = cfg.D
        self.n = cfg.n
        self.grid = cfg.grid
        self.render_config = render_config
        self.name = "mini-zh" if cfg.vocab == "zh" else "mini"  # the registry name
        self.version = version
        self.batch_size = batch_size
        # `decode`'s default: drafted and verified (exact). Not for `tiny`, whose weaker
        # drafts (41% of characters) and one near-tie fallback made it 0.5x at batch 16.
        self.fast_decode = cfg.mode != "tiny" if fast_decode is None else fast_decode
        self.last_decode_stats: ReadStats | None = None  # what the last fast decode did
        if Geometry.of(render_config) != cfg.geometry:
            raise ValueError("render config does not match the geometry the codec was trained on")

    # -- encode -------------------------------------------------------------------------------
    def encode(self, pages: PageImages) -> torch.Tensor:
        batch = _as_uint8_batch(pages)
        g = self.cfg.geometry
        if tuple(batch.shape[1:3]) != (g.height, g.width):
            raise ValueError(f"pages must be {g.height}x{g.width} (render preset "
                             f"{variant_of(self.name).render_preset!r}), got "
                             f"{tuple(batch.shape[1:3])}")
        out = []
        with torch.no_grad():
            for i in range(0, len(batch), self.batch_size):
                out.append(self.net.encode(to_ink(batch[i:i + self.batch_size])))
        return torch.cat(out) if out else torch.zeros(0, self.n, self.D)

    # -- decode -------------------------------------------------------------------------------
    def decode(self, tokens: torch.Tensor, max_new_tokens: int | None = None,
               fast: bool | None = None) -> list[str]:
        """Greedy text of each page, lines joined in reading order; max_new_tokens caps
        characters. The causal reader reads every line of the page at once; checkpoints
        without one use the CTC best path of each band.

        `fast` (default `fast_decode`: True but for `tiny`): the CTC read-out drafts each
        line and the reader verifies drafts in batched passes (codec/mini/speculative.py):
        the same text as plain step-by-step greedy decoding (`fast=False`) to the
        character; `small` 3.0x faster at batch 1 and 4.7x at 16 on the loaded 2-core dev
        machine (benchmarks/codec_bench.py).

        Lines that end in a soft wrap the renderer could not have made are read as ending
        in a hard line break (`settle_line_ends`); blank lines below the page's last
        inked line read as nothing (`drop_blank_tail`).
        """
        self._check(tokens)
        fast = self.fast_decode if fast is None else fast
        stats = ReadStats() if fast else None
        texts = []
        for i in range(0, len(tokens), self.batch_size):
            texts += decode_pages(self.net, tokens[i:i + self.batch_size], self._typesetter,
                                  fast, stats)
        self.last_decode_stats = stats
        return texts if max_new_tokens is None else [t[:max_new_tokens] for t in texts]

    def sample(self, tokens: torch.Tensor, temperature: float = 1.0,
               generator: torch.Generator | None = None) -> list[str]:
        """Every line sampled from the causal reader at `temperature`, joined in reading
        order (line ends settled and the blank tail dropped as in `decode`)."""
        self._check(tokens)
        if self.net.reader is None:
            raise NotImplementedError("this mini checkpoint has no causal reader to sample")
        texts = []
        with torch.no_grad():
            for i in range(0, len(tokens), self.batch_size):
                for lines in self.net.read_lines(tokens[i:i + self.batch_size], temperature,
                                                 generator):
                    texts.append(_page_text(lines, self._typesetter))
        return texts

    # -- likelihood ---------------------------------------------------------------------------
    def text_nll(self, tokens: torch.Tensor, texts: Sequence[str]) -> TextNLL:
        """NLL (nats) of each text given its page's tokens; gradients reach `tokens` only.

        The text is laid out with the codec's render config. With the causal reader every
        line is scored by teacher forcing (its characters and its end); without one each
        band is scored by its CTC frames (sum over all alignments). Text that would not
        have fitted the page is charged on the last line.
        """
        self._check(tokens)
        return self._text_nll(tokens, texts)

    def causal_text_nll(self, tokens: torch.Tensor, texts: Sequence[str]) -> TextNLL:
        """`text_nll` with each line read from the page with every slot of a later grid
        row set to null (the mixer's "causal" view, codec/mini/model.py): under teacher
        forcing a VST's prediction for a later slot has seen the true token of this line,
        and the bidirectional mixer could read the line from it."""
        self._check(tokens)
        if self.net.reader is None:
            raise NotImplementedError("the CTC read-out scores bands, not lines")
        own = self.net.readout.view  # a line-local reader (view "line") is leak-free as it is
        return self._text_nll(tokens, texts, view="causal" if own == "page" else own)

    def _text_nll(self, tokens: torch.Tensor, texts: Sequence[str],
                  view: str | None = None) -> TextNLL:
        if len(texts) != len(tokens):
            raise ValueError(f"{len(texts)} texts for {len(tokens)} pages")
        c = self.cfg
        if self.net.reader is not None:
            L = c.geometry.n_lines
            lines = [ln for text in texts for ln in text_bands(text, self.render_config, L, 1)]
            cells = self.net.line_cells(tokens.float(), view)
            nll = line_nll(self.net.reader, cells, lines).view(len(texts), L).sum(1)
        else:
            logits = self.net.readout(tokens.float())  # [B, rows, T, classes]
            targets = [band for text in texts
                       for band in text_bands(text, self.render_config, c.rows, c.lines_per_band)]
            nll = band_nll(logits.flatten(0, 1), targets, c.chars).view(len(texts), c.rows).sum(1)
        return TextNLL(nll=nll, n_bytes=utf8_bytes(texts))

    @property
    def n_lines(self) -> int:
        return self.cfg.geometry.n_lines if self.net.reader is not None else 1

    def line_nll(self, tokens: torch.Tensor, texts: Sequence[str],
                 which: torch.Tensor | None = None, causal: bool = False) -> TextNLL:
        """NLL of chosen lines of each page, [B, k]: the causal reader scores each line
        on its own (its prefix is the line's cells, made from the page's tokens), so a
        sample of lines is an exact slice of the page's likelihood at a fraction of the
        cost: the reader is ~97% of `text_nll`'s FLOPs, the cells ~3% (vst/flops.py).
        `causal`: each line read without the slots after it (`causal_text_nll`); only the
        chosen lines' rows are mixed."""
        self._check(tokens)
        if self.net.reader is None:
            return super().line_nll(tokens, texts, which, causal)
        if len(texts) != len(tokens):
            raise ValueError(f"{len(texts)} texts for {len(tokens)} pages")
        L = self.cfg.geometry.n_lines
        if which is None:
            which = torch.arange(L).expand(len(texts), L)
        k = which.shape[1]
        bands = [text_bands(text, self.render_config, L, 1) for text in texts]
        rows = (which.cpu() + L * torch.arange(len(texts))[:, None]).flatten()
        if causal and self.net.readout.view == "page":
            cells = self.net.causal_line_cells(tokens.float(), which.to(tokens.device))
        else:  # a line-local reader is leak-free as it is
            cells = self.net.line_cells(tokens.float())[rows.to(tokens.device)]
        chosen = [bands[int(r) // L][int(r) % L] for r in rows]
        nll = line_nll(self.net.reader, cells, chosen).view(len(texts), k)
        return TextNLL(nll=nll, n_bytes=utf8_bytes(chosen).view(len(texts), k))

    # -- the hierarchical reader -----------------------------------------------------------
    def trainable_reader(self) -> MiniCodec:
        """A trainable copy of this codec's read-out and causal reader, initialised from its
        weights, whose mixer lets every slot see itself only (the "line" view): a line is
        read from its own slot and the characters before it, so a VST trained through it
        under teacher forcing cannot read a line from a later slot's prediction. The
        copy is a codec like this one (same tokens, likelihoods, decoding); the encoder
        and this codec stay frozen and untouched."""
        if self.net.reader is None:
            raise BadInput(f"{self.version} has no causal reader to train")
        net = copy.deepcopy(self.net)
        net.readout.view = "line"
        reader = MiniCodec(net, self.render_config, f"{self.version}+reader",
                           self.batch_size, self.fast_decode)
        reader.is_trainable_reader = True
        for name, p in net.named_parameters():
            p.requires_grad_(name.startswith(READER_PREFIXES))
        net.readout.head.requires_grad_(False)  # the CTC head only drafts for fast decoding
        return reader

    def reader_state(self) -> dict[str, torch.Tensor]:
        """The weights a trainable reader learns (`trainable_reader`), by name."""
        return {k: v for k, v in self.net.state_dict().items() if k.startswith(READER_PREFIXES)}

    def load_reader_state(self, state: dict[str, torch.Tensor]) -> None:
        """Load `reader_state` weights; every reader weight must be present."""
        missing = set(self.reader_state()) - set(state)
        if missing:
            raise BadCheckpoint(f"reader weights missing: {sorted(missing)[:4]}...")
        self.net.load_state_dict({**self.net.state_dict(), **state})

    def cost_key(self, texts: Sequence[str]) -> tuple[tuple, list[str]]:
        """With the causal reader every line of a call is padded to the call's longest line,
        so a page costs the same for a given longest line: one page that has it measures
        exactly. The CTC read-out's cost does not depend on the text."""
        if self.net.reader is None:
            return ("ctc",), list(texts[:1])
        n_lines = self.cfg.geometry.n_lines
        longest = [max(len(self.cfg.chars.encode(b)) for b in text_bands(t, self.render_config,
                                                                 n_lines, 1)) for t in texts]
        i = max(range(len(texts)), key=longest.__getitem__)
        return ("longest_line", longest[i]), [texts[i]]

    @cached_property
    def _typesetter(self):
        from render.layout import Typesetter

        return Typesetter(self.render_config)

    def _check(self, tokens: torch.Tensor) -> None:
        if tokens.dim() != 3 or tuple(tokens.shape[1:]) != (self.n, self.D):
            raise ValueError(f"tokens must be [B, {self.n}, {self.D}], got {tuple(tokens.shape)}")

    # -- construction -------------------------------------------------------------------------
    @classmethod
    def from_pretrained(cls, mode: str = DEFAULT_MODE, path: str | Path | None = None,
                        variant: str = "mini", **kw) -> MiniCodec:
        from safetensors.torch import load_file

        from render import RenderConfig

        v = variant_of(variant)
        root = Path(path) if path is not None else v.weights_dir
        meta_path = root / f"{mode}.json"
        if not meta_path.exists():
            raise MissingPath(f"no {v.name} codec weights for mode {mode!r} in {root}",
                              hint="train them with `vst codec train`"
                              + (" --variant mini-zh" if v.name != "mini" else ""))
        meta = json.loads(meta_path.read_text())
        net = MiniNet(MiniConfig.from_dict(meta["model"]))
        net.load_state_dict({k: v.float() for k, v in
                             load_file(str(root / f"{mode}.safetensors")).items()})
        return cls(net, RenderConfig.from_dict(meta["render_config"]), meta["version"], **kw)

    @classmethod
    def random(cls, mode: str = DEFAULT_MODE, seed: int = 0, dim: int = 16, D: int = 32,
               reader: str = "causal", variant: str = "mini", **kw) -> MiniCodec:
        """An untrained instance (tests): same shapes and contract, tiny widths."""
        from render import get_preset

        torch.manual_seed(seed)
        cfg = mode_config(mode, variant=variant, dim=dim, D=D, code=4, depth=1, reader=reader,
                          reader_dim=32, reader_depth=1)
        return cls(MiniNet(cfg), get_preset(variant_of(variant).render_preset),
                   f"{variant}-{mode}-random-{seed}", **kw)


@register_codec("mini")
def _factory(mode: str = DEFAULT_MODE, path: str | Path | None = None, random_init: bool = False,
             device: str = "cpu", variant: str = "mini", **kw) -> MiniCodec:
    if device != "cpu":
        raise BadInput(f"the {variant} codec runs on CPU, not {device!r}")
    if random_init:
        return MiniCodec.random(mode, variant=variant, **kw)
    return MiniCodec.from_pretrained(mode, path, variant=variant, **kw)


@register_codec("mini-zh")
def _factory_zh(mode: str = DEFAULT_MODE, path: str | Path | None = None,
                random_init: bool = False, device: str = "cpu", **kw) -> MiniCodec:
    """mini-zh: the mini codec on the `mini-zh` page, reading GB2312 Chinese and English."""
    return _factory(mode, path, random_init, device, variant="mini-zh", **kw)


@torch.no_grad()
def decode_pages(net: MiniNet, tokens: torch.Tensor, setter, fast: bool = True,
                 stats: ReadStats | None = None) -> list[str]:
    """Greedy text of each page from a mini network (`setter`: the page's `Typesetter`);
    `fast`: drafted and verified, the same text (codec/mini/speculative.py)."""
    if net.reader is not None:
        pages = fast_read_lines(net, tokens, stats) if fast else net.read_lines(tokens)
        return [_page_text(lines, setter) for lines in pages]
    texts = []
    chunk = max(1, 2 ** 24 // (net.cfg.n * net.cfg.chars.n_classes * 64))  # bounded logits
    pages = (page for i in range(0, len(tokens), chunk)
             for page in net.readout(tokens[i:i + chunk].float()))
    for page in pages:
        bands = best_path(page, net.cfg.chars)
        if net.cfg.lines_per_band == 1:
            bands = settle_line_ends(bands, setter)
        keep = PAGE_END_BLANK_LINES // net.cfg.lines_per_band  # the tail counted in bands
        texts.append("".join(drop_blank_tail(bands, keep)))
    return texts


def _page_text(lines: list[str], setter) -> str:
    """A page's text from its decoded one-line bands: line ends settled against the
    renderer's wrapping (which reads the decoded blank lines), then the blank tail
    dropped."""
    return "".join(drop_blank_tail(settle_line_ends(lines, setter)))


def _as_uint8_batch(pages: PageImages) -> torch.Tensor:
    if isinstance(pages, torch.Tensor):
        batch = pages
    elif isinstance(pages, np.ndarray):
        batch = torch.from_numpy(np.ascontiguousarray(pages))
    else:
        batch = torch.from_numpy(np.stack([np.asarray(p) for p in pages])) if len(pages) else \
            torch.zeros(0, 1, 1, 3, dtype=torch.uint8)
    if batch.dim() == 3:  # one page
        batch = batch[None]
    if batch.dtype != torch.uint8:
        raise ValueError(f"pages must be uint8 images, got {batch.dtype}")
    return batch
