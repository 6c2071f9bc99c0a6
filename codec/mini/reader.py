"""The mini codec's text decoder: a small causal character transformer whose prefix is the
page's visual tokens, unfolded along the line it reads.

One sequence per text line of the page:

    [ c_0 c_1 ... c_{C-1} | BOS x_0 x_1 ... x_k ]  ->  predicts  x_0 x_1 ... x_k EOS
      prefix: the line's C cell vectors            characters, causal

The prefix is computed from the visual tokens alone: the read-out trunk (a bidirectional
mixer over all of the page's tokens, then each token unfolded into the frames of its own
line chunk) gives two frames per character cell; a pair of frames becomes one prefix
vector. Prefix positions see each other; character positions see the whole prefix and
the characters before them.

Rotary positions are in character cells: prefix vector c sits at position c and the step
that predicts a character sits at the cell that character starts in: the sum of the
widths of the characters before it (monospace layout: one cell each, two for a wide CJK
form, `Vocab.widths`; for text without wide forms the j-th character is in cell j).
Relative positions then tell every step where on the line to look, which is what a
decoder from scratch otherwise learns slowly (see the design's probe). Counting steps
instead of cells put every character after a hanzi one cell further off its glyph.
The likelihood is exact teacher forcing, differentiable w.r.t. the
tokens; decoding is greedy with a KV cache, all lines of all pages in parallel.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from codec.mini import vocab

BOS = EOS = vocab.BLANK  # the CTC blank is never a character, so it can mark line ends


def rotary(x: torch.Tensor, pos: torch.Tensor, inv_freq: torch.Tensor) -> torch.Tensor:
    """Rotate pairs of channels of x [N, H, S, hd] by angles pos * inv_freq (pos [S], or
    [N, S]: each row its own positions)."""
    ang = pos.float()[..., None] * inv_freq  # [S, hd/2] or [N, S, hd/2]
    if ang.dim() == 3:
        ang = ang[:, None]  # every head of a row
    cos, sin = ang.cos().to(x.dtype), ang.sin().to(x.dtype)
    a, b = x[..., 0::2], x[..., 1::2]
    return torch.stack((a * cos - b * sin, a * sin + b * cos), dim=-1).flatten(-2)


class CausalBlock(nn.Module):
    def __init__(self, dim: int, heads: int, mult: int = 4):
        super().__init__()
        self.heads = heads
        self.n1, self.n2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.out = nn.Linear(dim, dim)
        self.mlp = nn.Sequential(nn.Linear(dim, mult * dim), nn.GELU(), nn.Linear(mult * dim, dim))

    def qkv_heads(self, x: torch.Tensor, pos: torch.Tensor, inv_freq: torch.Tensor):
        N, S, d = x.shape
        q, k, v = self.qkv(self.n1(x)).view(N, S, 3, self.heads, d // self.heads) \
            .permute(2, 0, 3, 1, 4)
        return rotary(q, pos, inv_freq), rotary(k, pos, inv_freq), v

    def finish(self, x: torch.Tensor, attn: torch.Tensor) -> torch.Tensor:
        N, H, S, hd = attn.shape
        x = x + self.out(attn.transpose(1, 2).reshape(N, S, H * hd))
        return x + self.mlp(self.n2(x))

    def forward(self, x, pos, inv_freq, mask):
        q, k, v = self.qkv_heads(x, pos, inv_freq)
        return self.finish(x, F.scaled_dot_product_attention(q, k, v, attn_mask=mask))


class CausalReader(nn.Module):
    """Cell features of a line [N, C, 2*frame_dim] + characters -> next-character logits."""

    def __init__(self, frame_dim: int, cells: int, dim: int = 128, depth: int = 3, heads: int = 4,
                 chars: vocab.Vocab = vocab.EN):
        super().__init__()
        self.cells = cells
        self.chars = chars
        self.prefix = nn.Sequential(nn.LayerNorm(2 * frame_dim), nn.Linear(2 * frame_dim, dim))
        self.embed = nn.Embedding(chars.n_classes, dim)
        self.blocks = nn.ModuleList([CausalBlock(dim, heads) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, chars.n_classes)
        self.register_buffer("widths", torch.tensor(chars.widths), persistent=False)
        hd = dim // heads
        # Periods from ~6 cells up to ~thousands: fine alignment and whole-line context.
        self.register_buffer("inv_freq", 1.0 / (1000.0 ** (torch.arange(0, hd, 2).float() / hd)),
                             persistent=False)

    def cell_positions(self, ids_in: torch.Tensor) -> torch.Tensor:
        """The cell each step's character starts in: ids_in [N, L] (BOS first, then the
        characters read so far) -> [N, L], the widths of the characters before it summed."""
        w = self.widths[ids_in]
        return w.cumsum(1) - w[:, :1]

    @staticmethod
    def cell_features(frames: torch.Tensor) -> torch.Tensor:
        """Frame features [N, 2*C, fd] -> cell features [N, C, 2*fd] (two frames per cell)."""
        N, T, fd = frames.shape
        return frames.reshape(N, T // 2, 2 * fd)

    def forward(self, cells: torch.Tensor, ids_in: torch.Tensor) -> torch.Tensor:
        """Teacher forcing: cells [N, C, 2fd], ids_in [N, L] (BOS first) -> logits [N, L, V]."""
        P, L = cells.shape[1], ids_in.shape[1]
        x = torch.cat([self.prefix(cells), self.embed(ids_in)], dim=1)
        N = cells.shape[0]
        pos = torch.cat([torch.arange(P, device=x.device).expand(N, P),
                         self.cell_positions(ids_in)], dim=1)
        i = torch.arange(P + L, device=x.device)
        # prefix: visible to all; characters: causal
        mask = (i[None, :] < P) | (i[None, :] <= i[:, None])
        for block in self.blocks:
            x = block(x, pos, self.inv_freq, mask)
        return self.head(self.norm(x[:, P:]))

    @torch.no_grad()
    def greedy(self, cells: torch.Tensor, max_len: int, temperature: float = 0.0,
               generator: torch.Generator | None = None) -> list[list[int]]:
        """Greedy decoding of every line at once with a KV cache; ids up to EOS (excluded).
        With a temperature > 0 each character is sampled instead (the reader's own
        distribution given the cells)."""
        N, P = cells.shape[:2]
        x = self.prefix(cells)
        pos = torch.arange(P, device=x.device)
        cache = []  # per layer: K and V with room for every step, filled in place
        for block in self.blocks:  # the prefix pass: bidirectional within the prefix
            q, k, v = block.qkv_heads(x, pos, self.inv_freq)
            kv = k.new_zeros(2, *k.shape[:2], P + max_len, k.shape[-1])
            kv[0, :, :, :P], kv[1, :, :, :P] = k, v
            cache.append(kv)
            x = block.finish(x, F.scaled_dot_product_attention(q, k, v))
        token = torch.full((N, 1), BOS, dtype=torch.long, device=x.device)
        column = torch.zeros(N, 1, dtype=torch.long, device=x.device)  # cell of the next char
        out = [[] for _ in range(N)]
        active = torch.arange(N)  # lines still being read; finished ones leave the batch
        for t in range(max_len):
            h = self.embed(token)
            end = P + t + 1
            for block, kv in zip(self.blocks, cache):
                q, k, v = block.qkv_heads(h, column, self.inv_freq)
                kv[0, :, :, end - 1:end], kv[1, :, :, end - 1:end] = k, v
                h = block.finish(h, F.scaled_dot_product_attention(q, kv[0, :, :, :end],
                                                                    kv[1, :, :, :end]))
            logits = self.head(self.norm(h))  # [A, 1, V]
            if temperature > 0:
                probs = torch.softmax(logits[:, 0].float() / temperature, -1).cpu()
                token = torch.multinomial(probs, 1, generator=generator).to(logits.device)
            else:
                token = logits.argmax(-1)  # [A, 1]
            column = column + self.widths[token]
            ids = token[:, 0].tolist()
            going = [i for i, t_id in enumerate(ids) if t_id != EOS]
            for i in going:
                out[active[i]].append(ids[i])
            if not going:
                break
            if len(going) < len(ids):
                keep = torch.tensor(going, device=x.device)
                active, token, column = active[keep.cpu()], token[keep], column[keep]
                cache = [kv[:, keep] for kv in cache]
        return out


def teacher_forcing(texts: list[str], chars: vocab.Vocab = vocab.EN
                    ) -> tuple[torch.Tensor, torch.Tensor, list[int]]:
    """Inputs [N, L] (BOS + characters), targets [N, L] (characters + EOS, -100 padding),
    and the number of unknown characters per text."""
    ids = [chars.encode(t) for t in texts]
    L = max(len(s) for s in ids) + 1
    inputs = torch.full((len(ids), L), BOS, dtype=torch.long)
    targets = torch.full((len(ids), L), -100, dtype=torch.long)
    for r, s in enumerate(ids):
        if s:
            inputs[r, 1:len(s) + 1] = torch.tensor(s)
            targets[r, :len(s)] = torch.tensor(s)
        targets[r, len(s)] = EOS
    return inputs, targets, [chars.n_unknown(t) for t in texts]


def line_nll(reader: CausalReader, cells: torch.Tensor, texts: list[str]) -> torch.Tensor:
    """NLL (nats) of each line's text, EOS included, given its cell features. [N]

    Unknown characters are charged log(2^16) on top of the model's UNK probability."""
    inputs, targets, unknown = teacher_forcing(texts, reader.chars)
    logits = reader(cells, inputs.to(cells.device)).float()
    nll = F.cross_entropy(logits.flatten(0, 1), targets.flatten().to(cells.device),
                          ignore_index=-100, reduction="none").view(targets.shape).sum(1)
    return nll + vocab.UNK_NATS * torch.tensor(unknown, dtype=nll.dtype, device=nll.device)
