"""Judging continuations: corpus vocabulary share, and bits per byte under a text judge."""

from __future__ import annotations

import math
import random

import pytest
import torch
import torch.nn.functional as F

from eval.generation_judge import (
    Judge,
    corpus_vocabulary,
    judge_bpb,
    judge_continuations,
    judge_nll,
    judge_sequence,
    load_judge,
    vocab_share,
)
from vst.config import flavour
from vst.model import VST

KNOWN = "the cat sat on the mat. "
PROMPT = "A short story: "


def text_model(seed: int = 0, **kw) -> VST:
    torch.manual_seed(seed)
    return VST(flavour("debug", **{"modality": "text", "vocab_size": 256, "rope": "1d", **kw}))


def hand_bpb(model: VST, prompt: str, cont: str, max_len: int | None = None) -> float:
    """Token by token: re-run the model on each prefix and read the last position."""
    p, c = list(prompt.encode()), list(cont.encode())
    bos = True
    if max_len is not None and len(p) + len(c) > max_len:
        p, bos = p[-(max_len - len(c) + 1):], False
    ids = p + c
    nll = 0.0
    with torch.no_grad():
        for j in range(len(p), len(ids)):
            inp = ([0] + ids[:j]) if bos else ids[:j]
            T = len(inp)
            b = torch.zeros(1, T, dtype=torch.bool)
            b[0, 0] = bos
            h = model(torch.tensor([inp]), b, torch.arange(T)[None])[0, -1]
            nll -= float(F.log_softmax(model.lm_head(h).float(), -1)[ids[j]])
    return nll / (math.log(2) * len(cont.encode()))


# -- vocabulary -------------------------------------------------------------------------------
def test_corpus_vocabulary_and_share_exact():
    vocab = corpus_vocabulary(["The cat's hat; the CAT sat.", "A dog", "don't 42 x-ray"])
    assert vocab == {"the", "cat's", "hat", "cat", "sat", "a", "dog", "don't", "x", "ray"}
    assert corpus_vocabulary(["the the cat"], min_count=2) == {"the"}
    v = vocab_share("The dog ate the HAT, don't it?", vocab)  # the dog ate the hat don't it
    assert (v.n_words, v.n_known) == (7, 5)
    assert v.share == pytest.approx(5 / 7)
    none = vocab_share("123 -- !!", vocab)
    assert none.n_words == 0 and math.isnan(none.share)


# -- the judge --------------------------------------------------------------------------------
def test_judge_bpb_equals_a_token_by_token_loop():
    model = text_model().eval()
    got = judge_bpb(model, "bytes", PROMPT, KNOWN)
    assert math.isfinite(got) and got > 0
    assert got == pytest.approx(hand_bpb(model, PROMPT, KNOWN), rel=1e-4)
    # the prompt matters (the judge conditions on it)
    assert judge_bpb(model, "bytes", "zzzz qqqq ", KNOWN) != pytest.approx(got, rel=1e-6)
    assert math.isnan(judge_bpb(model, "bytes", PROMPT, ""))


def test_prompt_is_cut_from_the_left_to_fit():
    model = text_model(max_seq_len=40).eval()
    prompt = "x" * 30 + "The long prompt ends here: "  # 57 bytes + 24 > 40
    s = judge_sequence(model, "bytes", prompt, KNOWN)
    assert s["inputs"].shape[1] == 40 and not s["bos"].any()
    assert s["targets"][s["first"]:].tolist() == list(KNOWN.encode())
    got = judge_bpb(model, "bytes", prompt, KNOWN)
    assert got == pytest.approx(hand_bpb(model, prompt, KNOWN, max_len=40), rel=1e-4)
    with pytest.raises(ValueError):
        judge_bpb(model, "bytes", prompt, "y" * 41)


def test_judge_prefers_what_it_was_trained_on():
    model = text_model()
    s = judge_sequence(model, "bytes", PROMPT, KNOWN)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    before = judge_bpb(model, "bytes", PROMPT, KNOWN)
    model.train()
    for _ in range(50):
        h = model(s["inputs"], s["bos"], s["positions"], s["doc_ids"])[0]
        loss = F.cross_entropy(model.lm_head(h).float(), s["targets"])
        opt.zero_grad()
        loss.backward()
        opt.step()
    rng = random.Random(0)
    unseen = "".join(rng.choice("abcdefghijklmnopqrstuvwxyz ") for _ in range(len(KNOWN)))
    known = judge_bpb(model, "bytes", PROMPT, KNOWN)
    other = judge_bpb(model, "bytes", PROMPT, unseen)
    assert known < before - 2.0  # random init: ~8 bits per byte
    assert known < 0.5 * other
    assert model.training  # judging left the mode alone


def test_load_judge_and_aggregate(tmp_path):
    from vst.checkpoint import save_checkpoint

    model = text_model()
    state = {"train_config": {"tokenizer": "bytes"}, "model_config": model.cfg.to_dict()}
    save_checkpoint(tmp_path, 7, model, None, state)
    judge = load_judge(tmp_path)
    assert isinstance(judge, Judge) and judge.tokenizer_name == "bytes"
    ref = judge_bpb(model.eval(), "bytes", PROMPT, KNOWN)
    assert judge.bpb(PROMPT, KNOWN) == pytest.approx(ref, rel=1e-6)

    vocab = corpus_vocabulary([KNOWN])  # the cat sat on mat
    records = [
        {"prompt": PROMPT, "continuation": KNOWN, "source": "true"},
        {"prompt": PROMPT, "continuation": "the dog", "source": "vst"},
        {"prompt": PROMPT, "continuation": "qq zz xx cat!", "source": "vst"},
        {"prompt": PROMPT, "continuation": "", "source": "text"},
    ]
    out = judge_continuations(records, judge, vocab)
    assert out["true"]["vocab_share"] == 1.0 and out["true"]["n"] == 1
    assert out["vst"]["words"] == 6 and out["vst"]["vocab_share"] == pytest.approx(2 / 6)
    n1, b1 = judge_nll(judge.model, "bytes", PROMPT, "the dog")
    n2, b2 = judge_nll(judge.model, "bytes", PROMPT, "qq zz xx cat!")
    assert out["vst"]["bytes"] == b1 + b2 == 20
    assert out["vst"]["bpb"] == pytest.approx((n1 + n2) / (math.log(2) * (b1 + b2)))
    assert out["true"]["bpb"] == pytest.approx(ref, rel=1e-6)
    assert math.isnan(out["text"]["bpb"]) and math.isnan(out["text"]["vocab_share"])
    only_vocab = judge_continuations(records, None, vocab)
    assert math.isnan(only_vocab["vst"]["bpb"])
    assert only_vocab["vst"]["vocab_share"] == out["vst"]["vocab_share"]


def test_cl100k_judge_scores_all_continuation_bytes():
    pytest.importorskip("tiktoken")
    from vst.data import text_codec

    encode, nbytes, V = text_codec("cl100k")
    model = text_model(vocab_size=V).eval()
    cont = "naïve café, the end."
    s = judge_sequence(model, "cl100k", PROMPT, cont)
    scored = s["targets"][s["first"]:].tolist()
    assert sum(nbytes(i) for i in scored) == len(cont.encode("utf-8"))
    got = judge_bpb(model, "cl100k", PROMPT, cont)
    assert math.isfinite(got) and got > 0
