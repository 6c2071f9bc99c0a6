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

from codec.base import utf8_bytes
from vst.data import Batch
from vst.heads import energy_score, pick
from vst.model import VST


@dataclass(frozen=True)
class LossConfig:
    mse: float = 1.0  # lambda1: mean squared error per dimension, ||x_hat - x||^2 / D
    cos: float = 1.0  # lambda2: 1 - cos(x_hat, x)
    dec: float = 0.0  # decoder-CE: nats per byte of the true page text under the frozen decoder
    norm: float = 0.0  # lambda3: (||x_hat|| - alpha)^2 (choose ~1/alpha^2 for an O(1) term)
    energy: float = 1.0  # energy score (only with the energy head)
    energy_beta: float = 1.0
    dec_pages: int = 1  # k: decoder-CE on the last k complete pages of each window; -1: all
    dec_lines: int = 0  # lines of each scored page read by the decoder (a sample); 0: all
    reader_input: str = "vst"  # vst: decoder-CE reads the predictions; null: null tokens (the
    # reader-only control: only a trainable reader learns)
    leak_free: bool = True  # decoder-CE reads each line without the slots after it, where the
    # decoder reads by lines (Codec.causal_text_nll): a teacher-forced prediction for a later
    # slot has seen this line's true token, and a VST trained through a page-wide reader
    # learns to pass it on (on templated pages: 0.90x the prior read page-wide, 0.975x
    # leak-free; tests/test_vst_recipe.py)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def window_mean(x: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Mean over valid positions within each window, then over windows."""
    v = valid.to(x.dtype)
    return ((x * v).sum(1) / v.sum(1).clamp(min=1)).mean()


def scored_pages(pages: Sequence[tuple[int, int, str]], first_valid: bool, k: int) -> list[int]:
    """The last k pages of a window whose every token was predicted from real context
    (k < 0: all of them)."""
    whole = [i for i, (t0, _, _) in enumerate(pages) if t0 > 0 or first_valid]
    if k < 0:
        return whole
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


def decoder_nll(
    codec, tokens: torch.Tensor, texts: list[str], lines: int = 0, causal: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """(nll nats [M], bytes [M]) of texts given tokens, through the frozen codec decoder;
    with `lines` > 0, of a random sample of that many lines per page (a cheaper estimate);
    `causal`: each line read without the slots after it (`Codec.causal_text_nll`).

    The codec may live on another device (the mini codec is CPU-only): tokens go there
    and the NLL comes back, with the gradient path intact.
    """
    dev = getattr(codec, "device", tokens.device)
    if lines > 0:
        out = codec.text_nll_sample(tokens.float().to(dev), texts, lines, causal=causal)
    elif causal:
        out = codec.causal_text_nll(tokens.float().to(dev), texts)
    else:
        out = codec.text_nll(tokens.float().to(dev), texts)
    return out.nll.to(tokens.device), out.n_bytes.to(tokens.device).float()


def gate_per_line(values: torch.Tensor, n_lines: int) -> torch.Tensor:
    """Per-token values [M, n, ...] (gate or mixture logits) -> per line of the page
    [M, n_lines, ...]: line i takes the value of the token that holds it (row-major tokens
    over the page's lines); a codec without lines (n_lines 1) takes the mean."""
    if n_lines == 1:
        return values.mean(1, keepdim=True)
    idx = torch.arange(n_lines, device=values.device) * values.size(1) // n_lines
    return values[:, idx]


def mixed_line_nll(codec, pred: torch.Tensor, texts: list[str], which: torch.Tensor | None,
                   causal: bool, gates: torch.Tensor | None = None,
                   mix: torch.Tensor | None = None) -> torch.Tensor:
    """NLL [M, k] of the lines `which` [M, k] (None: all) of each page under a mixture of
    pages, each line weighted by the token that holds it; a proper likelihood per line.

    gates [M, n] (pred [M, n, D]): pi * p(line | pred) + (1 - pi) * p(line | null), whose
    null branch is constant and carries no gradient. mix [M, n, K] (pred [M, n, K, D], K
    candidates per slot): sum_k softmax(mix)_k * p(line | the page of every slot's
    candidate k), all K pages read in one call (K times one page's cost).
    """
    dev = getattr(codec, "device", pred.device)
    if mix is not None:
        K, M = pred.size(2), len(texts)
        pages = pred.movedim(2, 0).flatten(0, 1).float().to(dev)  # page k * M + m
        again = None if which is None else which.repeat(K, 1)
        nll = codec.line_nll(pages, texts * K, again, causal).nll.view(K, M, -1).movedim(0, -1)
        logits = mix.float()
    else:
        nll = codec.line_nll(pred.float().to(dev), texts, which, causal).nll
        with torch.no_grad():
            prior = codec.line_nll(codec.null_tokens(len(texts)).to(dev), texts, which).nll
        nll = torch.stack([nll, prior], -1)
        logits = torch.stack([gates.float(), torch.zeros_like(gates.float())], -1)  # sigmoid
    logits = gate_per_line(logits, codec.n_lines).to(dev)  # [M, n_lines, K]
    if which is not None:
        logits = logits.gather(1, which.to(dev)[..., None].expand(-1, -1, logits.size(-1)))
    # normalised per line, after the line's logits are chosen (or averaged): weights sum to 1
    return -torch.logsumexp(F.log_softmax(logits, -1) - nll, -1)


def page_nll(codec, pred: torch.Tensor, texts: list[str], gates: torch.Tensor | None = None,
             lines: int = 0, generator: torch.Generator | None = None, causal: bool = False,
             mix: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(nll nats [M], bytes [M]) of the pages' texts under the VST's prediction.

    Without gates or mixture logits: the frozen decoder given the predicted tokens
    (`decoder_nll`). With gate logits [M, n] or mixture logits `mix` [M, n, K] (pred
    [M, n, K, D]): every line is read as a mixture (`mixed_line_nll`). `lines` > 0 scores
    a random sample of lines, the same for every branch, scaled to the page.
    """
    if gates is None and mix is None:
        return decoder_nll(codec, pred, texts, lines, causal)
    which = codec.sample_lines(len(texts), lines, generator) if lines > 0 else None
    nll = mixed_line_nll(codec, pred, texts, which, causal, gates, mix)
    scale = 1.0 if which is None else codec.n_lines / which.shape[1]
    return (nll.sum(1) * scale).to(pred.device), utf8_bytes(texts).to(pred.device).float()


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
    elif mcfg.mixture:
        cands, logits = (t.float() for t in model.head.components(h))
        x_hat = pick(cands, logits.argmax(-1))  # the most-weighted candidate, as head(h)
    else:
        x_hat = model.head(h).float()
    reg = model.aux(h).float() if mcfg.aux_head else x_hat  # L_reg's prediction
    terms["mse"] = window_mean((reg - x).square().mean(-1), valid)
    terms["cos"] = window_mean(1 - F.cosine_similarity(reg, x, dim=-1, eps=1e-6), valid)
    terms["norm"] = window_mean((x_hat.norm(dim=-1) - mcfg.alpha).square(), valid)
    total = total + cfg.mse * terms["mse"] + cfg.cos * terms["cos"] + cfg.norm * terms["norm"]
    if cfg.dec > 0:
        if codec is None:
            raise ValueError("the decoder-CE loss needs a codec")
        pred, texts = gather_pages(cands if mcfg.mixture else x_hat, batch, cfg.dec_pages)
        mix = gather_pages(logits, batch, cfg.dec_pages)[0] if mcfg.mixture else None
        if cfg.reader_input == "null":  # every candidate of a null page is that page
            pred, mix = codec.null_tokens(len(texts)).to(pred.device, pred.dtype), None
        if texts:
            gates = gather_pages(model.gate(h), batch, cfg.dec_pages)[0][..., 0] \
                if mcfg.gate else None
            causal = cfg.leak_free and codec.n_lines > 1  # a page read whole has no later lines
            nll, nbytes = page_nll(codec, pred, texts, gates, cfg.dec_lines, causal=causal,
                                   mix=mix)
            terms["dec"] = (nll / nbytes.clamp(min=1)).mean()  # nats per byte, mean over pages
            terms["dec_bpb"] = (nll.sum() / (math.log(2) * nbytes.sum().clamp(min=1))).detach()
            # pages read (FLOPs accounting): a mixture reads each page once per candidate
            read = len(texts) * (mix.size(-1) if mix is not None else 1)
            terms["dec_n"] = h.new_tensor(float(read))
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
