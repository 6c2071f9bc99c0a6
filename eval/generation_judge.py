"""Judging free-running continuations: how plausible is generated text, and is it words?

A VST's continuation is read out by the frozen decoder into text; so is nothing else we
can score it by. Two cheap, model-independent-ish judges, applied in the same way to the
VST's continuations, the text baseline's, and the true next text:

- judge bits per byte: the continuation's NLL under a *text-modality* VST checkpoint (the
  text baseline), conditioned on the prompt. Low means "text the judge finds likely
  after this prompt". (A judge trained on the same corpus favours that corpus's style;
  compare sources against each other and against the true continuation, not in
  absolute terms.)
- vocabulary share: the share of the continuation's words that occur in the training
  corpus. Decoded garbage ("tne fumctoin") scores low even when its letters are likely.

    vocab = corpus_vocabulary(doc["text"] for doc in train_docs)
    judge = load_judge("runs/text-tiny")
    report = judge_continuations(records, judge, vocab)
    report["vst"]["bpb"], report["true"]["vocab_share"]
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn.functional as F

from data.errors import BadCheckpoint
from vst.data import text_codec
from vst.model import VST

LN2 = math.log(2)
WORD = re.compile(r"[A-Za-z]+(?:'[A-Za-z]+)?")
SOURCES = ("vst", "text", "true")


# -- vocabulary -------------------------------------------------------------------------------
def words(text: str) -> list[str]:
    """Lower-cased word tokens: runs of ASCII letters, with one inner apostrophe part."""
    return [w.lower() for w in WORD.findall(text)]


def corpus_vocabulary(texts: Iterable[str], min_count: int = 1) -> set[str]:
    """Lower-cased word types seen at least `min_count` times in `texts`."""
    counts: Counter[str] = Counter()
    for text in texts:
        counts.update(words(text))
    return {w for w, c in counts.items() if c >= min_count}


@dataclass(frozen=True)
class VocabShare:
    share: float  # n_known / n_words; NaN when the text has no words
    n_words: int
    n_known: int


def vocab_share(text: str, vocab: set[str]) -> VocabShare:
    """Share of the text's word tokens (not types) that are in `vocab`."""
    ws = words(text)
    known = sum(w in vocab for w in ws)
    return VocabShare(known / len(ws) if ws else math.nan, len(ws), known)


# -- the text judge ---------------------------------------------------------------------------
@dataclass
class Judge:
    model: VST  # a text-modality VST
    tokenizer_name: str  # "bytes" | "cl100k"

    def bpb(self, prompt_text: str, continuation_text: str) -> float:
        return judge_bpb(self.model, self.tokenizer_name, prompt_text, continuation_text)


def load_judge(checkpoint_dir: str | Path, device: str = "cpu") -> Judge:
    """A text baseline checkpoint (a `step-NNNNNNN/` directory or a run directory holding
    them; the latest is taken) as a judge; its tokenizer comes from its train config."""
    from vst.generate import load_model

    model, state = load_model(checkpoint_dir, device)
    if model.cfg.modality != "text":
        raise BadCheckpoint(f"{checkpoint_dir} is a {model.cfg.modality!r} model; the judge "
                            "must be a text model")
    return Judge(model, state.get("train_config", {}).get("tokenizer", "bytes"))


def _encoder(tokenizer_name: str) -> tuple[Callable[[str], list[int]], int]:
    encode, _, vocab = text_codec(tokenizer_name)
    return encode, vocab


def judge_sequence(
    model: VST, tokenizer_name: str, prompt_text: str, continuation_text: str,
    doc_start: bool = True,
) -> dict[str, Any]:
    """Model-ready tensors for scoring a continuation after a prompt.

    Prompt and continuation are tokenized separately (so the continuation's tokens hold
    exactly its bytes). Position t predicts token t from token t-1; when the whole prompt
    fits and `doc_start`, the first token is predicted from the document-start vector.
    The prompt is cut from the left so that at most max_seq_len positions are run (a cut
    prompt no longer opens its document, so its first kept token is context only).
    Returns inputs, bos, positions, doc_ids [1, T], targets [T] and the index of the first
    continuation target.
    """
    cfg = model.cfg
    encode, vocab = _encoder(tokenizer_name)
    if cfg.vocab_size < vocab:
        raise ValueError(
            f"the judge has {cfg.vocab_size} token ids; {tokenizer_name} needs {vocab}"
        )
    prompt, cont = encode(prompt_text), encode(continuation_text)
    if len(cont) > cfg.max_seq_len:
        raise ValueError(f"continuation of {len(cont)} tokens > max_seq_len {cfg.max_seq_len}")
    room = cfg.max_seq_len - len(cont)  # positions left for the prompt
    if (doc_start and len(prompt) <= room) or not prompt:
        bos, kept = True, prompt  # (no prompt: the document start is the only context)
    else:  # cut from the left; without the start vector one more token fits as context
        bos, kept = False, prompt[-(room + 1):]
    ids = kept + cont
    if bos:  # every token is a target; the first one's input is the document-start vector
        inputs, targets = [0] + ids[:-1], ids
    else:  # the first kept token is context only
        inputs, targets = ids[:-1], ids[1:]
    T = len(targets)
    dev = next(model.parameters()).device
    pos = torch.arange(T, device=dev)[None]
    if cfg.rope == "3d":  # equal coordinates on all axes are ordinary 1D rope
        pos = pos[..., None].expand(-1, -1, 3)
    bos_t = torch.zeros(1, T, dtype=torch.bool, device=dev)
    bos_t[0, 0] = bos and T > 0
    return {
        "inputs": torch.tensor([inputs], dtype=torch.long, device=dev),
        "bos": bos_t,
        "positions": pos,
        "doc_ids": torch.zeros(1, T, dtype=torch.long, device=dev),
        "targets": torch.tensor(targets, dtype=torch.long, device=dev),
        "first": T - len(cont),
    }


@torch.no_grad()
def judge_nll(
    model: VST, tokenizer_name: str, prompt_text: str, continuation_text: str,
    doc_start: bool = True,
) -> tuple[float, int]:
    """(NLL in nats of the continuation's tokens given the prompt, its UTF-8 bytes)."""
    n_bytes = len(continuation_text.encode("utf-8"))
    if not continuation_text:
        return 0.0, 0
    s = judge_sequence(model, tokenizer_name, prompt_text, continuation_text, doc_start)
    was_training = model.training
    model.eval()
    try:
        h = model(s["inputs"], s["bos"], s["positions"], s["doc_ids"])[0, s["first"]:]
        logp = F.log_softmax(model.lm_head(h).float(), dim=-1)
    finally:
        model.train(was_training)
    nll = -logp.gather(1, s["targets"][s["first"]:, None]).sum()
    return float(nll), n_bytes


def judge_bpb(
    judge_model: VST, tokenizer_name: str, prompt_text: str, continuation_text: str,
    doc_start: bool = True,
) -> float:
    """Bits per byte of the continuation under the text judge, given the prompt:
    sum of token NLLs / (ln 2 * UTF-8 bytes). NaN for an empty continuation."""
    nll, n_bytes = judge_nll(judge_model, tokenizer_name, prompt_text, continuation_text,
                             doc_start)
    return nll / (LN2 * n_bytes) if n_bytes else math.nan


# -- aggregation ------------------------------------------------------------------------------
def judge_continuations(
    records: Sequence[dict], judge: Judge | None, vocab: set[str] | None,
) -> dict[str, dict[str, float]]:
    """Per source ("vst", "text", "true", or any other label a record carries):

    n (records), bytes, words, bpb (byte-weighted: total nats / (ln 2 * total bytes)),
    vocab_share (word-weighted: known words / words). NaN where there is nothing to
    average (no bytes, no words) or no judge / vocabulary was given.
    """
    sums: dict[str, dict[str, float]] = {}
    for r in records:
        src = r.get("source", "unknown")
        s = sums.setdefault(src, {"n": 0, "nll": 0.0, "bytes": 0, "words": 0, "known": 0})
        s["n"] += 1
        cont = r["continuation"]
        if judge is not None:
            nll, nb = judge_nll(judge.model, judge.tokenizer_name, r.get("prompt", ""), cont)
            s["nll"] += nll
            s["bytes"] += nb
        else:
            s["bytes"] += len(cont.encode("utf-8"))
        if vocab is not None:
            v = vocab_share(cont, vocab)
            s["words"] += v.n_words
            s["known"] += v.n_known
    out: dict[str, dict[str, float]] = {}
    for src, s in sums.items():
        out[src] = {
            "n": s["n"],
            "bytes": s["bytes"],
            "words": s["words"],
            "bpb": s["nll"] / (LN2 * s["bytes"]) if judge is not None and s["bytes"] else math.nan,
            "vocab_share": (
                s["known"] / s["words"] if vocab is not None and s["words"] else math.nan
            ),
        }
    return out
