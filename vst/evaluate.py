"""Validation: regression quality and bits per byte of the true text under the frozen decoder.

For the VST, on the last k complete pages of every validation window, the decoder scores
the true page text given (a) the VST's predicted tokens, (b) the true tokens (the floor
a perfect VST would reach) and (c) null tokens (the decoder's prior alone). (a) is
leak-free where the decoder reads by lines (`bpb_pred`: each line read without the slots
after it, `Codec.causal_text_nll`), with the page-wide reading beside it (`bpb_pred_bidir`). The text
baseline reports its own bits per byte on exactly the same pages of the same windows. A
mixture model's (a) is its mixture likelihood, read both ways, and `bpb_pred_top` reads
its most-weighted candidates alone.

A text model is scored by `score_text`, the one text-scoring path (in-training
evaluation, `eval.compare`, the text frontier): whole windows, every scored page, in
strided chunks of the model's context; optionally with each token's context cut to its
own page (`bpb_text_page_cut`, for Delta_text).

    from vst.evaluate import eval_batches, score_text
    s = score_text(model, eval_batches(source, 4, 8), TextCollate("bytes"), k=-1)
    s["bpb"], s["bytes"]   # bits per byte of the scored pages, and how many bytes they hold
"""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from vst.data import WHOLE_WINDOW, Batch, Loader, TextCollate, Window, WindowSource
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


def eval_batches(source: WindowSource, batches: int, batch_size: int) -> list[list[Window]]:
    """The windows an evaluation scores, batch by batch: `batches` x `batch_size` windows
    spread evenly over the source (at most len(source) // batch_size batches, at least
    one). Both families read these, so they are scored on the same windows."""
    n_batches = min(batches, max(1, len(source) // batch_size))
    loader = Loader(Spread(source, n_batches * batch_size), batch_size, shuffle=False)
    return [loader.windows(step) for step in range(n_batches)]


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
    page_cut: bool = False,
) -> dict[str, float]:
    """Validation metrics; `reg_weights` (lambda1, lambda2) combine val_mse and val_cos into
    val_reg, the validation L_reg.

    A text model (`collate` a `TextCollate`) is scored by `score_text` with its own
    context: val_ce, bpb_text (the VST's pages), bpb_text_all (every token), bytes_text;
    with `page_cut`, or for a model trained with its context cut to the page, also
    bpb_text_page_cut (the same pages, each token seeing only its own page)."""
    if model.cfg.modality == "text":
        return _evaluate_text(model, eval_batches(source, batches, batch_size), collate, k,
                              page_cut, device, autocast)
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
    windows = eval_batches(source, batches, batch_size)
    n_batches = len(windows)
    sums: dict[str, float] = {}

    def add(key: str, value: float) -> None:
        sums[key] = sums.get(key, 0.0) + float(value)

    for step in range(n_batches):
        batch = collate(windows[step]).to(device)
        with autocast() if autocast else torch.autocast("cpu", enabled=False):
            h = model(batch.inputs, batch.bos, batch.positions, batch.doc_ids)
        h = h.float()
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
    for key in ("val_mse", "val_cos", "val_norm", "val_mix_top"):
        if key in sums:
            out[key] = sums[key] / n_batches
    if "bytes" in sums:
        for name in ("pred", "pred_bidir", "true", "null", "pred_tokens", "pred_top"):
            if f"nll_{name}" in sums:  # pred_tokens: a gated model's tokens, read alone;
                # pred_top: a mixture's most-weighted candidates, read alone
                out[f"bpb_{name}"] = sums[f"nll_{name}"] / (LN2 * max(sums["bytes"], 1))
    return out


# -- text models --------------------------------------------------------------------------
def scored_mask(batch: Batch, k: int) -> torch.Tensor:
    """[B, T] bool: text targets on the scored pages of each window (the last k whole
    pages the VST is scored on, `vst.losses.scored_pages`; k < 0: all of them)."""
    scored = torch.zeros_like(batch.valid)
    for b, pages in enumerate(batch.pages):
        for i in scored_pages(pages, bool(batch.first_valid[b]), k):
            scored[b] |= batch.page_of[b] == i
    return scored & batch.valid


@torch.no_grad()
def score_text(
    model: VST,
    batches: list[list[Window]],
    collate: TextCollate,
    *,
    k: int = -1,
    context: int | None = None,
    stride: int | None = None,
    page_cut: bool = False,
    device: torch.device | str = "cpu",
    autocast: Callable | None = None,
) -> dict[str, float]:
    """A text model's bits per byte on every scored page of the windows (the VST's pages).

    Each window is collated whole (never cut to the training `seq_len`) and read in
    strided chunks: each forward holds at most `context` inputs (default: the model's
    max_seq_len, its full score; the VST's positions for the truncation baseline) and
    scores the targets after the previous chunk's, at most `stride` of them (default
    context // 2), so every target has between context - stride and context tokens of
    context. This truncates the input; it is not a sliding attention band, whose
    receptive field would grow with depth. page_cut: every scored page is read as a
    document of its own (`page_rows`), so a token sees only the earlier tokens of its
    page, as `TextCollate(page_cut=True)` trains it.

    Returns bpb (scored pages), bytes (UTF-8 bytes of those pages), bpb_all (every real
    target) and val_ce (nats a token, a mean over windows of each window's mean).
    """
    if not isinstance(collate, TextCollate):
        raise TypeError(f"a text model is scored from its TextCollate, got {type(collate)}")
    context = context or model.cfg.max_seq_len
    stride = max(1, min(stride or context // 2, context))
    collate = replace(collate, seq_len=WHOLE_WINDOW, page_cut=False)
    if page_cut:  # rows of single pages attend causally: no window-wide page mask to build
        batches, k = [r for r in (page_rows(group, k) for group in batches) if r], -1
    dev = torch.device(device)
    was_training = model.training
    model.eval()
    sums = dict(nll=0.0, bytes=0.0, nll_all=0.0, bytes_all=0.0, ce=0.0)
    windows = 0
    for group in batches:
        batch = collate(group).to(dev)
        B, T = batch.targets.shape
        scored = scored_mask(batch, k).float()
        valid = batch.valid.float()
        ce_window = torch.zeros(B, device=dev)
        done = 0  # targets before this are scored
        while done < T:
            end = min(done + stride, T)
            lo = max(0, end - context)
            with autocast() if autocast else torch.autocast(dev.type, enabled=False):
                h = model(batch.inputs[:, lo:end], batch.bos[:, lo:end],
                          torch.arange(end - lo, device=dev).expand(B, -1),
                          batch.doc_ids[:, lo:end])
            logits = model.lm_head(h[:, done - lo:]).float()
            ce = F.cross_entropy(logits.transpose(1, 2), batch.targets[:, done:end],
                                 reduction="none")
            s, v, nb = scored[:, done:end], valid[:, done:end], batch.n_bytes[:, done:end]
            sums["nll"] += float((ce * s).sum())
            sums["bytes"] += float((nb * s).sum())
            sums["nll_all"] += float((ce * v).sum())
            sums["bytes_all"] += float((nb * v).sum())
            ce_window += (ce * v).sum(1)
            done = end
        sums["ce"] += float((ce_window / valid.sum(1).clamp(min=1)).sum())
        windows += B
    model.train(was_training)
    return {"bpb": sums["nll"] / (LN2 * max(sums["bytes"], 1)), "bytes": sums["bytes"],
            "bpb_all": sums["nll_all"] / (LN2 * max(sums["bytes_all"], 1)),
            "val_ce": sums["ce"] / max(windows, 1)}


def page_rows(windows: list[Window], k: int) -> list[Window]:
    """The scored pages of the windows (`scored_pages`, the last k) as one-page windows
    that open a document: the page cut without a mask. Under the cut a page is nobody's
    context, so unscored pages are left out."""
    rows = []
    for w in windows:
        for i in scored_pages(w.pages, bool(w.doc_start[0]), k):
            t0, n, text = w.pages[i]
            start = np.zeros(n, bool)
            start[0] = True
            rows.append(Window(tokens=w.tokens[t0:t0 + n], doc_start=start,
                               page=w.page[t0:t0 + n], slot=w.slot[t0:t0 + n],
                               pages=[(0, n, text)], doc_ids=list(w.doc_ids)))
    return rows


def _evaluate_text(model, batches, collate, k, page_cut, device, autocast) -> dict[str, float]:
    full = score_text(model, batches, collate, k=k, device=device, autocast=autocast)
    out = {"val_ce": full["val_ce"], "bpb_text": full["bpb"], "bpb_text_all": full["bpb_all"],
           "bytes_text": full["bytes"]}
    if page_cut or collate.page_cut:  # a page-cut arm is also scored in its own context
        cut = score_text(model, batches, collate, k=k, page_cut=True, device=device,
                         autocast=autocast)
        out["bpb_text_page_cut"] = cut["bpb"]
    return out
