"""The text baseline's instruction tuning: the same samples as token ids, the loss on the
response tokens only, so the VST chat model is compared with a text model tuned alike.

A sample is `context \\n\\n instruction \\n response \\n` in the run's tokenizer (bytes or
cl100k); a prompt longer than the model's window is cut from the left (the instruction
and the response always fit). Answers come from `vst.generate.sample_text` on the same
prompt (`text_prompt`).

    from vst.sft_text import text_sft, text_answer
    history = text_sft(model, "bytes", samples, seconds=300)
    text_answer(model, "bytes", sample.instruction, sample.context)
"""

from __future__ import annotations

import random
import time
from typing import Sequence

import torch
import torch.nn.functional as F

from vst.data import text_codec
from vst.model import VST


def text_prompt(instruction: str, context: str) -> str:
    return f"{context}\n\n{instruction}\n" if context else f"{instruction}\n"


def text_row(encode, s, max_len: int) -> tuple[list[int], int]:
    """(token ids, index of the first response token) of one sample, fitted to max_len."""
    resp = encode(s.response + "\n")[: max_len // 2]
    prompt = encode(text_prompt(s.instruction, s.context))
    prompt = prompt[-(max_len - len(resp) - 1):]
    return prompt + resp, len(prompt)


def text_batch(encode, samples, max_len: int):
    rows = [text_row(encode, s, max_len) for s in samples]
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
    pos = torch.arange(inputs.size(1)).expand_as(inputs)
    logits = model.lm_head(model(inputs, bos, pos)).float()
    ce = F.cross_entropy(logits.transpose(1, 2), targets, reduction="none")
    return (ce * mask).sum() / mask.sum().clamp(min=1)


def text_sft(model: VST, tokenizer: str, samples: Sequence, *, seconds: float, steps: int = 10**6,
             batch_size: int = 4, lr: float = 1e-3, seed: int = 0) -> list[dict]:
    """Full fine-tuning for `seconds` of training (or `steps`); returns the loss history."""
    if model.cfg.modality != "text":
        raise ValueError("text_sft tunes a text-modality model")
    encode = text_codec(tokenizer)[0]
    opt = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.95))
    order = list(range(len(samples)))
    random.Random(seed).shuffle(order)
    history, spent, step = [], 0.0, 0
    model.train()
    while spent < seconds and step < steps:
        t0 = time.perf_counter()
        chunk = [samples[order[(step * batch_size + k) % len(order)]] for k in range(batch_size)]
        loss = text_response_loss(model, *text_batch(encode, chunk, model.cfg.max_seq_len))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        step += 1
        spent += time.perf_counter() - t0
        history.append({"step": step, "loss": loss.detach().item(), "seconds": spent})
    return history


def text_answer(model: VST, tokenizer: str, instruction: str, context: str, n_new: int = 40,
                context_tokens: int | None = None) -> str:
    """Greedy answer's first non-empty line; `context_tokens` cuts the context (from the
    left) to that many tokens first (the truncation baseline)."""
    from vst.generate import sample_text

    if context_tokens is not None:
        from vst.data import text_decode

        ids = text_codec(tokenizer)[0](context)
        context = text_decode(tokenizer, ids[-context_tokens:]) if context_tokens > 0 else ""
    out = sample_text(model.eval(), tokenizer, text_prompt(instruction, context), n_new,
                      temperature=0.0)
    return next((line for line in out.split("\n") if line.strip()), "")
