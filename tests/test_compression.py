"""Context-compression arms (issue #16): positions, no look-ahead, truncation, mean pooling,
the layout map, and the `vst eval compression` harness end to end on a tiny setup."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from codec import load_codec
from data.corpus import Document, split_of
from vst.compression import ARMS, ArmsBatch, ArmsModel, arms_batch, segment_mean
from vst.compression_data import build_pairs, token_of_chars
from vst.config import flavour


def _docs(n=12, seed=0):
    from jobs.compression import synthetic_texts

    return synthetic_texts(n, seed)


@pytest.fixture(scope="module")
def toy_pairs():
    codec = load_codec("toy")  # 32-character pages, n = 8 tokens a page
    return build_pairs(_docs(), codec, pages=2, cont_bytes=40, per_doc=3, val_fraction=0.3), codec


def _model(arm, pairs, seed=0):
    torch.manual_seed(seed)
    return ArmsModel(arm, flavour("debug", modality="text", vocab_size=256), P=pairs.P,
                     D=pairs.vis.shape[2]).eval()


def test_pairs_hold_the_context_pages_and_what_follows(toy_pairs):
    pairs, codec = toy_pairs
    docs = {d.id: d.text for d in _docs()}
    assert pairs.P == 2 * codec.n and pairs.vis.shape[1:] == (16, codec.D)
    assert len(pairs) > 8 and pairs.val.any() and (~pairs.val).any()
    i = 0
    for doc_id, text in docs.items():  # the first pair of each document, in order
        ctx = bytes(pairs.ctx[i, : pairs.ctx_len[i]]).decode()
        assert text.startswith(ctx) and pairs.val[i] == (split_of(doc_id, 0.3) == "val")
        assert bytes(pairs.cont[i]) == text[len(ctx):].encode()[:40]
        assert "".join(pairs.page_texts(i)) == ctx
        # the visual tokens are the codec's own tokens of these pages
        want = codec.encode_texts(pairs.page_texts(i)).reshape(16, -1)
        torch.testing.assert_close(torch.from_numpy(pairs.vis[i].astype(np.float32)), want,
                                   atol=0.05, rtol=0.01)
        i += 3  # per_doc windows each (the synthetic documents are long enough)
        if i >= len(pairs):
            break
    assert pairs.seg[pairs.seg >= 0].max() == pairs.P - 1


@pytest.mark.parametrize("arm", ARMS)
def test_each_arm_reads_P_positions_and_never_the_continuation(toy_pairs, arm):
    pairs, _ = toy_pairs
    model = _model(arm, pairs)
    b = arms_batch(pairs, range(4))
    x, real = model.context(b)
    want = int(b.ctx_len.max()) if arm == "full" else pairs.P
    assert x.shape[:2] == (4, want) and real.shape == (4, want)
    if arm != "full":
        assert real.all()
    # another continuation: the same context representation and the same hidden states
    # at every context position (captured at the last block's output)
    other = ArmsBatch(b.vis, b.ctx, b.ctx_len, b.seg, torch.randint(0, 256, b.tgt.shape),
                      b.tgt_valid)
    torch.testing.assert_close(model.context(other)[0], x)
    seen = []
    hook = model.trunk.blocks[-1].register_forward_hook(
        lambda m, i, o: seen.append(o[:, :want].detach()))
    with torch.no_grad():
        a, c = model(b), model(other)
    hook.remove()
    torch.testing.assert_close(seen[0], seen[1])
    assert torch.equal(a[:, 0], c[:, 0])  # the first byte is predicted from context alone
    # prediction t sees target bytes < t only: changing byte t0 moves logits after t0 only
    t0 = 10
    tgt = b.tgt.clone()
    tgt[:, t0] = (tgt[:, t0] + 1) % 256
    with torch.no_grad():
        d = model(ArmsBatch(b.vis, b.ctx, b.ctx_len, b.seg, tgt, b.tgt_valid))
    torch.testing.assert_close(d[:, : t0 + 1], a[:, : t0 + 1])
    assert not torch.allclose(d[:, t0 + 1], a[:, t0 + 1])
    # the context itself matters (else the arm would be blind): another context moves it
    if arm != "visual":
        flipped = ArmsBatch(b.vis, (b.ctx + 7) % 256, b.ctx_len, b.seg, b.tgt, b.tgt_valid)
    else:
        flipped = ArmsBatch(b.vis + 1, b.ctx, b.ctx_len, b.seg, b.tgt, b.tgt_valid)
    with torch.no_grad():
        assert not torch.allclose(model(flipped)[:, 0], a[:, 0])


def test_truncation_keeps_the_last_P_bytes(toy_pairs):
    pairs, _ = toy_pairs
    model = _model("truncation", pairs)
    b = arms_batch(pairs, range(4))
    x, _ = model.context(b)
    for i in range(4):
        n = int(b.ctx_len[i])
        last = b.ctx[i, n - pairs.P:n]
        torch.testing.assert_close(x[i], model.trunk.embed(last))
        assert bytes(last.tolist()) == bytes(pairs.ctx[i, n - pairs.P:n])


def test_full_arm_padding_is_invisible(toy_pairs):
    pairs, _ = toy_pairs
    model = _model("full", pairs)
    # a batch with one context cut short: its logits equal those of the same context alone
    b = arms_batch(pairs, range(2))
    b.ctx_len[1] -= 9
    b.seg[1, b.ctx_len[1]:] = -1
    with torch.no_grad():
        both = model(b)
        alone = model(ArmsBatch(b.vis[1:], b.ctx[1:, : b.ctx_len[1]], b.ctx_len[1:],
                                b.seg[1:, : b.ctx_len[1]], b.tgt[1:], b.tgt_valid[1:]))
    torch.testing.assert_close(both[1:], alone, atol=1e-4, rtol=1e-4)


def test_mean_pooling_matches_a_hand_computation():
    torch.manual_seed(0)
    emb = torch.randn(2, 7, 5)
    seg = torch.tensor([[0, 0, 1, 1, 1, 3, -1], [2, 2, 2, 2, 0, 1, 1]])
    mean, full = segment_mean(emb, seg, 4)
    hand = torch.zeros(2, 4, 5)
    for b in range(2):
        for p in range(4):
            rows = [emb[b, j] for j in range(7) if seg[b, j] == p]
            if rows:
                hand[b, p] = sum(rows) / len(rows)
    torch.testing.assert_close(mean, hand)
    assert full.tolist() == [[True, True, False, True], [True, True, True, False]]
    # the arm: its byte embeddings averaged over each token's bytes, then its projection;
    # an empty span reads the learned empty vector
    model = ArmsModel("mean_pool", flavour("debug", modality="text"), P=4, D=8)
    ctx = torch.randint(1, 256, (2, 7))
    b = ArmsBatch(torch.zeros(2, 4, 8), ctx, torch.tensor([6, 7]), seg, ctx, ctx > -1)
    x, _ = model.context(b)
    e = model.trunk.embed(ctx)
    want = model.enc.proj(e[0, 2:5].mean(0))
    torch.testing.assert_close(x[0, 1], want)
    torch.testing.assert_close(x[0, 2], model.enc.empty)


def test_layout_map_follows_the_mini_grid():
    text = "".join(f"line {i:02d}\n" for i in range(40))
    # one line reaching past mid-page (~8.8 px a character on the 512 px mini page)
    text = text.replace("line 03\n", "x" * 25 + " " + "y" * 25 + "\n")
    for mode, per_token in (("tiny", 2), ("small", 1), ("base", 1)):
        codec = load_codec(f"mini:{mode}", random_init=True)
        page = codec.paginate(text)[0]
        tok = token_of_chars(codec, page)
        assert len(tok) == len(page.text) and tok.max() < codec.n
        line_of = np.cumsum([0] + [c == "\n" for c in page.text[:-1]])
        cols = codec.grid[1]
        assert (tok // cols == line_of // per_token).all()
        if mode == "base":  # the long line's right half is the second token of its row
            start = page.text.index("x")
            assert tok[start] == 6 and tok[start + 50] == 7
            assert (tok[line_of != 3] % 2 == 0).all()
        else:
            assert cols == 1


def test_harness_end_to_end_has_every_arm_and_ratio(tmp_path):
    from jobs.compression import CompressionConfig, run

    cfg = CompressionConfig(out=str(tmp_path), codec="mini", modes=["tiny", "small"],
                            random_init=True, synthetic_docs=6, pages=1, cont_bytes=48,
                            predict_bytes=32, max_pairs=18, per_doc=3, val_fraction=0.3,
                            eval_pairs=4, steps=3, batch=4, seeds=[0, 1], recon=True,
                            recon_bytes=12, recon_eval_pairs=2)
    summary = run(cfg)
    rows = summary["rows"]
    got = {(r["mode"], r["arm"]) for r in rows}
    refs = ("decoder_prior", "decoder_true_tokens")
    assert got == {(m, a) for m in ("tiny", "small")
                   for a in (*ARMS, "vst", *refs, "visual_frozen_decoder")}
    for r in rows:
        if r["arm"] in (*ARMS, "vst"):
            assert r["bpb"]["n"] == 2 and 0 < r["bpb"]["mean"] < 20
            # the pure VST's reconstruction is the frozen decoder's (its own row)
            assert r["recon_precision"]["n"] == (0 if r["arm"] == "vst" else 2)
        if r["arm"] in refs:  # untrained: measured once
            assert r["bpb"]["n"] == 1 and r["steps"] == 0
        assert r["P"] == (16 if r["mode"] == "tiny" else 32)
    by = {(r["mode"], r["arm"]): r for r in rows}
    for mode in ("tiny", "small"):
        budget = by[(mode, "visual")]["flops"]
        assert by[(mode, "visual")]["steps"] == 3
        assert by[(mode, "full")]["steps"] < 3  # more positions: fewer steps, same FLOPs
        for arm in (*ARMS, "vst"):
            r = by[(mode, arm)]
            per_step = r["flops"] / r["steps"]
            # equal budgets to within half a step; at least one step for an arm whose
            # step costs more than this tiny budget (the full text here)
            assert abs(r["flops"] - budget) <= per_step / 2 + 1 or \
                (r["steps"] == 1 and per_step > budget)
    # both modes page the same text, so the full-text arm (which reads no token) ran once
    assert by[("small", "full")]["bpb"] == by[("tiny", "full")]["bpb"]
    reused = [r for r in summary["results"] if r.get("reused_from")]
    assert {(r["mode"], r["arm"], r["reused_from"]) for r in reused} == {("small", "full", "tiny")}
    md = (tmp_path / "compression.md").read_text()
    for name in ("truncation", "mean pooling", "conv1d", "full text", "visual", "pure VST"):
        assert name in md
    assert (tmp_path / "compression.png").stat().st_size > 0
    assert json.loads((tmp_path / "compression.json").read_text())["rows"]
    # the pairs are cached: a second run reads them back
    assert len(list((tmp_path / "pairs").glob("*.npz"))) == 2
    # finished runs are kept: the report is rebuilt from runs.jsonl without training
    from dataclasses import replace

    lines = (tmp_path / "runs.jsonl").read_text().count("\n")
    again = run(replace(cfg, report_only=True))
    assert again["rows"] == json.loads(json.dumps(rows))
    assert (tmp_path / "runs.jsonl").read_text().count("\n") == lines
    # another setup does not reuse them
    assert run(replace(cfg, steps=4, report_only=True))["rows"] == []
    # --full-steps: the upper bound trains that many steps whatever its FLOPs
    up = run(replace(cfg, out=str(tmp_path / "up"), modes=["tiny"], arms=["visual", "full"],
                     seeds=[0], recon=False, full_steps=2))["rows"]
    full = next(r for r in up if r["arm"] == "full")
    visual = next(r for r in up if r["arm"] == "visual")
    assert full["steps"] == 2 and full["flops"] > 2 * visual["flops"]


def test_the_command_is_mounted():
    from typer.testing import CliRunner

    from jobs.cli import app

    out = CliRunner().invoke(app, ["eval", "compression", "--help"])
    assert out.exit_code == 0 and "--predict-bytes" in out.output


# -- the continuation page and the pure VST ---------------------------------------------------
@pytest.fixture(scope="module")
def mini_pairs():
    codec = load_codec("mini:small", random_init=True)
    text = "".join(f"{'word ' * (i % 9 + 1)}line {i:03d}\n" for i in range(200))
    docs = [Document(id=f"doc-{j}", text=text[j * 7:], meta={}) for j in range(4)]
    return build_pairs(docs, codec, pages=1, cont_bytes=256, per_doc=2, val_fraction=0.5), codec


def test_the_continuation_page_starts_where_the_context_ends(mini_pairs):
    from codec.mini.layout import text_bands

    pairs, codec = mini_pairs
    assert pairs.nxt.shape[1:] == (codec.n, codec.D)
    for i in range(len(pairs)):
        page = pairs.next_page_text(i)
        assert bytes(pairs.cont[i]) == page.encode()[: pairs.cont.shape[1]]
        # the codec's own tokens of that page
        want = codec.encode(codec.rasterize(codec.paginate(page)[0])[None])[0]
        torch.testing.assert_close(torch.from_numpy(pairs.nxt[i].astype(np.float32)), want,
                                   atol=0.05, rtol=0.01)
        # the scored bytes are exactly the first whole lines the decoder reads
        for limit in (60, 128):
            m, n = int(pairs.score_lines(limit)[i]), int(pairs.score_len(limit)[i])
            assert 0 < n <= limit and m >= 1
            bands = text_bands(page, codec.render_config, codec.n_lines, 1)
            assert "".join(bands[:m]).encode() == page.encode()[:n]
            assert len("".join(bands[: m + 1]).encode()) > limit  # the next line does not fit


def test_every_arm_is_scored_on_the_same_bytes(mini_pairs):
    from vst.compression_vst import scored_nll

    pairs, codec = mini_pairs
    idx = np.arange(len(pairs))
    b = arms_batch(pairs, idx, "continuation", 128, scored=True)
    assert b.tgt_valid.sum(1).tolist() == pairs.score_len(128)[idx].tolist()
    # the decoder's scored lines are a slice of its page likelihood: all lines = text_nll
    tok = torch.from_numpy(pairs.nxt[idx].astype(np.float32))
    texts = [pairs.next_page_text(int(i)) for i in idx]
    with torch.no_grad():
        whole = codec.text_nll(tok, texts).nll.sum()
        torch.testing.assert_close(scored_nll(codec, tok, pairs, idx, 10**6), whole)
        lines = codec.line_nll(tok, texts).nll
        m = torch.from_numpy(pairs.score_lines(128)[idx])
        want = sum(lines[j, : m[j]].sum() for j in range(len(idx)))
        torch.testing.assert_close(scored_nll(codec, tok, pairs, idx, 128), want)
        # a first line longer than the scored bytes cannot be scored alike: refused
        assert (pairs.score_lines(5) == 0).all()
        with pytest.raises(ValueError, match="first line is longer"):
            scored_nll(codec, tok, pairs, idx, 5)


def test_pure_vst_reads_the_context_pages_and_predicts_the_next_page(mini_pairs):
    from vst.compression_vst import PureVST, decoder_references
    from vst.flops import count_flops

    pairs, codec = mini_pairs
    vst = PureVST(pairs, codec, flavour="debug")
    w = vst.source.window(0)
    n = codec.n
    assert w.tokens.shape == (2 * n, codec.D) and not w.doc_start.any()
    np.testing.assert_array_equal(w.tokens[n:], pairs.nxt[0].astype(np.float32))
    assert w.pages[1][2] == pairs.next_page_text(0)
    # the optimizer gets the VST's own weights, never the frozen codec's
    assert {id(q) for q in vst.parameters()} == {id(q) for q in vst.model.parameters()}
    assert not vst.model.head.proj.weight.any()  # the recipe's head starts at null tokens
    torch.nn.init.normal_(vst.model.head.proj.weight)  # so that predictions move below
    pred = vst.predict_next_page([0, 1])
    assert pred.shape == (2, n, codec.D)
    # teacher forcing is causal: changing the true continuation tokens from j on leaves
    # the predictions of tokens <= j unchanged (token j is predicted from tokens < j)
    j = n // 2
    saved = pairs.nxt.copy()
    try:
        pairs.nxt[:2, j:] += np.float16(1.0)
        moved = vst.predict_next_page([0, 1])
    finally:
        pairs.nxt[:] = saved
    torch.testing.assert_close(moved[:, : j + 1], pred[:, : j + 1])
    assert not torch.allclose(moved[:, j + 1:], pred[:, j + 1:])
    # a training step's FLOPs include the frozen decoder's forward and backward
    idx = list(range(4))
    trunk_only = PureVST(pairs, codec, flavour="debug", dec=0.0, mse=1.0)
    _, with_dec = count_flops(lambda: vst.loss(idx).backward())
    _, without = count_flops(lambda: trunk_only.loss(idx).backward())
    assert with_dec > 2 * without
    scores = {"bpb": vst.heldout(np.arange(len(pairs)), limit=128),
              **decoder_references(codec, pairs, np.arange(len(pairs)), limit=128)}
    assert set(scores) == {"bpb", "decoder_prior", "decoder_true_tokens"}
    assert all(0 < v < 20 for v in scores.values())


def test_the_verdict_needs_separate_seed_ranges():
    from eval.compression_report import summarize, verdict

    def runs(arm, values, P=32):
        return [{"mode": "m", "arm": arm, "seed": i, "P": P, "positions": P, "ctx_bytes": 1000,
                 "bpb": v, "steps": 1, "flops": 1} for i, v in enumerate(values)]

    rows = summarize(runs("visual", [2.0, 2.1]) + runs("truncation", [2.2, 2.3])
                     + runs("mean_pool", [2.05, 2.4]) + runs("conv", [1.5]))
    (line,) = verdict(rows)
    assert "beats truncation" in line and "ties (seed ranges overlap) mean pooling" in line
    assert "loses to learned compressor (conv1d) on one seed" in line
