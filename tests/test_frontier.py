"""The text frontier: every candidate trains at the budget, is scored on selection documents
that are neither trained on nor held out, and the lowest score wins."""

from __future__ import annotations

import json

import pytest
from test_compare import DOCS, build_store

from codec import load_codec
from data.corpus import split_of
from jobs.frontier import FrontierConfig, selection_docs, text_frontier
from vst.data import TextCollate
from vst.evaluate import evaluate
from vst.generate import load_model
from vst.store_source import StoreSource

VAL, SELECT = 0.3, 0.25  # of d0..d7 by hash: val d0 d5, selection d1 d6 d7, train d2 d3 d4


def test_selection_band_is_neither_trained_on_nor_held_out():
    ids = [f"d{i}" for i in range(8)]
    docs = selection_docs(ids, VAL, SELECT)
    assert docs == ["d1", "d6", "d7"]
    assert not [d for d in docs if split_of(d, VAL) == "val"]  # not compare's held-out docs
    assert all(split_of(d, VAL + SELECT) == "val" for d in docs)  # held out of training
    with pytest.raises(ValueError, match="family"):
        FrontierConfig(data="s", family="learn")
    with pytest.raises(ValueError, match="token store"):
        FrontierConfig(data="synthetic")


def test_frontier_trains_every_candidate_and_keeps_the_best(tmp_path, local_ray):
    codec = load_codec("mini", random_init=True)
    store = build_store(tmp_path / "store", codec, DOCS * 2)
    cfg = FrontierConfig(out=str(tmp_path / "frontier"), data=str(store), budget=1.5e8,
                         depth=[1, 2], lr=[3e-3, 3e-2], val_fraction=VAL,
                         select_fraction=SELECT, select_windows=2, flavour="debug",
                         batch_size=2, train_option=["pages_per_window=2", "text_seq_len=64"])
    summary = text_frontier(cfg, log=lambda m: None)
    cands = summary["candidates"]
    assert {(c["depth"], c["lr"]) for c in cands} == {(1, 3e-3), (1, 3e-2), (2, 3e-3),
                                                       (2, 3e-2)}
    assert all(c["train_flops"] >= cfg.budget and c["reached_budget"] for c in cands)
    # each score is the selection documents' bpb through the one text-scoring path
    source = StoreSource(store, 64, "val", VAL, shuffle="none", docs=["d1", "d6", "d7"])
    for c in cands:
        model, _ = load_model(c["out"])
        ev = evaluate(model, source, TextCollate("bytes"), k=-1, batches=1, batch_size=2)
        assert c["bpb_select"] == pytest.approx(ev["bpb_text"], rel=1e-6)
    best = min(cands, key=lambda c: c["bpb_select"])
    assert summary["winner"] == best
    assert len({c["bpb_select"] for c in cands}) == 4  # a real choice among four scores
    assert summary["statement"].startswith(
        f"text-bytes: depth {best['depth']} lr {best['lr']:g} won of 2 depths x 2 lrs")
    saved = json.loads((tmp_path / "frontier" / "frontier.json").read_text())
    assert saved["winner"]["name"] == best["name"] and saved["selection"]["documents"] == 3
    # a re-run trains nothing and reads the cached scores
    again = text_frontier(cfg, log=lambda m: None)
    assert again["winner"] == summary["winner"]
    for c in cands:  # one training invocation each (jobs.sweep.run_trial's record)
        assert len((tmp_path / "frontier" / "trials" / c["name"] / "sweep_runs.jsonl")
                   .read_text().splitlines()) == 1
