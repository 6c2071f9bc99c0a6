"""Honest training-FLOPs accounting: the VST trunk *and* the frozen codec decoder.

A VST trained with decoder-CE pays for the codec's `text_nll` on every scored page:
its forward, and a backward that computes activation gradients all the way back to the
input tokens (no weight gradients: the codec is frozen, but every matmul of the forward
still has its input-gradient twin). That cost is easy to leave out of a text-vs-VST
comparison and large (see docs: a `tiny` VST step with decoder-CE on 1 page in 8 is
~6x slower). Here it is counted, not modelled: `torch.utils.flop_counter.FlopCounterMode`
runs the codec on a representative page batch and counts every matmul, convolution and
attention it executes.

    from vst.flops import train_step_flops
    f = train_step_flops(model, seq_len=128, tokens_per_step=32 * 128,
                         dec_pages_per_step=32, codec=codec, texts=page_texts)
    f["decoder_ce_share"]   # the decoder's share of a training step's FLOPs

Conventions. A multiply-add is 2 FLOPs. Elementwise work (norms, activations, rotary,
softmax) is not counted, as in 6N accounting. Attention counts the score and value
matmuls; a causal kernel (`is_causal=True`, which skips the masked half) counts half the
scores, an explicit mask counts them all (the kernel computes them all).

Trunk: `VST.flops_per_token` (6N + attention), checked against FlopCounterMode
(`measured_trunk_flops_per_token`, tests/test_flops.py): a `tiny` text model at 1,024
positions 0.999x, a `tiny` VST at 128 positions 0.999x. Attention counts the score and
value matmuls twice forward and five times backward (the backward recomputes the
scores): counting four undercounted a 1,024-position text model by 4%. The VST's input
projection needs no input gradient (4 FLOPs a weight, not 6). With the energy head 6N
undercounted 2.1x (the head runs `energy_samples` times per position in training);
VST.flops_per_token counts that.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from contextlib import contextmanager, nullcontext
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode, sdpa_backward_flop_count, sdpa_flop_count

from vst.config import ModelConfig
from vst.model import VST

aten = torch.ops.aten

# A page of documentation text as the corpora lay it out: 32 lines, ~1200 characters,
# ~37 characters a line, the longest line (a pydoc rule) near the page width. With the
# mini reader the cost of a page depends on its longest line (every line is padded to
# it), so a page of short lines alone would understate what real batches cost.
DEFAULT_PAGE_TEXT = """\
class TextWrapper(builtins.object)
 |  TextWrapper(width=70, **kwargs)
 |
 |  Object for wrapping/filling text.  The public
 |  interface consists of the wrap() and fill()
 |  methods; the other methods are just there for
 |  subclasses to override in order to tweak the
 |  default behaviour.
 |
 |  Several instance attributes control various
 |  aspects of wrapping:
 |    width (default: 70)
 |      the maximum width of wrapped lines (unless
 |      break_long_words is false)
 |    initial_indent (default: "")
 |      string that will be prepended to the first
 |      line of wrapped output.  Counts towards the
 |      line's width.
 |    subsequent_indent (default: "")
 |      string that will be prepended to all lines
 |      save the first of wrapped output; also
 |      counts towards each line's width.
 |    expand_tabs (default: true)
 |      Expand tabs in input text to spaces before
 |      further processing.  Each tab will become
 |      0 .. 'tabsize' spaces, depending on its
 |      position in its line.
 |
 |  Methods defined here:
 |
 |  --------------------------------------------------------------------
 |  __init__(self, width=70, initial_indent='', subsequent_indent='')
"""


# -- counting ---------------------------------------------------------------------------------
def _cpu_flash_fwd(q, k, v, dropout_p=0.0, is_causal=False, *args, out_shape=None, **kw) -> int:
    f = sdpa_flop_count(q, k, v)
    return f // 2 if is_causal else f


def _cpu_flash_bwd(g, q, k, v, out, lse, dropout_p=0.0, is_causal=False, *args,
                   out_shape=None, **kw) -> int:
    f = sdpa_backward_flop_count(g, q, k, v)
    return f // 2 if is_causal else f


# FlopCounterMode (torch 2.13) knows the CUDA attention kernels but not the CPU one that
# F.scaled_dot_product_attention dispatches to on CPU: without these it counts 0 there.
CUSTOM_FORMULAS: dict[Any, Callable[..., int]] = {
    aten._scaled_dot_product_flash_attention_for_cpu: _cpu_flash_fwd,
    aten._scaled_dot_product_flash_attention_for_cpu_backward: _cpu_flash_bwd,
}


def count_flops(fn: Callable[[], Any]) -> tuple[Any, int]:
    """(fn(), FLOPs it executed), forward and any backward run inside `fn`."""
    with FlopCounterMode(display=False, custom_mapping=CUSTOM_FORMULAS) as counter:
        out = fn()
    return out, int(counter.get_total_flops())


@contextmanager
def _frozen(codec):
    """Count activation gradients only, even for a codec whose weights were left trainable."""
    live = [p for p in codec.parameters() if p.requires_grad]
    for p in live:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p in live:
            p.requires_grad_(True)


def _probe_tokens(codec, pages: int, grad: bool) -> torch.Tensor:
    """Random tokens of the codec's shape (FLOPs do not depend on their values)."""
    like = codec.null_tokens(pages)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(like.shape, generator=g).to(like.device, like.dtype)
    return x.requires_grad_(grad)


def _nll(codec, tokens, texts, lines, seed, causal=False):
    if lines is None:
        return codec.causal_text_nll(tokens, texts) if causal else codec.text_nll(tokens, texts)
    gen = torch.Generator().manual_seed(seed)
    return codec.text_nll_sample(tokens, texts, lines, generator=gen, causal=causal)


def count_text_nll_flops(codec, texts: Sequence[str], backward: bool = True,
                         lines: int | None = None, weight_grads: bool = False,
                         causal: bool = False) -> int:
    """FLOPs of one `text_nll` call on len(texts) pages (no caching).

    backward: also run nll.sum().backward() to the tokens (which require grad).
    lines: score a sample of this many lines per page (`text_nll_sample`) instead.
    weight_grads: also count the gradients of the codec's trainable weights (a trainable
    reader, vst/reader.py); by default only the activation gradients to the tokens.
    causal: the leak-free reading (`Codec.causal_text_nll`).
    """
    texts = list(texts)
    tokens = _probe_tokens(codec, len(texts), backward)

    def step():
        with torch.enable_grad() if backward else torch.no_grad():
            out = _nll(codec, tokens, texts, lines, seed=0, causal=causal)
            if backward:
                out.nll.sum().backward()
        return out

    with nullcontext() if weight_grads else _frozen(codec):
        _, flops = count_flops(step)
    if weight_grads:
        for p in codec.parameters():
            p.grad = None
    if backward and tokens.grad is None:
        raise RuntimeError("text_nll gave no gradient to the tokens")
    return flops


# -- the decoder's cost per page --------------------------------------------------------------
_PER_PAGE: dict[tuple, float] = {}


def per_page_flops(codec, texts: Sequence[str] | None = None, backward: bool = True,
                   lines: int | None = None, weight_grads: bool = False,
                   causal: bool = False) -> float:
    """The decoder's FLOPs for one page like `texts` (default: DEFAULT_PAGE_TEXT), cached."""
    texts = list(texts) if texts else [DEFAULT_PAGE_TEXT]
    kind, probe = codec.cost_key(texts)
    key = (id(codec), getattr(codec, "version", None), getattr(codec, "mode", None),
           backward, lines, kind, weight_grads, causal)
    if key not in _PER_PAGE:
        _PER_PAGE[key] = count_text_nll_flops(codec, probe, backward, lines,
                                              weight_grads, causal) / len(probe)
    return _PER_PAGE[key]


def decoder_ce_flops(codec, n_pages: int, texts: Sequence[str] | None = None,
                     lines: int | None = None) -> float:
    """FLOPs of decoder-CE on n_pages pages: `text_nll` forward + backward to the tokens.

    texts: real page texts of the batch (the mini reader's cost depends on their longest
    line); default one page of documentation text. lines: the sampled-lines estimate.
    """
    return n_pages * per_page_flops(codec, texts, backward=True, lines=lines) if n_pages else 0.0


def decoder_forward_flops(codec, n_pages: int, texts: Sequence[str] | None = None) -> float:
    """FLOPs of scoring n_pages pages with `text_nll`, forward only (evaluation).

    Greedy decoding (`codec.decode`) is a different, incremental computation; this is
    the teacher-forced likelihood used for bits per byte.
    """
    return n_pages * per_page_flops(codec, texts, backward=False) if n_pages else 0.0


def decoder_ms_per_page(codec, texts: Sequence[str] | None = None, backward: bool = True,
                        threads: int | None = None, repeats: int = 3) -> float:
    """Best-of-`repeats` wall-clock milliseconds per page of `text_nll` (+ backward)."""
    texts = list(texts) if texts else [DEFAULT_PAGE_TEXT]
    old = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        best = math.inf
        for _ in range(repeats):
            tokens = _probe_tokens(codec, len(texts), backward)
            t0 = time.perf_counter()
            with torch.enable_grad() if backward else torch.no_grad():
                out = codec.text_nll(tokens, texts)
                if backward:
                    out.nll.sum().backward()
            best = min(best, time.perf_counter() - t0)
    finally:
        torch.set_num_threads(old)
    return 1000 * best / len(texts)


# -- the trunk --------------------------------------------------------------------------------
def _as_model(model_or_cfg: VST | ModelConfig) -> VST:
    if isinstance(model_or_cfg, VST):
        return model_or_cfg
    with torch.device("meta"):  # shapes only: no memory, no initialisation cost
        return VST(model_or_cfg)


def trunk_flops_per_token(model_or_cfg: VST | ModelConfig, seq_len: int) -> float:
    """Training FLOPs per position of the VST (or text model): 6N + attention."""
    return float(_as_model(model_or_cfg).flops_per_token(seq_len))


def measured_trunk_flops_per_token(model: VST, seq_len: int, batch: int = 1) -> float:
    """FlopCounterMode's count of one training step (forward, loss, backward) per position,
    on random inputs; the check of `trunk_flops_per_token`."""
    cfg = model.cfg
    dev = next(model.parameters()).device
    g = torch.Generator().manual_seed(0)
    bos = torch.zeros(batch, seq_len, dtype=torch.bool, device=dev)
    bos[:, 0] = True
    if cfg.rope == "3d":
        t = torch.arange(seq_len)
        n, cols = cfg.tokens_per_page, cfg.grid[1]
        pos = torch.stack((t // n, t % n // cols, t % cols), -1).expand(batch, -1, -1)
    else:
        pos = torch.arange(seq_len).expand(batch, -1)
    pos = pos.to(dev)
    if cfg.modality == "text":
        ids = torch.randint(cfg.vocab_size, (batch, seq_len), generator=g).to(dev)

        def step():
            h = model(ids, bos, pos)
            logits = model.lm_head(h).float()
            torch.nn.functional.cross_entropy(logits.transpose(1, 2), ids).backward()
    else:
        x = torch.randn(batch, seq_len, cfg.D, generator=g).to(dev)

        def step():
            h = model(x, bos, pos)
            if cfg.head == "energy":
                pred = model.head.sample(h, cfg.energy_samples)
            else:
                pred = model.head(h)
            (pred - x).square().mean().backward()

    _, flops = count_flops(step)
    model.zero_grad(set_to_none=True)
    return flops / (batch * seq_len)


# -- a training step --------------------------------------------------------------------------
def train_step_flops(model: VST | ModelConfig, seq_len: int, tokens_per_step: int,
                     dec_pages_per_step: int = 0, codec=None,
                     texts: Sequence[str] | None = None,
                     lines: int | None = None) -> dict[str, float]:
    """FLOPs of one VST training step: trunk (all positions), decoder-CE (scored pages).

    tokens_per_step: positions per step over all ranks (batch x seq_len); the trunk
    term already includes the backward of the decoder-CE gradient through the VST.
    """
    trunk = tokens_per_step * trunk_flops_per_token(model, seq_len)
    dec = 0.0
    if dec_pages_per_step > 0:
        if codec is None:
            raise ValueError("decoder-CE FLOPs need the codec")
        dec = decoder_ce_flops(codec, dec_pages_per_step, texts, lines=lines)
    total = trunk + dec
    return {"trunk": trunk, "decoder_ce": dec, "total": total,
            "decoder_ce_share": dec / total if total else 0.0}


def text_model_flops(model: VST | ModelConfig, seq_len: int,
                     tokens_per_step: int) -> dict[str, float]:
    """The text baseline's step: the same trunk accounting (the embedding lookup is free,
    the LM head is a matmul), no decoder."""
    cfg = model.cfg if isinstance(model, VST) else model
    if cfg.modality != "text":
        raise ValueError("text_model_flops is for a text-modality model")
    return train_step_flops(model, seq_len, tokens_per_step)
