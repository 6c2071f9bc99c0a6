"""The K-way mixture read-out (`--mixture K`): K candidate tokens and K mixture logits per
position; decoder-CE reads each line as -log sum_k softmax(logits)_k p(line | page k)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from codec.mini import MiniCodec
from vst.config import flavour
from vst.data import Window, collate_vector
from vst.losses import (LossConfig, compute_losses, decoder_nll, gather_pages, mixed_line_nll,
                        page_nll)
from vst.model import VST

TEXTS = ["one line\nand another\n", "x = 1\n\ny = 2\n" * 3, "a page of prose, " * 12 + "\n",
         "def f(x):\n    return x\n"]


@pytest.fixture(scope="module")
def mini():
    codec = MiniCodec.random("small")
    assert codec.n == codec.n_lines  # `small`: token t holds line t
    return codec


def test_mixture_likelihood_is_the_hand_computed_mixture(mini):
    codec, texts, K = mini, TEXTS[:2], 3
    torch.manual_seed(0)
    cands = (4 * torch.randn(2, codec.n, K, codec.D)).requires_grad_(True)
    logits = (2 * torch.randn(2, codec.n, K)).requires_grad_(True)
    w = torch.softmax(logits.detach().double(), -1)  # line t takes token t's weights
    hand = {}
    for causal in (True, False):
        per = torch.stack([codec.line_nll(cands[:, :, k].detach(), texts, causal=causal).nll
                           for k in range(K)], -1).double()  # [M, L, K], one page at a time
        best, worst = per.min(-1).values, per.max(-1).values
        hand[causal] = best - torch.log((w * torch.exp(best[..., None] - per)).sum(-1))
        got = mixed_line_nll(codec, cands, texts, None, causal, mix=logits).detach().double()
        assert got == pytest.approx(hand[causal], rel=1e-5, abs=1e-4)
        # a proper mixture: never better than the best component, nor worse than the worst
        assert (got >= best - 1e-4).all() and (got <= worst + 1e-4).all()
        assert (worst - best).max() > 0.1  # the components really differ
        page, nbytes = page_nll(codec, cands, texts, causal=causal, mix=logits)
        assert page.detach() == pytest.approx(hand[causal].sum(1).float(), rel=1e-5)
        assert nbytes.tolist() == [len(t.encode()) for t in texts]
    # sampled lines: the same lines `which` for every candidate, scaled to the page
    which = codec.sample_lines(2, 4, torch.Generator().manual_seed(5))
    sampled, _ = page_nll(codec, cands, texts, lines=4, causal=True, mix=logits,
                          generator=torch.Generator().manual_seed(5))
    expect = hand[True].gather(1, which).sum(1) * codec.n_lines / 4
    assert sampled.detach() == pytest.approx(expect.float(), rel=1e-5)
    # K = 1 is the plain reading
    for causal in (True, False):
        one, _ = page_nll(codec, cands[:, :, :1], texts, causal=causal, mix=logits[..., :1])
        plain, _ = decoder_nll(codec, cands[:, :, 0], texts, causal=causal)
        assert one.detach() == pytest.approx(plain.detach(), rel=1e-5)
    # gradients reach every candidate and the logits, never the codec
    sampled.sum().backward()
    assert (cands.grad.abs().sum((0, 1, 3)) > 0).all() and logits.grad.abs().sum() > 0
    assert all(p.grad is None for p in codec.parameters())


class PagesSource:
    """Windows of two pages of `TEXTS`, each opening a document, on random tokens."""

    def __init__(self, codec, P: int = 2) -> None:
        self.grid, self.D, self.n, self.P = codec.grid, codec.D, codec.n, P
        g = torch.Generator().manual_seed(0)
        self.tokens = torch.randn(len(TEXTS), codec.n, codec.D, generator=g).numpy()

    def __len__(self) -> int:
        return len(TEXTS) // self.P

    def window(self, i: int) -> Window:
        n, P = self.n, self.P
        start = np.zeros(P * n, dtype=bool)
        start[0] = True
        return Window(tokens=self.tokens[i * P:(i + 1) * P].reshape(P * n, -1), doc_start=start,
                      page=np.repeat(np.arange(P), n), slot=np.tile(np.arange(n), P),
                      pages=[(j * n, n, TEXTS[i * P + j]) for j in range(P)], doc_ids=[f"d{i}"])


def test_an_untrained_zero_init_mixture_reads_as_the_prior(mini):
    from vst.evaluate import evaluate

    codec, src = mini, PagesSource(mini)
    collate = lambda ws: collate_vector(ws, codec.grid, "3d")  # noqa: E731
    torch.manual_seed(0)
    model = VST(flavour("debug", D=codec.D, grid=codec.grid, head_init="zero", mixture=4))
    ev = evaluate(model, src, collate, codec=codec, k=-1, batches=1, batch_size=2)
    for name in ("bpb_pred", "bpb_pred_bidir", "bpb_pred_top"):
        assert ev[name] == pytest.approx(ev["bpb_null"], rel=1e-5), (name, ev)
    assert 1 / 4 < ev["val_mix_top"] < 1  # random logits: neither uniform nor collapsed
    # training starts at the prior too, and the random mixture logits (not the candidates, all
    # null) break the symmetry: the candidates' first gradients differ
    batch = collate([src.window(0)])
    loss, terms = compute_losses(model, batch, LossConfig(mse=0, cos=0, dec=1, dec_pages=-1),
                                 codec)
    null, nbytes = decoder_nll(codec, codec.null_tokens(2), TEXTS[:2])
    assert terms["dec_bpb"] == pytest.approx(float(null.sum() / nbytes.sum() / np.log(2)),
                                             rel=1e-5)
    assert float(terms["dec_n"]) == 2 * 4  # two pages, each read once per candidate
    loss.backward()
    grads = model.head.proj.weight.grad.view(4, codec.D, -1)
    assert min(float((grads[0] - grads[k]).norm()) for k in (1, 2, 3)) > 1e-3 * float(
        grads[0].norm())
    # once the candidates move, bpb_pred is the leak-free mixture likelihood
    with torch.no_grad():
        model.head.proj.weight.normal_(std=0.3)
    ev = evaluate(model, src, collate, codec=codec, k=-1, batches=1, batch_size=2)
    batch = collate([src.window(i) for i in range(2)])
    with torch.no_grad():
        cands, logits = model.head.components(model(batch.inputs, batch.bos, batch.positions))
        c, texts = gather_pages(cands, batch, -1)
        nll, nbytes = page_nll(codec, c, texts, causal=True, mix=gather_pages(logits, batch, -1)[0])
    assert ev["bpb_pred"] == pytest.approx(float(nll.sum() / nbytes.sum() / np.log(2)), rel=1e-5)
    assert len({ev["bpb_pred"], ev["bpb_pred_bidir"], ev["bpb_pred_top"], ev["bpb_null"]}) == 4


def _train(tmp_path, K: int) -> dict:
    from vst.train import TrainConfig, train

    return train(TrainConfig(out=str(tmp_path / f"k{K}"), data="synthetic", synthetic_docs=12,
                             steps=1, batch_size=2, pages_per_window=2, dec=1.0, dec_pages=-1,
                             mixture=K, eval_every=0, eval_batches=1, save_every=0,
                             tensorboard=False, progress=False, threads=1))


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("mix")
    return {K: _train(tmp, K) for K in (0, 3)}


def test_decoder_flops_per_step_scale_with_k(runs):
    def decoder_flops(res):  # what the step counted beyond the trunk's positions
        return res["train_flops"] - res["positions_seen"] * res["flops_per_token"]

    plain, mix = runs[0], runs[3]
    assert plain["decoder_flops_per_page"] == mix["decoder_flops_per_page"] > 0
    assert mix["history"][0]["dec_n"] == 3 * plain["history"][0]["dec_n"] > 0
    assert decoder_flops(mix) == pytest.approx(3 * decoder_flops(plain), rel=1e-6)
    assert mix["flops_per_token"] > plain["flops_per_token"]  # the wider head counts too
    assert {"bpb_pred", "bpb_pred_top"} <= set(mix["eval"])


def test_generation_samples_a_candidate_and_checkpoints_round_trip(runs, tmp_path):
    from vst.checkpoint import save_checkpoint
    from vst.generate import continue_tokens, load_model

    trained, state = load_model(runs[3]["checkpoint"])
    assert trained.cfg.mixture == 3 and trained.head.proj.out_features == 3 * trained.cfg.D
    D, n = trained.cfg.D, trained.cfg.tokens_per_page
    prompt = torch.randn(n, D)
    assert continue_tokens(trained, prompt, n + 1).shape == (n + 1, D)

    torch.manual_seed(0)
    model = VST(flavour("debug", D=8, grid=(2, 2), mixture=3)).eval()
    save_checkpoint(tmp_path, 1, model, None, {"model_config": model.cfg.to_dict()})
    loaded, _ = load_model(tmp_path)
    prompt = torch.randn(8, 8)
    greedy = continue_tokens(model, prompt, 6)
    assert greedy.shape == (6, 8) and torch.equal(greedy, continue_tokens(loaded, prompt, 6))
    sampled = [continue_tokens(m, prompt, 6, generator=torch.Generator().manual_seed(1))
               for m in (model, loaded)]
    assert torch.equal(*sampled) and sampled[0].shape == (6, 8)
    assert not torch.equal(sampled[0], greedy)  # a draw, not the most-weighted candidate

    # the head emits one of its candidates: the most-weighted, or one drawn by its weight
    h = torch.randn(500, model.cfg.d_model)
    cands, logits = model.head.components(h)
    assert torch.equal(model.head(h), cands[torch.arange(500), logits.argmax(-1)])
    drawn = model.head.sample(h, torch.Generator().manual_seed(0))
    which = (drawn[:, None] == cands).all(-1)
    assert (which.sum(1) == 1).all()  # each draw is exactly one candidate
    freq = which.float().mean(0)
    assert freq == pytest.approx(torch.softmax(logits, -1).mean(0).detach(), abs=0.06)


def test_mixture_options_that_do_not_combine():
    for bad in (dict(head="energy"), dict(gate=True), dict(modality="text")):
        with pytest.raises(ValueError, match="--mixture"):
            flavour("debug", mixture=2, **bad)
    with pytest.raises(ValueError, match="--mixture"):
        flavour("debug", mixture=-1)
