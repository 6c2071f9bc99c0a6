"""The mini optical codec's network: a line-aware conv encoder with a learned token
compressor, a read-out trunk that unfolds each visual token into character frames, and a
causal character decoder over them.

Page -> tokens
    The content box of the page is cut into its text lines (we control the renderer, so
    the line pitch is known). A patch stem sees one full line height at a time and
    ConvNeXt-style 1D blocks run along each line. The compressor cuts each line into
    chunks and projects every chunk to its own slice of a token (a strided conv whose
    kernel is a whole chunk, like DeepEncoder's 16x conv compressor taken to the limit).
    Grid rows are bands of `lines_per_band` lines; grid columns split a line.

Tokens -> text
    A small bidirectional transformer mixes the n tokens (so a line can see its
    neighbours), then each token slice is unfolded into the frames of its chunk: two
    frames per character cell. The text decoder is a causal character transformer per
    line whose prefix is the line's cells (codec/mini/reader.py). Stage 1 of training
    scores the frames with a CTC head instead (a proper likelihood over alignments, best
    path decoding in parallel); that head is what a checkpoint without a causal reader
    decodes with.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from codec.mini.reader import CausalReader
from codec.mini.vocab import Vocab, get_vocab


@dataclass(frozen=True)
class Geometry:
    """Where the text lines sit on a page (pixels), taken from the render preset."""

    height: int
    width: int
    top: int
    left: int
    line_height: int
    n_lines: int
    line_width: int  # pixels of one line the encoder reads (a multiple of 24)
    cell_width: float  # advance of the monospace font: one character cell, px

    @classmethod
    def of(cls, render_config) -> Geometry:
        pitch = render_config.line_pitch
        if pitch != int(pitch):
            raise ValueError(f"codec/mini needs an integer line pitch, got {pitch} px")
        from render.fonts import chain_for

        return cls(render_config.height, render_config.width, render_config.margin_top,
                   render_config.margin_left, int(pitch), render_config.lines_per_page,
                   (render_config.width - render_config.margin_left) // 24 * 24,
                   chain_for(render_config).space_advance)


@dataclass(frozen=True)
class MiniConfig:
    mode: str = "small"
    lines_per_band: int = 1  # grid rows = n_lines / lines_per_band
    cols: int = 1  # grid columns: tokens per band (only when lines_per_band == 1)
    dim: int = 64  # the size dial: encoder width; everything else scales from it
    D: int = 256  # visual-token width
    code: int = 32  # per-position code width fed to the compressor
    depth: int = 2  # 1D blocks along a line
    chunks_per_line: int = 4  # a line's positions form this many chunks; each owns a slice of a token
    frame_dim: int = 48  # width of the read-out's character frames
    stem_stride: int = 3  # pixels per stem position
    reader: str = "ctc"  # text decoder: "causal" (character transformer) or "ctc" (its trunk alone)
    reader_dim: int = 128
    reader_depth: int = 3
    reader_heads: int = 4
    vocab: str = "en"  # the characters it reads (codec/mini/vocab.py): "en" or "zh" (mini-zh)
    geometry: Geometry = field(
        default_factory=lambda: Geometry(512, 512, 32, 8, 14, 32, 504, 6.62255859375))

    def __post_init__(self):
        g = self.geometry
        assert g.n_lines % self.lines_per_band == 0, "bands must tile the page's lines"
        assert self.lines_per_band == 1 or self.cols == 1, "a token is a line piece or whole lines"
        assert self.chunks_per_line % self.cols == 0 and self.positions % self.chunks_per_line == 0
        assert self.frames_per_line % self.chunks_per_line == 0
        assert self.D % self.chunks_per_token == 0
        assert self.reader in ("ctc", "causal"), f"unknown reader {self.reader!r}"
        get_vocab(self.vocab)  # an unknown name is an error here, not at the first decode

    @property
    def chars(self) -> Vocab:
        return get_vocab(self.vocab)

    @property
    def positions(self) -> int:  # encoder positions along one line
        return self.geometry.line_width // self.stem_stride // 2

    @property
    def frames_per_line(self) -> int:  # CTC frames: two per character cell of the line
        return 2 * int(self.geometry.line_width / self.geometry.cell_width)

    @property
    def chunks_per_token(self) -> int:
        return self.lines_per_band * self.chunks_per_line // self.cols

    @property
    def rows(self) -> int:
        return self.geometry.n_lines // self.lines_per_band

    @property
    def grid(self) -> tuple[int, int]:
        return (self.rows, self.cols)

    @property
    def n(self) -> int:
        return self.rows * self.cols

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> MiniConfig:
        d = dict(d)
        d["geometry"] = Geometry(**d["geometry"])
        return cls(**d)


class Block1d(nn.Module):
    """ConvNeXt-style block along a line: depthwise conv, norm, MLP, residual."""

    def __init__(self, dim: int, kernel: int = 7, mult: int = 2):
        super().__init__()
        self.dw = nn.Conv1d(dim, dim, kernel, padding=kernel // 2, groups=dim)
        self.norm = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, mult * dim), nn.GELU(), nn.Linear(mult * dim, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [N, C, P]
        y = self.norm(self.dw(x).transpose(1, 2))
        return x + self.mlp(y).transpose(1, 2)


class LineEncoder(nn.Module):
    """Page pixels -> per-line feature sequences [B, n_lines, P, dim]."""

    def __init__(self, cfg: MiniConfig):
        super().__init__()
        g, d = cfg.geometry, cfg.dim
        self.cfg = cfg
        # The stem sees a full line height: each position is a thin vertical slice of glyphs.
        self.stem = nn.Conv2d(1, d, kernel_size=(g.line_height, cfg.stem_stride),
                              stride=(g.line_height, cfg.stem_stride))
        self.down = nn.Conv1d(d, d, kernel_size=4, stride=2, padding=1)
        self.blocks = nn.Sequential(*[Block1d(d) for _ in range(cfg.depth)])
        self.norm = nn.LayerNorm(d)

    def forward(self, ink: torch.Tensor) -> torch.Tensor:  # ink [B, H, W] in [0, 1]
        g = self.cfg.geometry
        B = ink.shape[0]
        box = ink[:, g.top:g.top + g.n_lines * g.line_height, g.left:g.left + g.line_width]
        lines = box.reshape(B * g.n_lines, 1, g.line_height, g.line_width)
        x = F.gelu(self.stem(lines).squeeze(2))  # [B*L, d, W/stride]
        x = self.blocks(self.down(x))  # [B*L, d, P]
        return self.norm(x.transpose(1, 2)).reshape(B, g.n_lines, -1, self.cfg.dim)


class Compressor(nn.Module):
    """Per-line features -> one D-wide token per grid cell (the learned token compressor).

    Like DeepEncoder's strided conv compressor, but with the kernel as wide as a chunk of
    a line: each chunk's positions are flattened and projected to its own slice of the
    token, so a token is the concatenation of its chunks' codes (layout-given routing:
    the read-out never has to search the page for a character).
    """

    def __init__(self, cfg: MiniConfig):
        super().__init__()
        self.cfg = cfg
        K, width = cfg.chunks_per_token, cfg.positions // cfg.chunks_per_line * cfg.code
        self.code = nn.Linear(cfg.dim, cfg.code)
        self.weight = nn.Parameter(torch.randn(K, width, cfg.D // K) / width ** 0.5)
        self.bias = nn.Parameter(torch.zeros(K, cfg.D // K))
        self.norm = nn.LayerNorm(cfg.D, elementwise_affine=False)  # unit-scale tokens for the VST

    def forward(self, feats: torch.Tensor, codes: torch.Tensor | None = None) -> torch.Tensor:
        c = self.cfg  # feats [B, L, P, dim]
        B = feats.shape[0]
        z = self.code(feats) if codes is None else codes  # [B, L, P, code]
        per_tok = c.chunks_per_line // c.cols
        z = z.reshape(B, c.rows, c.lines_per_band, c.cols, per_tok, -1)
        z = z.permute(0, 1, 3, 2, 4, 5).reshape(B, c.n, c.chunks_per_token, -1)  # row-major cells
        tok = torch.einsum("bnki,kio->bnko", z, self.weight) + self.bias
        return self.norm(tok.reshape(B, c.n, c.D))


class GlyphProbe(nn.Module):
    """Training aid: names the character in each cell of a line from the encoder's
    per-position codes. It teaches the encoder to read glyphs where they are, before the
    compressor and read-out have learned anything."""

    def __init__(self, cfg: MiniConfig):
        super().__init__()
        self.cells = cfg.frames_per_line // 2
        self.head = nn.Linear(cfg.code, cfg.chars.n_classes)

    def features(self, codes: torch.Tensor) -> torch.Tensor:  # [B, L, P, code] -> [B*L, cells, code]
        B, L, P, C = codes.shape
        z = F.interpolate(codes.reshape(B * L, P, C).transpose(1, 2), size=self.cells,
                          mode="linear", align_corners=False)
        return z.transpose(1, 2)

    def forward(self, codes: torch.Tensor) -> torch.Tensor:  # [B, L, P, code] -> [B*L, cells, C]
        return self.head(self.features(codes))


class MixerBlock(nn.Module):
    """Pre-norm bidirectional transformer block over the page's tokens."""

    def __init__(self, D: int, heads: int = 4, mult: int = 2):
        super().__init__()
        self.n1, self.n2 = nn.LayerNorm(D), nn.LayerNorm(D)
        self.heads = heads
        self.qkv = nn.Linear(D, 3 * D)
        self.out = nn.Linear(D, D)
        self.mlp = nn.Sequential(nn.Linear(D, mult * D), nn.GELU(), nn.Linear(mult * D, D))

    def forward(self, x: torch.Tensor, own_slot: bool = False) -> torch.Tensor:
        """own_slot: every token attends to itself only (softmax over one key is 1, so the
        attention's output is the token's own value): no token reads another."""
        B, n, D = x.shape
        q, k, v = self.qkv(self.n1(x)).view(B, n, 3, self.heads, D // self.heads).unbind(2)
        if own_slot:
            a = v
        else:
            a = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2),
                                               v.transpose(1, 2)).transpose(1, 2)
        x = x + self.out(a.reshape(B, n, D))
        return x + self.mlp(self.n2(x))


#: How the read-out's mixer lets a page's token slots see each other.
#: page: every slot sees every slot (the shipped codec).
#: causal: row r is read from the page with every slot of a later row set to null (a VST's
#:     teacher-forced prediction for a later slot has seen the true token of row r, so the
#:     bidirectional mixer could read row r from it: this is the frozen reader without that
#:     leak, for leak-free scoring and decoder-CE).
#: line: every slot sees itself only (the trainable hierarchical reader, leak-free by
#:     construction).
SLOT_VIEWS = ("page", "causal", "line")


class FrameBlock(nn.Module):
    def __init__(self, dim: int, kernel: int = 5):
        super().__init__()
        self.conv = nn.Conv1d(dim, dim, kernel, padding=kernel // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [N, C, T]
        return x + self.conv(F.gelu(x))


class ReadOut(nn.Module):
    """Tokens [B, n, D] -> frame features, and CTC frame logits [B, rows, frames_per_band, classes].

    A bidirectional transformer block mixes the page's tokens; then each token slice is
    unfolded into the frames of its own chunk, and two conv blocks give each frame its
    neighbours' context before the character head.
    """

    def __init__(self, cfg: MiniConfig):
        super().__init__()
        self.cfg = cfg
        K = cfg.chunks_per_token
        self.chunk_frames = cfg.frames_per_line // cfg.chunks_per_line
        self.pos = nn.Parameter(torch.zeros(cfg.n, cfg.D))
        self.mix = MixerBlock(cfg.D)
        self.view = "page"  # the slot view (SLOT_VIEWS) `features` uses by default
        width = self.chunk_frames * cfg.frame_dim
        self.weight = nn.Parameter(torch.randn(K, cfg.D // K, width) / (cfg.D // K) ** 0.5)
        self.bias = nn.Parameter(torch.zeros(K, width))
        self.blocks = nn.Sequential(FrameBlock(cfg.frame_dim), FrameBlock(cfg.frame_dim))
        self.norm = nn.LayerNorm(cfg.frame_dim)
        self.head = nn.Linear(cfg.frame_dim, cfg.chars.n_classes)

    def causal_rows(self, tokens: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        """The mixer's output for chosen grid rows of each page (rows [B, k]), each row mixed
        from its page with every slot of a later row set to null: [B * k, cols, D]."""
        c = self.cfg
        B, n, D = tokens.shape
        row_of = torch.arange(n, device=tokens.device) // c.cols
        seen = row_of[None, None, :] <= rows[:, :, None]  # [B, k, n]
        variants = tokens[:, None] * seen[..., None].to(tokens.dtype)  # [B, k, n, D]
        y = self.mix(variants.flatten(0, 1) + self.pos)  # [B * k, n, D]
        slots = rows.reshape(-1, 1) * c.cols + torch.arange(c.cols, device=tokens.device)
        return y.gather(1, slots[..., None].expand(-1, -1, D))

    def unfold(self, x: torch.Tensor) -> torch.Tensor:
        """Mixed slots of grid rows [N, cols, D] -> frame features of their lines
        [N * lines_per_band, frames_per_line, frame_dim]: each slot is unfolded into the
        frames of its own chunks, then two conv blocks give each frame its neighbours."""
        c = self.cfg
        N, K = x.shape[0], c.chunks_per_token
        x = torch.einsum("bnki,kio->bnko", x.reshape(N, c.cols, K, -1), self.weight) + self.bias
        # frames of a band in reading order: tokens of the band (columns), chunks, frames
        x = x.reshape(N, c.cols * K * self.chunk_frames, c.frame_dim)
        x = self.blocks(x.transpose(1, 2)).transpose(1, 2)
        return self.norm(x).reshape(N * c.lines_per_band, c.frames_per_line, c.frame_dim)

    def features(self, tokens: torch.Tensor, view: str | None = None) -> torch.Tensor:
        """Tokens [B, n, D] -> frame features [B * n_lines, frames_per_line, frame_dim], under
        a slot view of the mixer (SLOT_VIEWS; default the module's own `view`)."""
        c = self.cfg
        view = view or self.view
        if view not in SLOT_VIEWS:
            raise ValueError(f"unknown slot view {view!r}; choose one of {', '.join(SLOT_VIEWS)}")
        B = tokens.shape[0]
        if view == "causal":
            rows = torch.arange(c.rows, device=tokens.device).expand(B, -1)
            x = self.causal_rows(tokens, rows)
        else:
            x = self.mix(tokens + self.pos, own_slot=view == "line")
        return self.unfold(x.reshape(B * c.rows, c.cols, c.D))

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        c = self.cfg
        return self.head(self.features(tokens)).reshape(tokens.shape[0], c.rows, -1,
                                                        c.chars.n_classes)


class MiniNet(nn.Module):
    def __init__(self, cfg: MiniConfig):
        super().__init__()
        self.cfg = cfg
        self.encoder = LineEncoder(cfg)
        self.compressor = Compressor(cfg)
        self.readout = ReadOut(cfg)
        self.reader = None
        if cfg.reader == "causal":
            self.reader = CausalReader(cfg.frame_dim, cfg.frames_per_line // 2, cfg.reader_dim,
                                       cfg.reader_depth, cfg.reader_heads, cfg.chars)

    def encode(self, ink: torch.Tensor) -> torch.Tensor:
        return self.compressor(self.encoder(ink))

    @torch.no_grad()
    def read_lines(self, tokens: torch.Tensor, temperature: float = 0.0,
                   generator: torch.Generator | None = None) -> list[list[str]]:
        """Text of every line of every page with the causal reader: [B][n_lines]; greedy,
        or sampled at a temperature > 0."""
        assert self.reader is not None, "this checkpoint has no causal reader"
        cells = self.line_cells(tokens.float())
        ids = self.reader.greedy(cells, max_len=cells.shape[1] + 4, temperature=temperature,
                                 generator=generator)
        lines = [self.cfg.chars.decode(s) for s in ids]
        L = self.cfg.geometry.n_lines
        return [lines[i:i + L] for i in range(0, len(lines), L)]

    def line_cells(self, tokens: torch.Tensor, view: str | None = None) -> torch.Tensor:
        """The causal reader's prefix for every line: [B * n_lines, cells, 2 * frame_dim]
        (`view`: the mixer's slot view, SLOT_VIEWS; default the read-out's own)."""
        return CausalReader.cell_features(self.readout.features(tokens, view))

    def causal_line_cells(self, tokens: torch.Tensor, which: torch.Tensor) -> torch.Tensor:
        """The prefix of chosen lines (which [B, k]), each read with every slot of a later
        grid row null: [B * k, cells, 2 * frame_dim]. Only those rows are mixed."""
        per = self.cfg.lines_per_band
        frames = self.readout.unfold(self.readout.causal_rows(tokens, which // per))
        pick = torch.arange(which.numel(), device=which.device) * per + (which % per).flatten()
        return CausalReader.cell_features(frames[pick])


def to_ink(pages: torch.Tensor) -> torch.Tensor:
    """uint8 [B, H, W, 3] (or [B, H, W]) -> float ink [B, H, W] in [0, 1], 1 = black."""
    if pages.dim() == 4:
        # The channel mean as three in-place adds: bit-identical to `.float().mean(-1)`
        # (sums of three bytes are exact in float32) and about 4x faster, because a float
        # copy of the RGB batch is never made; this used to be a fifth of encoding.
        x = pages[..., 0].float().add_(pages[..., 1]).add_(pages[..., 2]).div_(3)
    else:
        x = pages.float()
    return x.div_(255.0).neg_().add_(1.0)
