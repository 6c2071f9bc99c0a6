"""Validation: regression quality and bits per byte of the true text under the frozen decoder.

For the VST, on the last k complete pages of every validation window, the decoder scores
the true page text given (a) the VST's predicted tokens, (b) the true tokens (the floor
a perfect VST would reach) and (c) null tokens (the decoder's prior alone). (a) is
leak-free where the decoder reads by lines (`bpb_pred`: each line read without the slots
after it, `Codec.causal_text_nll`), with the page-wide reading beside it (`bpb_pred_bidir`). The text
baseline reports its own bits per byte on exactly the same pages of the same windows. A
mixture model's (a) is its mixture likelihood, read both ways, and `bpb_pred_top` reads
its most-weighted candidates alone.
"""

from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn.functional as F

from vst.data import Batch, Loader, WindowSource
from vst.heads import pick
from vst.losses import decoder_nll, gather_pages, page_nll, scored_pages, window_mean
from vst.model import VST

LN2 = math.log(2)


class Spread:
    """`count` windows spaced evenly over a source (the first windows of a store all come
    from its first few documents), with the source's own attributes."""

    def __init__(self, source: WindowSource, count: int) -> None:
        self.source = source
        n = len(source)
        self.index = [i * n // count for i in range(count)] if 0 < count < n else list(range(n))

    def __len__(self) -> int:
        return len(self.index)

    def window(self, i: int):
        return self.source.window(self.index[i])

    def __getattr__(self, name: str):
        return getattr(self.source, name)


@torch.no_grad()
def evaluate(
    model: VST,
    source: WindowSource,
    collate: Callable[[list], Batch],
    *,
    codec=None,
    k: int = 1,
    batches: int = 8,
    batch_size: int = 8,
    device: torch.device | str = "cpu",
    autocast: Callable | None = None,
    reg_weights: tuple[float, float] = (1.0, 1.0),
) -> dict[str, float]:
    """Validation metrics; `reg_weights` (lambda1, lambda2) combine val_mse and val_cos into
    val_reg, the validation L_reg."""
    # a private RNG stream: the energy head samples here without disturbing training's RNG
    with torch.random.fork_rng(
        devices=[torch.device(device)] if torch.device(device).type == "cuda" else []
    ):
        torch.manual_seed(0)
        out = _evaluate(model, source, collate, codec, k, batches, batch_size, device, autocast)
    if "val_mse" in out:
        out["val_reg"] = reg_weights[0] * out["val_mse"] + reg_weights[1] * (1 - out["val_cos"])
    return out


def _evaluate(
    model, source, collate, codec, k, batches, batch_size, device, autocast
) -> dict[str, float]:
    was_training = model.training
    model.eval()
    n_batches = min(batches, max(1, len(source) // batch_size))
    loader = Loader(Spread(source, n_batches * batch_size), batch_size, shuffle=False)
    sums: dict[str, float] = {}

    def add(key: str, value: float) -> None:
        sums[key] = sums.get(key, 0.0) + float(value)

    for step in range(n_batches):
        batch = collate(loader.windows(step)).to(device)
        with autocast() if autocast else torch.autocast("cpu", enabled=False):
            h = model(batch.inputs, batch.bos, batch.positions, batch.doc_ids)
        h = h.float()
        if model.cfg.modality == "text":
            ce = F.cross_entropy(
                model.lm_head(h).float().transpose(1, 2), batch.targets, reduction="none"
            )
            v = batch.valid.float()
            add("val_ce", window_mean(ce, batch.valid))
            add("nll_all", (ce * v).sum())
            add("bytes_all", (batch.n_bytes * v).sum())
            scored = torch.zeros_like(batch.valid)
            for b, pages in enumerate(batch.pages):
                for i in scored_pages(pages, bool(batch.first_valid[b]), k):
                    scored[b] |= batch.page_of[b] == i
            s = (scored & batch.valid).float()
            add("nll_pages", (ce * s).sum())
            add("bytes_pages", (batch.n_bytes * s).sum())
            continue
        if model.cfg.mixture:  # the point prediction is each slot's most-weighted candidate
            cands, logits = (t.float() for t in model.head.components(h))
            x_hat = pick(cands, logits.argmax(-1))
            # the top candidate's mean weight: near 1 when the mixture has collapsed to one
            add("val_mix_top", window_mean(logits.softmax(-1).amax(-1), batch.valid))
        else:
            x_hat = model.head(h).float()  # the energy head's forward draws one sample
        x = batch.targets
        add("val_mse", window_mean((x_hat - x).square().mean(-1), batch.valid))
        add("val_cos", window_mean(F.cosine_similarity(x_hat, x, dim=-1, eps=1e-6), batch.valid))
        add("val_norm", window_mean(x_hat.norm(dim=-1), batch.valid))
        if codec is not None:
            pred, texts = gather_pages(x_hat, batch, k)
            if texts:
                true, _ = gather_pages(x, batch, k)
                null = codec.null_tokens(len(texts)).to(pred.device, pred.dtype)
                nlls = {name: decoder_nll(codec, toks, texts)
                        for name, toks in (("pred", pred), ("true", true), ("null", null))}
                # The headline reads each line without the slots after it: a teacher-
                # forced prediction for a later slot has seen this line's true token.
                # Today's page-wide reading stays beside it as pred_bidir.
                try:
                    nlls["pred_bidir"] = nlls["pred"]
                    nlls["pred"] = decoder_nll(codec, pred, texts, causal=True)
                except NotImplementedError:  # a decoder that reads the page as one unit
                    del nlls["pred_bidir"]
                if model.cfg.mixture:  # the model's own likelihood is the K-way mixture
                    nlls["pred_top"] = nlls["pred"]  # the most-weighted candidates alone
                    c, mix = gather_pages(cands, batch, k)[0], gather_pages(logits, batch, k)[0]
                    for name, causal in (("pred", "pred_bidir" in nlls), ("pred_bidir", False)):
                        if name in nlls:
                            nlls[name] = page_nll(codec, c, texts, causal=causal, mix=mix)
                for name, (nll, _) in nlls.items():
                    add(f"nll_{name}", nll.sum())
                add("bytes", nlls["true"][1].sum())
                if model.cfg.gate:  # the model's own likelihood is the gated mixture
                    gates = gather_pages(model.gate(h), batch, k)[0][..., 0]
                    mix, _ = page_nll(codec, pred, texts, gates, causal="pred_bidir" in nlls)
                    add("nll_pred_tokens", nlls["pred"][0].sum())
                    add("nll_pred", mix.sum() - nlls["pred"][0].sum())
    model.train(was_training)
    out: dict[str, float] = {}
    if model.cfg.modality == "text":
        out["val_ce"] = sums["val_ce"] / n_batches
        out["bpb_text"] = sums["nll_pages"] / (LN2 * max(sums["bytes_pages"], 1))
        out["bpb_text_all"] = sums["nll_all"] / (LN2 * max(sums["bytes_all"], 1))
        return out
    for key in ("val_mse", "val_cos", "val_norm", "val_mix_top"):
        if key in sums:
            out[key] = sums[key] / n_batches
    if "bytes" in sums:
        for name in ("pred", "pred_bidir", "true", "null", "pred_tokens", "pred_top"):
            if f"nll_{name}" in sums:  # pred_tokens: a gated model's tokens, read alone;
                # pred_top: a mixture's most-weighted candidates, read alone
                out[f"bpb_{name}"] = sums[f"nll_{name}"] / (LN2 * max(sums["bytes"], 1))
    return out
