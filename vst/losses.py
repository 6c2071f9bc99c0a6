"""Training objectives. Every term has its own weight and is returned for logging.

Per-position terms are averaged within each window, then over windows, so a global
batch split across DDP ranks gives the same loss (and gradient) as one process.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Sequence

import torch
import torch.nn.functional as F

from vst.data import Batch
from vst.heads import energy_score
from vst.model import VST


@dataclass(frozen=True)
class LossConfig:
    mse: float = 1.0  # lambda1: mean squared error per dimension, ||x_hat - x||^2 / D
    cos: float = 1.0  # lambda2: 1 - cos(x_hat, x)
    dec: float = 0.0  # decoder-CE: nats per byte of the true page text under the frozen decoder
    norm: float = 0.0  # lambda3: (||x_hat|| - alpha)^2 (choose ~1/alpha^2 for an O(1) term)
    energy: float = 1.0  # energy score (only with the energy head)
    energy_beta: float = 1.0
    dec_pages: int = 1  # k: decoder-CE on the last k complete pages of each window

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def window_mean(x: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Mean over valid positions within each window, then over windows."""
    v = valid.to(x.dtype)
    return ((x * v).sum(1) / v.sum(1).clamp(min=1)).mean()


def scored_pages(pages: Sequence[tuple[int, int, str]], first_valid: bool, k: int) -> list[int]:
    """The last k pages of a window whose every token was predicted from real context."""
    whole = [i for i, (t0, _, _) in enumerate(pages) if t0 > 0 or first_valid]
    return whole[-k:] if k > 0 else []


def gather_pages(x: torch.Tensor, batch: Batch, k: int) -> tuple[torch.Tensor, list[str]]:
    """Predicted (or true) tokens of the scored pages: [M, n, D] and their texts."""
    rows, texts = [], []
    for b, pages in enumerate(batch.pages):
        for i in scored_pages(pages, bool(batch.first_valid[b]), k):
            t0, length, text = pages[i]
            rows.append(x[b, t0 : t0 + length])
            texts.append(text)
    if not rows:
        return x.new_zeros(0, 1, x.size(-1)), []
    return torch.stack(rows), texts


def decoder_nll(codec, tokens: torch.Tensor, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """(nll nats [M], bytes [M]) of texts given tokens, through the frozen codec decoder.

    The codec may live on another device (the mini codec is CPU-only): tokens go there
    and the NLL comes back, with the gradient path intact.
    """
    dev = getattr(codec, "device", tokens.device)
    out = codec.text_nll(tokens.float().to(dev), texts)
    return out.nll.to(tokens.device), out.n_bytes.to(tokens.device).float()


def vector_losses(
    model: VST, h: torch.Tensor, batch: Batch, cfg: LossConfig, codec=None
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    mcfg = model.cfg
    x, valid = batch.targets, batch.valid
    terms: dict[str, torch.Tensor] = {}
    total = h.new_zeros(())
    if mcfg.head == "energy":
        samples = model.head.sample(h, mcfg.energy_samples).float()
        terms["energy"] = window_mean(energy_score(samples, x, cfg.energy_beta), valid)
        total = total + cfg.energy * terms["energy"]
        x_hat = samples[0]  # one sample stands in for "the prediction" below
    else:
        x_hat = model.head(h).float()
    terms["mse"] = window_mean((x_hat - x).square().mean(-1), valid)
    terms["cos"] = window_mean(1 - F.cosine_similarity(x_hat, x, dim=-1, eps=1e-6), valid)
    terms["norm"] = window_mean((x_hat.norm(dim=-1) - mcfg.alpha).square(), valid)
    total = total + cfg.mse * terms["mse"] + cfg.cos * terms["cos"] + cfg.norm * terms["norm"]
    if cfg.dec > 0:
        if codec is None:
            raise ValueError("the decoder-CE loss needs a codec")
        pred, texts = gather_pages(x_hat, batch, cfg.dec_pages)
        if texts:
            nll, nbytes = decoder_nll(codec, pred, texts)
            terms["dec"] = (nll / nbytes.clamp(min=1)).mean()  # nats per byte, mean over pages
            terms["dec_bpb"] = (nll.sum() / (math.log(2) * nbytes.sum().clamp(min=1))).detach()
            total = total + cfg.dec * terms["dec"]
    terms["loss"] = total
    return total, {k: v.detach() for k, v in terms.items()}


def text_losses(
    model: VST, h: torch.Tensor, batch: Batch
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    logits = model.lm_head(h).float()
    ce = F.cross_entropy(logits.transpose(1, 2), batch.targets, reduction="none")
    loss = window_mean(ce, batch.valid)
    v = batch.valid.float()
    bpb = (ce * v).sum() / (math.log(2) * (batch.n_bytes * v).sum().clamp(min=1))
    return loss, {"loss": loss.detach(), "ce": loss.detach(), "bpb": bpb.detach()}


def compute_losses(model: VST, batch: Batch, cfg: LossConfig, codec=None, ddp_model=None):
    """Forward + loss. `ddp_model` (the DDP wrapper) runs the trunk when given."""
    trunk = ddp_model if ddp_model is not None else model
    h = trunk(batch.inputs, batch.bos, batch.positions, batch.doc_ids)
    if model.cfg.modality == "text":
        return text_losses(model, h, batch)
    return vector_losses(model, h, batch, cfg, codec)
