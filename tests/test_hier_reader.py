"""The hierarchical reader (a trainable copy of the codec's reader) and the leak it closes.

Under teacher forcing, a VST's prediction for slot t+1 has seen the true token of line t.
A reader whose mixer lets line t look at later slots can therefore read line t from the
prediction for t+1. These tests show which read-outs are leak-free.
"""

from __future__ import annotations

import pytest
import torch

from codec import load_codec
from codec.mini import MiniCodec

PAGE = "\n".join(f"line {i}: the quick brown fox {i * 7} jumps" for i in range(40))


def line_nlls(codec, tokens: torch.Tensor, text: str, causal: bool = False) -> torch.Tensor:
    """NLL of every line of one page [n_lines]."""
    if causal:
        # causal_text_nll sums lines; read them one by one through the "causal" view
        from codec.mini.layout import text_bands
        from codec.mini.reader import line_nll

        L = codec.cfg.geometry.n_lines
        cells = codec.net.line_cells(tokens.float(), "causal")
        return line_nll(codec.net.reader, cells, text_bands(text, codec.render_config, L, 1))
    return codec.line_nll(tokens, [text]).nll[0]


def later_slots_matter(codec, tokens: torch.Tensor, text: str, t: int, causal=False) -> float:
    """Largest change of line t's NLL when every slot after line t is zeroed."""
    cut = tokens.clone()
    cut[:, t + 1:] = 0
    with torch.no_grad():
        a = line_nlls(codec, tokens, text, causal)[t]
        b = line_nlls(codec, cut, text, causal)[t]
    return float((a - b).abs())


@pytest.fixture(scope="module")
def shipped():
    codec = load_codec("mini")  # small: one slot per line
    tokens, texts = codec.encode_text(PAGE)
    return codec, tokens[:1], texts[0]


@pytest.mark.parametrize("t", [0, 5, 17])
def test_trainable_reader_is_leak_free(shipped, t):
    codec, tokens, text = shipped
    reader = codec.trainable_reader()
    assert later_slots_matter(reader, tokens, text, t) == 0.0


@pytest.mark.parametrize("t", [0, 5, 17])
def test_the_same_check_catches_the_bidirectional_mixer(shipped, t):
    codec, tokens, text = shipped
    assert later_slots_matter(codec, tokens, text, t) > 1e-3


@pytest.mark.parametrize("t", [0, 5, 17])
def test_frozen_reader_causal_view_is_leak_free(shipped, t):
    codec, tokens, text = shipped
    assert later_slots_matter(codec, tokens, text, t, causal=True) == 0.0


def test_causal_text_nll_sums_the_causal_lines_and_differs_from_the_page_view(shipped):
    codec, tokens, text = shipped
    noisy = tokens + 2.0 * torch.randn(tokens.shape, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        causal = codec.causal_text_nll(noisy, [text]).nll
        lines = line_nlls(codec, noisy, text, causal=True).sum()
        page = codec.text_nll(noisy, [text]).nll
    assert torch.allclose(causal, lines[None], rtol=1e-5)
    assert float((causal - page).abs()) > 0.5  # nats: later slots do move the page view
    # the last line sees every slot either way
    with torch.no_grad():
        assert torch.allclose(line_nlls(codec, noisy, text, True)[-1],
                              line_nlls(codec, noisy, text)[-1], rtol=1e-4)


def test_trainable_reader_starts_from_the_codec_and_leaves_it_untouched():
    codec = MiniCodec.random("small")
    before = {k: v.clone() for k, v in codec.net.state_dict().items()}
    reader = codec.trainable_reader()
    for k, v in reader.reader_state().items():
        assert torch.equal(v, before[k])
    train = [p for p in reader.parameters() if p.requires_grad]
    names = {n for n, p in reader.net.named_parameters() if p.requires_grad}
    assert train and all(n.startswith(("readout.", "reader.")) for n in names)
    assert not any(n.startswith(("encoder.", "compressor.", "readout.head")) for n in names)
    assert not any(p.requires_grad for p in codec.parameters())
    tokens = torch.randn(2, codec.n, codec.D)
    loss = reader.text_nll(tokens, ["abc\ndef", "xyz"]).nll.sum()
    loss.backward()
    torch.optim.SGD(train, lr=0.1).step()
    assert any(not torch.equal(v, before[k]) for k, v in reader.reader_state().items())
    for k, v in codec.net.state_dict().items():
        assert torch.equal(v, before[k])


def test_reader_state_round_trip_and_refuses_partial_weights():
    codec = MiniCodec.random("small")
    a = codec.trainable_reader()
    for p in a.parameters():
        if p.requires_grad:
            p.data.add_(0.5)
    b = codec.trainable_reader()
    b.load_reader_state(a.reader_state())
    tokens = torch.randn(1, codec.n, codec.D)
    with torch.no_grad():
        assert torch.equal(a.text_nll(tokens, ["hello"]).nll, b.text_nll(tokens, ["hello"]).nll)
    partial = dict(list(a.reader_state().items())[:3])
    with pytest.raises(ValueError, match="missing"):
        b.load_reader_state(partial)


def test_codecs_without_lines_say_so():
    toy = load_codec("toy")
    with pytest.raises(NotImplementedError):
        toy.causal_text_nll(toy.null_tokens(1), ["x"])
    with pytest.raises(NotImplementedError):
        toy.trainable_reader()


def test_causal_score_of_a_line_local_reader_is_its_own_score():
    reader = MiniCodec.random("small").trainable_reader()
    tokens = torch.randn(2, reader.n, reader.D)
    with torch.no_grad():
        assert torch.equal(reader.causal_text_nll(tokens, ["ab\ncd", "e"]).nll,
                           reader.text_nll(tokens, ["ab\ncd", "e"]).nll)


@pytest.mark.parametrize("mode", ["small", "tiny"])
def test_sampled_causal_lines_are_slices_of_the_causal_page(mode):
    codec = MiniCodec.random(mode)
    tokens = torch.randn(2, codec.n, codec.D)
    texts = [PAGE, "a\nb\nc"]
    which = torch.tensor([[0, 7, 31], [3, 30, 12]])
    with torch.no_grad():
        some = codec.line_nll(tokens, texts, which, causal=True).nll
        full = codec.line_nll(tokens, texts, causal=True).nll
        plain = codec.line_nll(tokens, texts, which).nll
    assert torch.allclose(some, full.gather(1, which), rtol=1e-5, atol=1e-5)
    assert torch.allclose(full.sum(1), codec.causal_text_nll(tokens, texts).nll, rtol=1e-5)
    assert float((some - plain).abs().max()) > 1e-3  # later slots do reach the page view


# -- the hierarchical reader in training, checkpoints and every reader of a run ----------------

@pytest.fixture(scope="module")
def hier_runs(tmp_path_factory):
    from tests.test_compare import DOCS, build_store
    from vst.train import TrainConfig, train

    tmp = tmp_path_factory.mktemp("hier")
    codec = load_codec("mini", random_init=True)
    store = build_store(tmp / "store", codec, DOCS * 2)
    common = dict(data=str(store), steps=3, batch_size=2, eval_every=0, eval_batches=1,
                  save_every=0, tensorboard=False, progress=False, warmup=1, val_fraction=0.5,
                  pages_per_window=2, codec_option=["random_init=true"], flavour="debug",
                  dec_lines=4, lr=1e-2)
    out = {}
    for name in ("hier", "hier-control", "learn"):
        out[name] = tmp / name
        out[name + "_result"] = train(TrainConfig.from_recipe(name, out=str(tmp / name),
                                                              **common))
    return codec, store, tmp, out


def test_hier_checkpoint_carries_a_trained_reader_and_the_codec_is_untouched(hier_runs):
    from vst.generate import load_model
    from vst.reader import load_reader

    codec, _, _, runs = hier_runs
    model, state = load_model(runs["hier"])
    reader = load_reader(state)
    assert reader.is_trainable_reader and reader.net.readout.view == "line"
    fresh = load_codec("mini", random_init=True)  # what the codec was before any training
    moved = [k for k, v in reader.reader_state().items()
             if not torch.equal(v, fresh.net.state_dict()[k])]
    assert moved  # the run trained its reader
    for k, v in codec.net.state_dict().items():
        assert torch.equal(v, fresh.net.state_dict()[k])
    # a frozen-reader run reads with the plain codec
    assert not load_reader(load_model(runs["learn"])[1]).is_trainable_reader


def test_reader_control_trains_only_the_reader(hier_runs, tmp_path):
    from safetensors.torch import load_file

    from vst.checkpoint import step_dir
    from vst.train import TrainConfig, train

    _, store, _, _ = hier_runs
    train(TrainConfig.from_recipe(
        "hier-control", out=str(tmp_path), data=str(store), steps=3, batch_size=2,
        eval_every=0, eval_batches=1, save_every=1, keep=5, tensorboard=False, progress=False,
        warmup=1, val_fraction=0.5, pages_per_window=2, codec_option=["random_init=true"],
        flavour="debug", dec_lines=4, lr=1e-2))
    first, last = step_dir(tmp_path, 1), step_dir(tmp_path, 3)
    a, b = load_file(first / "model.safetensors"), load_file(last / "model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)  # no gradient reaches the VST
    ra, rb = load_file(first / "reader.safetensors"), load_file(last / "reader.safetensors")
    assert any(not torch.equal(ra[k], rb[k]) for k in ra)  # the reader learns


def test_hier_counts_the_readers_weight_gradients(hier_runs):
    _, _, _, runs = hier_runs
    hier, learn = runs["hier_result"], runs["learn_result"]
    # the same pages and lines; the trainable reader's backward also computes its weights'
    # gradients (more FLOPs per page read than activation gradients alone)
    assert hier["decoder_flops_per_page"] > 1.2 * learn["decoder_flops_per_page"]


def test_hier_resume_restores_the_reader_exactly(hier_runs, tmp_path):
    from vst.checkpoint import latest_checkpoint, load_extra
    from vst.train import TrainConfig, train

    _, store, _, _ = hier_runs
    kw = dict(data=str(store), batch_size=2, eval_every=0, eval_batches=1, save_every=2,
              tensorboard=False, progress=False, warmup=1, val_fraction=0.5, pages_per_window=2,
              codec_option=["random_init=true"], flavour="debug", dec_lines=4, lr=1e-2, keep=5)
    train(TrainConfig.from_recipe("hier", out=str(tmp_path / "a"), steps=4, **kw))
    train(TrainConfig.from_recipe("hier", out=str(tmp_path / "b"), steps=4, halt_at=2, **kw))
    train(TrainConfig.from_recipe("hier", out=str(tmp_path / "b"), steps=4, resume=True, **kw))
    a = load_extra(latest_checkpoint(tmp_path / "a"), "reader")
    b = load_extra(latest_checkpoint(tmp_path / "b"), "reader")
    assert set(a) == set(b) and all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)


def test_compare_credits_the_vst_against_its_control_and_generate_reads_with_the_reader(
        hier_runs):
    from eval.compare import CompareConfig, compare
    from vst.generate import continue_document, load_model
    from vst.reader import load_reader

    _, store, tmp, runs = hier_runs
    summary = compare(CompareConfig(store=str(store), vst=str(runs["hier"]),
                                    control=str(runs["hier-control"]), out=str(tmp / "cmp"),
                                    windows=2, batch_size=2, val_fraction=0.5, generations=0))
    row = summary["splits"]["heldout_docs"]
    assert row["reader_control"].startswith("its reader trained alone")
    assert row["bpb_reader_control"] != row["bpb_null"]  # another reader than the VST's
    assert row["context_gain_vst"] == pytest.approx(row["bpb_reader_control"] - row["bpb_pred"])
    with pytest.raises(ValueError, match="not a reader-only control"):
        compare(CompareConfig(store=str(store), vst=str(runs["hier"]), control=str(runs["learn"]),
                              out=str(tmp / "cmp2"), windows=2, batch_size=2, val_fraction=0.5,
                              generations=0))
    model, state = load_model(runs["hier"])
    reader = load_reader(state)
    tokens, texts = reader.encode_text(PAGE * 2)
    out = continue_document(model, reader, tokens, texts, 1, 1, reground=True)
    assert len(out.pages) == 1 and isinstance(out.pages[0], str)


def test_regrounding_feeds_the_codecs_own_tokens_back():
    """Every row the VST reads on is the codec's encoding of the text read so far."""
    from vst.config import flavour
    from vst.generate import continue_regrounded
    from vst.model import VST

    codec = MiniCodec.random("small")
    torch.manual_seed(0)
    model = VST(flavour("debug", D=codec.D, grid=codec.grid)).eval()
    prompt, _ = codec.encode_text(PAGE)
    tokens, texts = continue_regrounded(model, codec, prompt[:1].reshape(-1, codec.D), 1)
    fresh, _ = codec.encode_text(texts[0])
    # the final page's rows are the codec's own tokens for its text (all but the last row,
    # which the last read re-encoded too): the VST never read a predicted token back
    assert torch.allclose(tokens[0, :-1], fresh[0, :-1], atol=1e-5)


def test_sft_and_chat_on_a_hier_base_read_with_its_trained_reader(hier_runs, tmp_path):
    from data.corpus.instructions import write_instructions
    from tests.test_sft import toy_samples
    from vst.chat import ChatSession, load_chat_model
    from vst.checkpoint import latest_checkpoint, load_extra
    from vst.sft import sft
    from vst.sft_config import SFTConfig

    _, _, _, runs = hier_runs
    data = write_instructions(toy_samples(4), tmp_path / "train.jsonl")
    sft(SFTConfig(base=str(runs["hier"]), data=str(data), val_data=str(data),
                  out=str(tmp_path / "sft"), steps=2, batch_size=2, warmup=1, log_every=100,
                  save_every=0, eval_samples=1))
    base = load_extra(latest_checkpoint(runs["hier"]), "reader")
    tuned = load_extra(latest_checkpoint(tmp_path / "sft"), "reader")
    assert all(torch.equal(base[k], tuned[k]) for k in base)  # SFT reads with it, frozen
    model, reader, _ = load_chat_model(tmp_path / "sft")
    assert reader.is_trainable_reader
    assert all(torch.equal(v, base[k]) for k, v in reader.reader_state().items())
    answer = ChatSession(model, reader, max_pages=1).ask("hi")
    assert isinstance(answer.text, str)
