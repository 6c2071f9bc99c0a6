"""The text baseline's instruction tuning: the same samples as token ids, the loss on the
response tokens only, so the VST chat model is compared with a text model tuned alike.

A sample is `context \\n\\n instruction \\n response \\n` in the run's tokenizer (bytes or
cl100k), or `instruction \\n\\n context \\n response \\n` with
`order="instruction-first"`, the VST's own segment order (vst/sft_data.py), which the
retrieval study uses so both models read the question before the haystack. A prompt longer
than the model's window is cut from the left (the instruction and the response always fit
when the instruction comes last). A model with a pointer head (vst/pointer.py) is trained
on the pointer-generator mixture's NLL and answers greedily from it.

    from vst.sft_text import text_sft, text_answer, save_text_sft
    history = text_sft(model, "bytes", samples, seconds=300)        # or flops=3e12
    text_answer(model, "bytes", sample.instruction, sample.context)
    save_text_sft(model, "bytes", "runs/text_sft")                  # for `vst eval run`
"""

from __future__ import annotations

import random
import time
from pathlib import Path
from typing import Sequence

import torch
import torch.nn.functional as F

from data.errors import BadInput
from vst.data import text_codec
from vst.model import VST
from vst.pointer import pointer_flops, text_pointer_nll

ORDERS = ("context-first", "instruction-first")


def text_prompt(instruction: str, context: str, order: str = "context-first") -> str:
    if order not in ORDERS:
        raise BadInput(f"unknown prompt order {order!r}; choose one of {', '.join(ORDERS)}")
    if not context:
        return f"{instruction}\n"
    if order == "instruction-first":
        return f"{instruction}\n\n{context}\n"
    return f"{context}\n\n{instruction}\n"


def response_end(order: str) -> str:
    """What closes a response: a blank line where answers have several lines (the
    retrieval curriculum's instruction-first layout), else the end of the line."""
    return "\n\n" if order == "instruction-first" else "\n"


def prompt_ids(encode, instruction: str, context: str, order: str, room: int,
               context_tokens: int | None = None) -> list[int]:
    """The prompt's ids in at most `room` tokens. Context-first prompts are cut from the
    left; instruction-first prompts keep the instruction and the context's latest tokens
    (as do `context_tokens`, the truncation baseline's cap). The instruction and the
    context are tokenized apart so training and answering cut them identically."""
    if order != "instruction-first" or not context:
        ids = encode(text_prompt(instruction, context, order))
        return ids[-room:] if room > 0 else []
    head = encode(f"{instruction}\n\n")
    ctx = encode(f"{context}\n")
    keep = max(0, room - len(head))
    if context_tokens is not None:
        keep = min(keep, context_tokens)
    return head + (ctx[-keep:] if keep else [])


def text_row(encode, s, max_len: int, order: str = "context-first") -> tuple[list[int], int]:
    """(token ids, index of the first response token) of one sample, fitted to max_len."""
    resp = encode(s.response + response_end(order))[: max_len // 2]
    prompt = prompt_ids(encode, s.instruction, s.context, order, max_len - len(resp) - 1)
    return prompt + resp, len(prompt)


def text_batch(encode, samples, max_len: int, order: str = "context-first"):
    rows = [text_row(encode, s, max_len, order) for s in samples]
    T = max(len(ids) for ids, _ in rows)
    tok = torch.zeros(len(rows), T, dtype=torch.long)
    mask = torch.zeros(len(rows), T, dtype=torch.bool)
    for b, (ids, first) in enumerate(rows):
        tok[b, : len(ids)] = torch.tensor(ids)
        mask[b, first : len(ids)] = True
    inputs = torch.cat([torch.zeros_like(tok[:, :1]), tok[:, :-1]], 1)
    bos = torch.zeros_like(mask)
    bos[:, 0] = True  # the first input is the document-start vector, as in pretraining
    return inputs, tok, bos, mask


def text_response_loss(model: VST, inputs, targets, bos, mask) -> torch.Tensor:
    """Mean NLL of the response tokens; the LM head runs only at response positions (a
    100K-row cl100k head on every prompt position would be most of the FLOPs, and no
    careful implementation spends them)."""
    pos = torch.arange(inputs.size(1), device=inputs.device).expand_as(inputs)
    h = model(inputs, bos, pos)
    if model.cfg.pointer:
        nll = text_pointer_nll(model.pointer, h, model.lm_head, inputs, targets, ~bos, mask)
    else:
        nll = F.cross_entropy(model.lm_head(h[mask]).float(), targets[mask], reduction="none")
    return nll.mean() if nll.numel() else h.new_zeros(())


def batch_flops(model: VST, mask: torch.Tensor) -> float:
    """Training FLOPs of one text batch: each row's trunk at its own length, the LM head and
    the pointer at its response positions only (as `text_response_loss` computes them)."""
    # a row ends with its response: its length is one past the last response position
    T = mask.size(1)
    lens = [int(T - m.flip(0).int().argmax()) if m.any() else T for m in mask]
    head = 6 * model.lm_head.weight.numel()
    total = 0.0
    for n, r in zip(lens, (int(x) for x in mask.sum(1))):
        total += n * (model.flops_per_token(n) - head) + r * head
        if model.cfg.pointer:
            total += pointer_flops(r, n, model.cfg.pointer)
    return total


def text_sft(model: VST, tokenizer: str, samples: Sequence, *, seconds: float | None = None,
             flops: float | None = None, steps: int = 10**6, batch_size: int = 4,
             lr: float = 1e-3, seed: int = 0, order: str = "context-first",
             max_len: int | None = None, progress=None) -> list[dict]:
    """Full fine-tuning for `seconds` of training, `flops` training FLOPs, or `steps`
    (whichever comes first); returns the loss history (with cumulative FLOPs).
    `max_len`: the training window in tokens (default the model's max_seq_len)."""
    if model.cfg.modality != "text":
        raise BadInput("text_sft tunes a text-modality model")
    if seconds is None and flops is None and steps >= 10**6:
        raise BadInput("text_sft needs a budget: seconds, flops or steps")
    encode = text_codec(tokenizer)[0]
    opt = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.95))
    order_ = list(range(len(samples)))
    random.Random(seed).shuffle(order_)
    history, spent, used, step = [], 0.0, 0.0, 0
    window = max_len or model.cfg.max_seq_len
    model.train()
    while (seconds is None or spent < seconds) and (flops is None or used < flops) \
            and step < steps:
        t0 = time.perf_counter()
        chunk = [samples[order_[(step * batch_size + k) % len(order_)]] for k in range(batch_size)]
        batch = text_batch(encode, chunk, window, order)
        loss = text_response_loss(model, *batch)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        step += 1
        used += batch_flops(model, batch[3])
        spent += time.perf_counter() - t0
        history.append({"step": step, "loss": loss.detach().item(), "seconds": spent,
                        "train_flops": used})
        if progress is not None:
            progress(history[-1])
    return history


def save_text_sft(model: VST, tokenizer: str, out: str | Path, order: str = "context-first",
                  extra_state: dict | None = None) -> Path:
    """A checkpoint `vst eval run --runner vst-text` answers with in the same prompt layout."""
    from vst.checkpoint import save_checkpoint

    state = {"model_config": model.cfg.to_dict(), "train_config": {"tokenizer": tokenizer,
                                                                    "modality": "text"},
             "sft_text": {"order": order}, **(extra_state or {})}
    return save_checkpoint(Path(out), int((extra_state or {}).get("steps", 0)), model, None,
                           state, keep=1)


def text_answer(model: VST, tokenizer: str, instruction: str, context: str, n_new: int = 40,
                context_tokens: int | None = None, order: str = "context-first") -> str:
    """Greedy answer's first non-empty line; `context_tokens` cuts the context (from the
    left) to that many tokens first (the truncation baseline)."""
    from vst.data import text_decode
    from vst.generate import greedy_ids

    encode = text_codec(tokenizer)[0]
    first = order == "instruction-first"
    if context_tokens is not None and not first:
        ids = encode(context)
        context = text_decode(tokenizer, ids[-context_tokens:]) if context_tokens > 0 else ""
    ids = prompt_ids(encode, instruction, context, order, model.cfg.max_seq_len - n_new - 1,
                     context_tokens if first else None)
    out = text_decode(tokenizer, greedy_ids(model.eval(), ids, n_new))
    return next((line for line in out.split("\n") if line.strip()), "")
