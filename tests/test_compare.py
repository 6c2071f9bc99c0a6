"""The honest comparison on a tiny rendered store: same pages for every model, truncation
that really truncates, positions and KV bytes, free-running continuations judged."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from codec import load_codec
from data.store import StoreMeta, StoreWriter, consolidate
from eval.compare import CompareConfig, compare, kv_bytes_per_position, load_run
from render import render_text
from vst.data import collate_vector
from vst.evaluate import Spread, evaluate
from vst.generate import load_model
from vst.losses import gather_pages
from vst.store_source import StoreSource
from vst.train import TrainConfig, make_collate, train

DOCS = [
    ("The river rises in the hills and runs to the sea. " * 14
     + "Boats carry grain down the valley in autumn.\n\n") * 3,
    ("def read(path):\n    with open(path) as f:\n        return f.read()\n\n" * 12),
    ("Section one explains the options of the tool. Each option has a name, a type and "
     "a default value that the user can change on the command line.\n" * 9),
    ("Alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu.\n" * 30),
]


def build_store(root, codec, docs, prefix="d"):
    with StoreWriter(root, 0, StoreMeta.from_codec(codec, mode=codec.mode, layout="npy")) as w:
        for i, text in enumerate(docs):
            pages, images = zip(*render_text(text, codec.render_config))
            w.add_document(f"{prefix}{i}", list(pages), codec.encode(np.stack(images)))
    consolidate(root)
    return root


def _common(store) -> dict:
    return dict(data=str(store), steps=3, batch_size=2, eval_every=0, eval_batches=1,
                save_every=0, tensorboard=False, progress=False, warmup=1, val_fraction=0.5,
                pages_per_window=2, codec_option=["random_init=true"], flavour="debug")


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("compare")
    codec = load_codec("mini", random_init=True)
    store = build_store(tmp / "store", codec, DOCS * 2)
    held = build_store(tmp / "held", codec, DOCS[:2], prefix="h")
    common = _common(store)
    vst = tmp / "vst"
    train(TrainConfig(out=str(vst), dec=1.0, dec_pages=-1, dec_lines=4, head_init="zero",
                      **common))
    text = tmp / "text"
    train(TrainConfig(out=str(text), modality="text", tokenizer="bytes", text_seq_len=1024,
                      **common))
    return codec, store, held, vst, text, tmp


def test_evaluate_scores_a_text_model_on_the_vsts_bytes_as_compare_does(runs):
    """In-training evaluation of a text model whose context (64 bytes) is shorter than a
    window: it scores every byte of the pages the VST is scored on, as compare does."""
    _, store, _, vst, _, tmp = runs
    short = tmp / "text-short"
    train(TrainConfig(out=str(short), modality="text", tokenizer="bytes", text_seq_len=64,
                      **_common(store)))
    model, state, _ = load_run(short)
    T = load_model(vst)[0].cfg.tokens_per_page * 2
    source = StoreSource(store, T, "val", 0.5, shuffle="none")
    collate = make_collate(TrainConfig.from_dict(state["train_config"]), model.cfg)  # as trained
    ev = evaluate(model, source, collate, k=-1, batches=1, batch_size=2)
    summary = compare(CompareConfig(store=str(store), vst=str(vst), text=[str(short)],
                                    out=str(tmp / "short-report"), windows=2, batch_size=2,
                                    val_fraction=0.5, generations=0))
    assert ev["bpb_text"] == pytest.approx(
        summary["splits"]["heldout_docs"]["bpb_text_bytes:text-short"], rel=1e-5)
    spread = Spread(source, 2)  # the two windows evaluate() reads
    batch = collate_vector([spread.window(i) for i in range(len(spread))], (1, T), "1d")
    vst_pages = gather_pages(batch.targets, batch, -1)[1]  # what the VST's evaluation reads
    assert ev["bytes_text"] == sum(len(t.encode()) for t in vst_pages) > 64


def test_compare_scores_every_model_on_the_same_pages(runs):
    codec, store, held, vst, text, tmp = runs
    out = tmp / "report"
    summary = compare(CompareConfig(store=str(store), heldout_store=str(held), vst=str(vst),
                                    text=[str(text)], out=str(out), windows=2, batch_size=2,
                                    val_fraction=0.5, generations=1, prompt_pages=1))
    assert set(summary["splits"]) == {"heldout_docs", "heldout_source"}
    for row in summary["splits"].values():
        assert row["bpb_true"] < row["bpb_null"]  # the tokens carry the page
        label = next(k for k in row if k.startswith("bpb_text_bytes") and "truncated" not in k)
        assert math.isfinite(row[label]) and row[label] > 0
        assert math.isfinite(row[label + "_page_cut"])  # Delta_text of the truncated model
        pos = row["positions"]
        assert pos["text_bytes"] == pytest.approx(pos["chars"], rel=0.05)  # ASCII text
        assert pos["vst"] % codec.n == 0 or pos["documents"] > 1
    kv = summary["splits"]["heldout_docs"]["kv_bytes_per_position"]
    assert kv["vst"] == kv_bytes_per_position(load_model(vst)[0])
    gen = summary["generation"]["scores"]
    assert {"vst", "vst_regrounded", "true"} <= set(gen) and len(gen) == 4
    assert all(0 <= s["vocab_share"] <= 1 for s in gen.values() if s["words"])
    assert math.isfinite(gen["true"]["bpb"])
    saved = json.loads((out / "compare.json").read_text())
    assert saved["splits"]["heldout_docs"]["bpb_pred"] == summary["splits"]["heldout_docs"][
        "bpb_pred"]
    md = (out / "compare.md").read_text()
    assert "| VST, predicted tokens, each line read without later slots" in md
    assert "| reader-only control: the frozen reader's prior" in md
    for row in summary["splits"].values():  # a frozen reader's control is its prior
        assert row["bpb_reader_control"] == row["bpb_null"]
        assert row["context_gain_vst"] == pytest.approx(row["bpb_null"] - row["bpb_pred"])
