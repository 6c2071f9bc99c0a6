"""Context-compression arms at equal positions (issue #16; the protocol of arXiv 2512.03643).

One trunk (a text-modality `VST`: byte embeddings, the blocks, one byte LM head) reads a
document's context in the form its arm gives it, then predicts a target text byte by byte
through the shared head. The target is the continuation (language modelling) or the
context itself (reconstruction). Arms differ only in the context's representation:

| arm | context positions | made from |
|---|---|---|
| `visual` | P = pages * n | the frozen codec's tokens, through a learned linear projection |
| `mean_pool` | P | byte embeddings averaged over the span each visual token covers |
| `conv` | P | a strided conv1d encoder over byte embeddings, pooled to P windows |
| `truncation` | P | the last P context bytes, embedded |
| `full` | all context bytes | the whole context, embedded (the upper bound) |

Sequence layout: [context positions][doc_start][target bytes 0..L-2]; position
Tc + t predicts target byte t. Attention is causal, so no context position can read a
target byte, and target position Tc + t reads target bytes < t only. Left padding of
the full arm's shorter contexts is masked out of every key.

    from vst.compression import ArmsModel, arms_batch
    model = ArmsModel("visual", flavour("debug", modality="text", rope="1d"), P=32, D=256)
    loss = model.loss(arms_batch(pairs, range(8), "visual"))
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from vst.config import ModelConfig
from vst.model import VST
from vst.rope import cos_sin, rope_angles

ARMS = ("visual", "mean_pool", "conv", "truncation", "full")
TEXT_ONLY = ("full",)  # arms that read neither the codec's tokens nor its P
PAD = 0  # the padding byte (never scored: masks say which bytes are real)


@dataclass
class ArmsBatch:
    vis: torch.Tensor  # [B, P, D] codec tokens of the context pages
    ctx: torch.Tensor  # [B, Lc] long: context bytes, right-padded
    ctx_len: torch.Tensor  # [B] long
    seg: torch.Tensor  # [B, Lc] long: visual token showing each byte; -1 on padding
    tgt: torch.Tensor  # [B, Lt] long: the bytes to predict, right-padded
    tgt_valid: torch.Tensor  # [B, Lt] bool


def arms_batch(pairs, index: Sequence[int], target: str = "continuation",
               length: int | None = None, scored: bool = False) -> ArmsBatch:
    """A batch from `vst.compression_data.Pairs` rows `index`; target "continuation" or
    "context" (reconstruction), cut to its first `length` bytes when given. `scored`:
    only the continuation bytes every arm and the frozen decoder are scored on count
    (`Pairs.score_len(length)`: the first whole lines of the continuation page)."""
    index = np.asarray(list(index))
    lens = pairs.ctx_len[index].astype(np.int64)
    L = int(lens.max())
    ctx = torch.from_numpy(pairs.ctx[index, :L].astype(np.int64))
    if target == "continuation":
        tgt = torch.from_numpy(pairs.cont[index].astype(np.int64))
        valid = torch.ones_like(tgt, dtype=torch.bool)
    elif target == "context":
        tgt = ctx.clone()
        valid = torch.arange(L)[None] < torch.from_numpy(lens)[:, None]
    else:
        raise ValueError(f"target is 'continuation' or 'context', got {target!r}")
    if length is not None:
        tgt, valid = tgt[:, :length], valid[:, :length]
    if scored:
        if target != "continuation" or length is None:
            raise ValueError("scored bytes are a cut of the continuation: give its length")
        n = torch.from_numpy(pairs.score_len(length)[index])
        valid = valid & (torch.arange(tgt.size(1))[None] < n[:, None])
    return ArmsBatch(vis=torch.from_numpy(pairs.vis[index].astype(np.float32)), ctx=ctx,
                     ctx_len=torch.from_numpy(lens),
                     seg=torch.from_numpy(pairs.seg[index, :L].astype(np.int64)),
                     tgt=tgt, tgt_valid=valid)


def segment_mean(x: torch.Tensor, seg: torch.Tensor, P: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean of x [B, L, d] over each segment id 0..P-1 of seg [B, L] (-1: ignored):
    ([B, P, d] means, [B, P] bool: the segment has any byte)."""
    B, L, d = x.shape
    keep = seg >= 0
    idx = seg.clamp(min=0)
    sums = x.new_zeros(B, P, d).scatter_add(1, idx[..., None].expand(B, L, d),
                                            x * keep[..., None].to(x.dtype))
    counts = x.new_zeros(B, P).scatter_add(1, idx, keep.to(x.dtype))
    return sums / counts.clamp(min=1)[..., None], counts > 0


def equal_windows(ctx_len: torch.Tensor, L: int, P: int) -> torch.Tensor:
    """Segment ids [B, L] that cut each context's real bytes into P equal windows."""
    i = torch.arange(L, device=ctx_len.device)[None]
    seg = i * P // ctx_len.clamp(min=1)[:, None]
    return torch.where(i < ctx_len[:, None], seg.clamp(max=P - 1), torch.full_like(seg, -1))


class MeanPool(nn.Module):
    """Byte embeddings averaged over the span of each visual token; a token whose span
    holds no text (a blank band) reads a learned empty vector."""

    def __init__(self, d: int, P: int) -> None:
        super().__init__()
        self.P = P
        self.proj = nn.Linear(d, d)
        self.empty = nn.Parameter(torch.zeros(d))

    def forward(self, emb: torch.Tensor, seg: torch.Tensor) -> torch.Tensor:
        mean, full = segment_mean(emb, seg, self.P)
        return torch.where(full[..., None], self.proj(mean), self.empty.to(mean.dtype))


class ConvCompressor(nn.Module):
    """A learned compressor at exactly P positions: byte embeddings -> a strided conv1d
    (kernel = stride = `stride`: one vector per `stride` bytes) -> a residual conv1d
    (kernel 3) -> the mean over P equal windows of each context's real vectors -> linear.

    Why strided first: a same-length conv over all ~2,400 context bytes cost 10x the
    visual arm's whole training step (1.3e9 vs 1.3e8 FLOPs counted on a toy batch) and so
    got a tenth of the steps at equal FLOPs; striding by 4 cuts the encoder's cost 4x.
    """

    def __init__(self, d: int, P: int, stride: int = 4) -> None:
        super().__init__()
        self.P, self.stride = P, stride
        self.down = nn.Conv1d(d, d, stride, stride=stride)
        self.mix = nn.Conv1d(d, d, 3, padding=1)
        self.proj = nn.Linear(d, d)

    def forward(self, emb: torch.Tensor, ctx_len: torch.Tensor) -> torch.Tensor:
        B, L, d = emb.shape
        pad = -L % self.stride
        real = (torch.arange(L, device=emb.device)[None] < ctx_len[:, None])[..., None]
        h = F.pad((emb * real).transpose(1, 2), (0, pad))  # padding bytes read as zeros
        h = F.gelu(self.down(h))
        n = (ctx_len + self.stride - 1) // self.stride  # vectors holding real bytes
        keep = (torch.arange(h.size(2), device=emb.device)[None] < n[:, None])[:, None]
        h = h * keep
        h = (h + F.gelu(self.mix(h))) * keep  # padding zeroed: a context never reads it
        pooled, _ = segment_mean(h.transpose(1, 2), equal_windows(n, h.size(2), self.P), self.P)
        return self.proj(pooled)


class ArmsModel(nn.Module):
    """The shared trunk and head, and the context encoder of one arm."""

    def __init__(self, arm: str, cfg: ModelConfig, P: int, D: int) -> None:
        super().__init__()
        if arm not in ARMS:
            raise ValueError(f"unknown arm {arm!r}; choose from {', '.join(ARMS)}")
        if cfg.modality != "text" or cfg.vocab_size < 256:
            raise ValueError("the arms' trunk is a byte-level text model (modality text)")
        self.arm, self.P = arm, P
        self.trunk = VST(cfg.with_(rope="1d"))
        d = cfg.d_model
        if arm == "visual":
            self.enc = nn.Linear(D, d)
        elif arm == "mean_pool":
            self.enc = MeanPool(d, P)
        elif arm == "conv":
            self.enc = ConvCompressor(d, P)

    def context(self, b: ArmsBatch) -> tuple[torch.Tensor, torch.Tensor]:
        """The context as the trunk reads it: ([B, Tc, d] vectors, [B, Tc] bool real).

        Reads only the context fields of the batch (never `tgt`)."""
        embed = self.trunk.embed
        B = b.ctx.size(0)
        if self.arm == "visual":
            x = self.enc(b.vis)
        elif self.arm == "mean_pool":
            x = self.enc(embed(b.ctx), b.seg)
        elif self.arm == "conv":
            x = self.enc(embed(b.ctx), b.ctx_len)
        else:
            n = self.P if self.arm == "truncation" else int(b.ctx_len.max())
            # the last n bytes of each context, right-aligned (left-padded where shorter)
            start = b.ctx_len[:, None] - n + torch.arange(n, device=b.ctx.device)[None]
            real = start >= 0
            ids = b.ctx.gather(1, start.clamp(min=0)) * real
            return embed(ids), real
        return x, torch.ones(B, x.size(1), dtype=torch.bool, device=x.device)

    def forward(self, b: ArmsBatch) -> torch.Tensor:
        """Byte logits [B, Lt, 256]: logits[:, t] predicts b.tgt[:, t]."""
        ctx, real = self.context(b)
        B, Tc, _ = ctx.shape
        tr = self.trunk
        start = tr.doc_start.to(ctx.dtype).expand(B, 1, -1)
        x = torch.cat([ctx, start, tr.embed(b.tgt[:, :-1])], 1)
        T = x.size(1)
        keys = torch.cat([real, real.new_ones(B, T - Tc)], 1)
        # positions count real tokens only, so left padding does not shift the context
        pos = (keys.long().cumsum(1) - 1).clamp(min=0)
        cos, sin = cos_sin(rope_angles(pos, tr.cfg.head_dim, tr.cfg.rope_base), x.dtype)
        if bool(real.all()):
            mask = "causal"
        else:
            causal = torch.ones(T, T, dtype=torch.bool, device=x.device).tril()
            mask = causal & (keys[:, None, :] | torch.eye(T, dtype=torch.bool,
                                                          device=x.device))  # self: no NaN rows
            mask = mask[:, None]
        for block in tr.blocks:
            x = block(x, cos, sin, mask, None)
        return tr.lm_head(tr.norm(x[:, Tc:])).float()

    def nll(self, b: ArmsBatch) -> tuple[torch.Tensor, torch.Tensor]:
        """(summed NLL in nats over real target bytes, number of those bytes)."""
        logits = self(b)
        nll = F.cross_entropy(logits.transpose(1, 2), b.tgt, reduction="none")
        return (nll * b.tgt_valid).sum(), b.tgt_valid.sum()

    def loss(self, b: ArmsBatch) -> torch.Tensor:
        total, count = self.nll(b)
        return total / count.clamp(min=1)

    @torch.no_grad()
    def greedy(self, b: ArmsBatch, length: int) -> torch.Tensor:
        """Greedy bytes [B, length] after the context (reconstruction read-out); re-runs
        the trunk per byte, which is affordable at the sizes this harness trains."""
        B = b.ctx.size(0)
        out = torch.zeros(B, length + 1, dtype=torch.long, device=b.ctx.device)
        for t in range(length):
            step = ArmsBatch(b.vis, b.ctx, b.ctx_len, b.seg, out[:, : t + 2],
                             torch.ones(B, t + 2, dtype=torch.bool))
            out[:, t] = self(step)[:, t].argmax(-1)
        return out[:, :length]


def context_positions(arm: str, P: int, ctx_len: int) -> int:
    """Positions the trunk spends on a context of ctx_len bytes."""
    return ctx_len if arm == "full" else P
