"""The mini optical codec's network: a line-aware conv encoder with a learned token
compressor, and a CTC read-out that unfolds each visual token into character frames.

Page -> tokens
    The content box of the page is cut into its text lines (we control the renderer, so
    the line pitch is known). A patch stem sees one full line height at a time, a few
    ConvNeXt-style 1D blocks run along each line, and a compressor (a strided "conv"
    whose kernel is the whole token cell, like DeepEncoder's 16x conv compressor taken
    to the limit) turns each cell of the token grid into one D-wide visual token.
    Grid rows are bands of `lines_per_band` lines; grid columns split a line.

Tokens -> text
    A small bidirectional transformer mixes the n tokens (so a line can see its
    neighbours, e.g. to tell a hard line break from a soft wrap), then each token is
    unfolded into K frames of character logits (+ a CTC blank). A band's frames, in reading
    order, are scored against the band's characters with CTC: a proper likelihood that
    sums over alignments, differentiable w.r.t. the tokens. Greedy decoding is the CTC
    best path, parallel over all frames.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch
import torch.nn as nn
import torch.nn.functional as F

from codec.mini.vocab import N_CLASSES


@dataclass(frozen=True)
class Geometry:
    """Where the text lines sit on a page (pixels), taken from the render preset."""

    height: int
    width: int
    top: int
    left: int
    line_height: int
    n_lines: int
    line_width: int  # pixels of one line the encoder reads (a multiple of 12)

    @classmethod
    def of(cls, render_config) -> "Geometry":
        pitch = render_config.line_pitch
        if pitch != int(pitch):
            raise ValueError(f"codec/mini needs an integer line pitch, got {pitch} px")
        return cls(render_config.height, render_config.width, render_config.margin_top,
                   render_config.margin_left, int(pitch), render_config.lines_per_page,
                   render_config.text_width // 12 * 12)


@dataclass(frozen=True)
class MiniConfig:
    mode: str = "small"
    lines_per_band: int = 1  # grid rows = n_lines / lines_per_band
    cols: int = 1  # grid columns: tokens per band (only when lines_per_band == 1)
    dim: int = 64  # the size dial: encoder width; everything else scales from it
    D: int = 256  # visual-token width
    code: int = 32  # per-position code width fed to the compressor
    depth: int = 2  # 1D blocks along a line
    frames_per_line: int = 160  # CTC frames per text line (>= 2 x characters per line)
    stem_stride: int = 3  # pixels per stem position
    geometry: Geometry = field(default_factory=lambda: Geometry(512, 512, 32, 8, 14, 32, 492))

    def __post_init__(self):
        g = self.geometry
        assert g.n_lines % self.lines_per_band == 0, "bands must tile the page's lines"
        assert self.lines_per_band == 1 or self.cols == 1, "a token is a line piece or whole lines"
        assert self.positions % self.cols == 0 and self.frames_per_token % 8 == 0

    @property
    def positions(self) -> int:  # encoder positions along one line
        return self.geometry.line_width // self.stem_stride // 2

    @property
    def rows(self) -> int:
        return self.geometry.n_lines // self.lines_per_band

    @property
    def grid(self) -> tuple[int, int]:
        return (self.rows, self.cols)

    @property
    def n(self) -> int:
        return self.rows * self.cols

    @property
    def frames_per_token(self) -> int:
        return self.frames_per_line * self.lines_per_band // self.cols

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "MiniConfig":
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
    """Per-line features -> one D-wide token per grid cell (the learned token compressor)."""

    def __init__(self, cfg: MiniConfig):
        super().__init__()
        self.cfg = cfg
        cell = cfg.lines_per_band * (cfg.positions // cfg.cols) * cfg.code
        self.code = nn.Linear(cfg.dim, cfg.code)
        self.proj = nn.Linear(cell, cfg.D)
        self.norm = nn.LayerNorm(cfg.D, elementwise_affine=False)  # unit-scale tokens for the VST

    def forward(self, feats: torch.Tensor, codes: torch.Tensor | None = None) -> torch.Tensor:
        c = self.cfg  # feats [B, L, P, dim]
        B = feats.shape[0]
        z = self.code(feats) if codes is None else codes  # [B, L, P, code]
        z = z.reshape(B, c.rows, c.lines_per_band, c.cols, c.positions // c.cols, c.code)
        z = z.permute(0, 1, 3, 2, 4, 5).reshape(B, c.n, -1)  # row-major grid cells
        return self.norm(self.proj(z))


class GlyphProbe(nn.Module):
    """Training aid: reads each line's per-position codes back out as the canonical CTC
    path (the character under each frame). It teaches the encoder to name glyphs where
    they are, before the compressor and read-out have learned anything."""

    def __init__(self, cfg: MiniConfig):
        super().__init__()
        self.frames = cfg.frames_per_line
        self.head = nn.Linear(cfg.code, N_CLASSES)

    def forward(self, codes: torch.Tensor) -> torch.Tensor:  # [B, L, P, code] -> [B*L, F, C]
        B, L, P, C = codes.shape
        z = F.interpolate(codes.reshape(B * L, P, C).transpose(1, 2), size=self.frames,
                          mode="linear", align_corners=False)
        return self.head(z.transpose(1, 2))


class MixerBlock(nn.Module):
    """Pre-norm bidirectional transformer block over the page's tokens."""

    def __init__(self, D: int, heads: int = 4, mult: int = 2):
        super().__init__()
        self.n1, self.n2 = nn.LayerNorm(D), nn.LayerNorm(D)
        self.heads = heads
        self.qkv = nn.Linear(D, 3 * D)
        self.out = nn.Linear(D, D)
        self.mlp = nn.Sequential(nn.Linear(D, mult * D), nn.GELU(), nn.Linear(mult * D, D))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, n, D = x.shape
        q, k, v = self.qkv(self.n1(x)).view(B, n, 3, self.heads, D // self.heads).unbind(2)
        a = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))
        x = x + self.out(a.transpose(1, 2).reshape(B, n, D))
        return x + self.mlp(self.n2(x))


class ReadOut(nn.Module):
    """Tokens [B, n, D] -> frame logits [B, rows, frames_per_band, classes] (CTC, blank = 0)."""

    def __init__(self, cfg: MiniConfig):
        super().__init__()
        self.cfg = cfg
        self.pos = nn.Parameter(torch.zeros(cfg.n, cfg.D))
        self.mix = MixerBlock(cfg.D)
        self.width = width = cfg.dim
        self.unfold = nn.Linear(cfg.D, cfg.frames_per_token // 8 * width)
        chans = [width, width * 3 // 4, width // 2, width // 2]
        self.ups = nn.ModuleList(nn.Conv1d(a, b, 3, padding=1) for a, b in zip(chans, chans[1:]))
        self.norm = nn.LayerNorm(chans[-1])
        self.head = nn.Linear(chans[-1], N_CLASSES)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        c = self.cfg
        B = tokens.shape[0]
        x = self.mix(tokens + self.pos)
        x = self.unfold(x).view(B * c.n, c.frames_per_token // 8, self.width).transpose(1, 2)
        for conv in self.ups:  # x2 nearest upsampling then conv, three times: 8x frames
            x = F.gelu(conv(F.interpolate(x, scale_factor=2.0, mode="nearest")))
        x = self.head(self.norm(x.transpose(1, 2)))  # [B*n, K, classes]
        return x.reshape(B, c.rows, c.cols * c.frames_per_token, N_CLASSES)


class MiniNet(nn.Module):
    def __init__(self, cfg: MiniConfig):
        super().__init__()
        self.cfg = cfg
        self.encoder = LineEncoder(cfg)
        self.compressor = Compressor(cfg)
        self.readout = ReadOut(cfg)

    def encode(self, ink: torch.Tensor) -> torch.Tensor:
        return self.compressor(self.encoder(ink))


def to_ink(pages: torch.Tensor) -> torch.Tensor:
    """uint8 [B, H, W, 3] (or [B, H, W]) -> float ink [B, H, W] in [0, 1], 1 = black."""
    x = pages.float()
    if x.dim() == 4:
        x = x.mean(-1)
    return 1.0 - x / 255.0
