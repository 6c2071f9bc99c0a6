"""The one text-scoring path (vst.evaluate.score_text): whole windows in strided chunks,
the VST's pages and bytes, and the page cut of Delta_text (at evaluation and trained).

That in-training evaluation and `vst eval compare` agree on a store is
tests/test_compare.py (test_evaluate_scores_a_text_model_on_the_vsts_bytes_as_compare_does).
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from codec.toy import ToyCodec
from vst.config import flavour
from vst.data import TextCollate, collate_vector
from vst.evaluate import eval_batches, evaluate, score_text, scored_mask
from vst.losses import gather_pages
from vst.model import VST
from vst.synthetic import SyntheticSource
from vst.train import TrainConfig, train


@pytest.fixture(scope="module")
def source():
    return SyntheticSource(ToyCodec(), n_docs=24, pages_per_window=4)


def text_model(seq_len: int = 64, seed: int = 0) -> VST:
    torch.manual_seed(seed)
    return VST(flavour("debug", modality="text", vocab_size=256, rope="1d",
                       max_seq_len=seq_len)).eval()


def test_one_forward_equals_strided_chunks_and_a_short_context_differs(source):
    model = text_model()
    batches = eval_batches(source, 2, 3)
    collate = TextCollate("bytes")
    T = collate(batches[0]).targets.size(1)
    # one forward over whole windows, by hand
    nll = nbytes = 0.0
    for group in batches:
        b = collate(group)
        with torch.no_grad():
            h = model(b.inputs, b.bos, b.positions, b.doc_ids)
            ce = F.cross_entropy(model.lm_head(h).transpose(1, 2), b.targets, reduction="none")
        s = b.valid.float()
        s[~b.first_valid, :] *= (b.page_of[~b.first_valid] > 0).float()  # page 0: no context
        nll, nbytes = nll + float((ce * s).sum()), nbytes + float((b.n_bytes * s).sum())
    whole = score_text(model, batches, collate, context=4 * T, stride=4 * T)
    assert whole["bytes"] == nbytes
    assert whole["bpb"] == pytest.approx(nll / nbytes / math.log(2), rel=1e-5)
    # chunks whose stride does not divide T: every target is scored exactly once
    chunked = score_text(model, batches, collate, context=4 * T, stride=T // 3 + 1)
    assert chunked["bytes"] == whole["bytes"]
    assert chunked["bpb"] == pytest.approx(whole["bpb"], rel=1e-5)
    short = score_text(model, batches, collate, context=8, stride=4)
    assert short["bytes"] == whole["bytes"] and short["bpb"] != pytest.approx(whole["bpb"])


@pytest.mark.parametrize("k", [-1, 1])
def test_text_scores_the_bytes_of_the_vsts_pages(source, k):
    model = text_model()
    batches = eval_batches(source, 2, 4)
    ev = evaluate(model, source, TextCollate("bytes", seq_len=16), k=k, batches=2,
                  batch_size=4)  # a training cut of 16 tokens does not cut evaluation
    vst_bytes = 0
    for group in batches:
        b = collate_vector(group, source.grid, "3d")
        vst_bytes += sum(len(t.encode()) for t in gather_pages(b.targets, b, k)[1])
    assert ev["bytes_text"] == vst_bytes > 0


def test_page_cut_hides_earlier_pages(source):
    model = text_model(seq_len=4096)
    w = source.window(0)
    other = source.window(5)
    # the same window with its first page's text replaced (same length, other bytes)
    t0, n, text = w.pages[0]
    swapped = type(w)(**{**w.__dict__, "pages": [(t0, n, other.pages[0][2][: len(text)]
                                                  .ljust(len(text), "x"))] + w.pages[1:]})

    def page1_logits(window, page_cut):
        b = TextCollate("bytes", page_cut=page_cut)([window])
        with torch.no_grad():
            h = model(b.inputs, b.bos, b.positions, b.doc_ids)
        return model.lm_head(h)[0, b.page_of[0] == 1]

    assert torch.equal(page1_logits(w, True), page1_logits(swapped, True))
    assert not torch.allclose(page1_logits(w, False), page1_logits(swapped, False))
    full = evaluate(model, source, TextCollate("bytes"), k=-1, batches=2, batch_size=4,
                    page_cut=True)
    # evaluation's page cut (each scored page a row of its own) is training's (one window,
    # attention masked at page boundaries): the same score
    nll = nbytes = 0.0
    for group in eval_batches(source, 2, 4):
        b = TextCollate("bytes", page_cut=True)(group)
        with torch.no_grad():
            h = model(b.inputs, b.bos, b.positions, b.doc_ids)
            ce = F.cross_entropy(model.lm_head(h).transpose(1, 2), b.targets, reduction="none")
        s = scored_mask(b, -1).float()
        nll, nbytes = nll + float((ce * s).sum()), nbytes + float((b.n_bytes * s).sum())
    assert full["bpb_text_page_cut"] == pytest.approx(nll / nbytes / math.log(2), rel=1e-5)
    # the same pages, other context (an untrained model leans on context only a little)
    assert full["bpb_text_page_cut"] != pytest.approx(full["bpb_text"], rel=1e-6)


def test_a_page_cut_arm_trains_and_reports_its_own_context(tmp_path):
    cfg = TrainConfig.from_recipe("text-bytes-page", out=str(tmp_path), steps=2, batch_size=2,
                                  synthetic_docs=24, flavour="debug", text_seq_len=64,
                                  eval_batches=1, save_every=0, tensorboard=False,
                                  progress=False, warmup=1)
    assert cfg.text_context == "page"
    ev = train(cfg)["eval"]
    assert {"bpb_text", "bpb_text_page_cut"} <= set(ev)
    with pytest.raises(ValueError, match="text-context"):
        TrainConfig(text_context="document")
