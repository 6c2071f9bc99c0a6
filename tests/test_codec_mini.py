"""The mini codec: CTC pieces, layout-given bands, a tiny model that learns, and the
shipped checkpoint reading freshly rendered held-out text."""

from __future__ import annotations

import json
import math
import random

import numpy as np
import pytest
import torch

from codec import load_codec
from codec.mini import MODES, WEIGHTS_DIR, mode_config, vocab
from codec.mini.ctc import band_nll, best_path, ctc_frames_needed, fit_target
from codec.mini.data import bands_of, render_pages, synthetic_text, to_sample
from codec.mini.model import MiniNet, to_ink
from codec.text_metrics import precision
from render import get_preset, paginate, rasterize

# The shipped default must read held-out text (a source it never saw) at least this well.
SHIPPED_PRECISION_FLOOR = 0.95
TEXT = ("Optical compression renders long text as page images.\n"
        "    def encode(pages):\n        return tokens  # batched\n\n"
        "A line that is long enough to wrap around the right margin of the mini page, "
        "so that the layout splits it softly.\n")


def one_hot_logits(ids: list[int], frames: int) -> torch.Tensor:
    logits = torch.full((frames, vocab.N_CLASSES), -20.0)
    for f in range(frames):
        logits[f, ids[f] if f < len(ids) else vocab.BLANK] = 20.0
    return logits


def test_best_path_merges_repeats_and_drops_blanks():
    h, e, l, o = vocab.encode("helo")
    ids = [h, h, 0, e, l, 0, l, l, o, 0]
    assert best_path(one_hot_logits(ids, 12)[None]) == ["hello"]


def test_to_ink_is_the_channel_mean_exactly():
    # colour pages too: the fast path must equal the plain float mean bit for bit
    rgb = torch.from_numpy(np.random.default_rng(0).integers(0, 256, (2, 7, 5, 3), np.uint8))
    assert torch.equal(to_ink(rgb), 1.0 - rgb.float().mean(-1) / 255.0)
    assert torch.equal(to_ink(rgb[..., 1]), 1.0 - rgb[..., 1].float() / 255.0)
    assert to_ink(torch.zeros(1, 2, 2, 3, dtype=torch.uint8)).eq(1.0).all()


def test_ctc_frame_budget():
    assert ctc_frames_needed(vocab.encode("aab")) == 4
    ids, cut = fit_target(vocab.encode("aaaa"), 5)
    assert vocab.decode(ids) == "aaa" and cut == 1


def test_band_nll_known_values():
    logits = torch.zeros(2, 6, vocab.N_CLASSES)  # uniform frames
    nll = band_nll(logits, ["", "ab"])
    # empty band: the all-blank path is the only one
    assert nll[0].item() == pytest.approx(6 * math.log(vocab.N_CLASSES), rel=1e-5)
    # a confident path scores near zero, a wrong text far higher
    path = one_hot_logits([vocab.encode("a")[0], 0, vocab.encode("b")[0]], 6)[None]
    good, bad = band_nll(path, ["ab"]), band_nll(path, ["ba"])
    assert good.item() < 1e-3
    assert bad.item() > 10
    # unknown characters stay finite and cost more
    assert torch.isfinite(band_nll(logits[:1], ["\u4e2d"])).all()


@pytest.mark.parametrize("mode", sorted(MODES))
def test_bands_tile_the_page(mode):
    cfg = get_preset("mini")
    c = mode_config(mode, cfg)
    for page in paginate(TEXT * 8, cfg):
        sample = to_sample(page, rasterize(page, cfg), cfg)
        assert "".join(bands_of(sample, c.rows, c.lines_per_band)) == page.text


def test_aligned_path_is_a_ctc_path_of_the_line():
    cfg = get_preset("mini")
    text = synthetic_text(random.Random(1), ["alpha", "beta", "gamma"]) + TEXT
    page = next(iter(paginate(text, cfg)))
    sample = to_sample(page, rasterize(page, cfg), cfg)
    aligned = 0
    for path, (a, b) in zip(sample.frames, sample.lines):
        if path is None:
            continue
        aligned += 1
        assert best_path(one_hot_logits(path.tolist(), len(path))[None])[0] == page.text[a:b]
    assert aligned >= len(sample.lines) - 2


def test_tiny_codec_learns_in_a_few_steps():
    from codec.mini.train import page_loss

    torch.manual_seed(0)
    cfg = get_preset("mini")
    net = MiniNet(mode_config("small", cfg, dim=16, D=32, code=4, depth=1))
    samples = render_pages([TEXT * 3], cfg, max_pages=2)
    ink = torch.from_numpy(np.stack([s.ink for s in samples]))
    ink = 1.0 - ink.float() / 255.0
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    losses = []
    for _ in range(30):
        loss, chars = page_loss(net, net.encode(ink), samples, aligned=1.0)
        opt.zero_grad()
        (loss / chars).backward()
        opt.step()
        losses.append(loss.item() / chars)
    assert losses[-1] < 0.6 * losses[0], losses


def test_random_codec_is_frozen_and_tokens_get_gradients():
    codec = load_codec("mini", mode="tiny", random_init=True)
    page, image = next(iter(__import__("render").render_text(TEXT, codec.render_config)))
    tokens = codec.encode([image]).requires_grad_(True)
    codec.text_nll(tokens, [page.text]).nll.sum().backward()
    assert tokens.grad is not None and tokens.grad.abs().sum() > 0
    assert all(p.grad is None and not p.requires_grad for p in codec.parameters())


# ------------------------------------------------------------------- shipped checkpoint

def test_shipped_weights_are_small_and_described():
    files = list(WEIGHTS_DIR.iterdir())
    assert sum(f.stat().st_size for f in files) < 20 * 2**20
    for mode in MODES:
        meta = json.loads((WEIGHTS_DIR / f"{mode}.json").read_text())
        assert meta["version"].startswith(f"mini-{mode}-")
        assert meta["render_config"] == get_preset("mini").to_dict()
        assert (WEIGHTS_DIR / f"{mode}.safetensors").exists()


def test_shipped_default_reads_heldout_text():
    from data.corpus import heldout_texts

    codec = load_codec("mini")  # no arguments: default mode, offline
    texts = heldout_texts(n=3, min_chars=1500)
    pages = [next(iter(paginate(t, codec.render_config))) for t in texts]
    decoded = codec.decode(codec.encode([rasterize(p, codec.render_config) for p in pages]))
    scores = [precision(d, p.text) for d, p in zip(decoded, pages)]
    assert np.mean(scores) >= SHIPPED_PRECISION_FLOOR, scores
    # the blind floor is far below: the tokens carry the page
    blind = codec.decode(codec.null_tokens(len(pages)))
    assert np.mean([precision(b, p.text) for b, p in zip(blind, pages)]) < 0.5


def test_drop_blank_tail_keeps_the_text_its_last_line_end_and_a_full_pages_end():
    from codec.mini.layout import drop_blank_tail

    lines = ["a\n", "\n", "b \n", "\n", "  \n", "\n", ""]
    assert drop_blank_tail(lines, keep=2) == ["a\n", "\n", "b \n", "", "", "", ""]
    # a tail as short as a full page's end (a page break in a paragraph break) is kept
    assert drop_blank_tail(lines[:5], keep=2) == lines[:5]
    assert drop_blank_tail(["\n", " ", ""], keep=2) == ["", "", ""]  # a blank page: nothing


@pytest.mark.parametrize("mode", ["base", "small"])
def test_blank_area_below_a_short_page_decodes_as_nothing(mode):
    """Below a short page's last line the page is blank; `base` once read each blank line
    as a newline (12 trailing newlines on the first text, up to 21 on held-out pages)."""
    codec = load_codec("mini", mode=mode)
    texts = ["def f(x):\n    return x + 1\n\nprint(f(2))\n",
             "Hello world.\nThis is a short page.\nThird line here.\n"]
    for text in texts:
        tokens, (truth,) = codec.encode_text(text)
        (decoded,) = codec.decode(tokens)
        trailing = len(truth) - len(truth.rstrip("\n"))
        assert len(decoded) - len(decoded.rstrip("\n")) <= trailing, (decoded, truth)


@pytest.mark.slow
@pytest.mark.parametrize("mode", sorted(MODES))
def test_every_shipped_mode_round_trips(mode):
    from data.corpus import heldout_texts

    codec = load_codec("mini", mode=mode)
    texts = heldout_texts(n=4, min_chars=1500)
    pages = [next(iter(paginate(t, codec.render_config))) for t in texts]
    decoded = codec.decode(codec.encode([rasterize(p, codec.render_config) for p in pages]))
    assert np.mean([precision(d, p.text) for d, p in zip(decoded, pages)]) > 0.5


def test_settle_line_ends_follows_the_renderers_wrapping():
    from codec.mini.layout import settle_line_ends
    from render.layout import Typesetter

    setter = Typesetter(get_preset("mini"))
    long = "x" * 70 + " "
    bands = ["short line ", "next\n", long, "longwordhere\n", "a ", "\n", "end "]
    out = settle_line_ends(bands, setter)
    assert out[0] == "short line\n"  # "next" would have fitted: a hard break
    assert out[2] == long  # "longwordhere" would not have fitted: a real soft wrap
    assert out[4] == "a\n"  # a wrap never continues with an empty line
    assert out[6] == "end "  # the page's last line may wrap onto the next page
    # and the rule never touches text that was decoded right
    cfg = get_preset("mini")
    for page in paginate(TEXT * 6, cfg):
        c = mode_config("small", cfg)
        sample = to_sample(page, rasterize(page, cfg), cfg)
        bands = bands_of(sample, c.rows, c.lines_per_band)
        assert settle_line_ends(bands, setter) == bands


# ------------------------------------------------------------------- causal reader

def _reader(seed: int = 0):
    from codec.mini.reader import CausalReader

    torch.manual_seed(seed)
    return CausalReader(frame_dim=6, cells=12, dim=32, depth=2, heads=4).eval()


def test_causal_reader_greedy_cache_matches_teacher_forcing():
    from codec.mini.reader import EOS, teacher_forcing

    reader = _reader()
    cells = torch.randn(5, 12, 12)
    lines = reader.greedy(cells, max_len=9)
    texts = [vocab.decode(ids) for ids in lines]
    inputs, _, _ = teacher_forcing(texts)
    with torch.no_grad():
        argmax = reader(cells, inputs).argmax(-1)
    for r, ids in enumerate(lines):
        assert argmax[r, :len(ids)].tolist() == ids  # the KV-cached steps = full forward
        if len(ids) < 9:
            assert argmax[r, len(ids)].item() == EOS


def test_causal_reader_is_causal_and_reads_its_prefix():
    reader = _reader(1)
    cells = torch.randn(1, 12, 12)
    a = torch.tensor([[0, 40, 41, 42, 43]])
    b = a.clone()
    b[0, 3] = 50
    with torch.no_grad():
        la, lb = reader(cells, a), reader(cells, b)
        lc = reader(cells + torch.randn_like(cells), a)
    assert torch.allclose(la[0, :3], lb[0, :3], atol=1e-5)  # the past ignores the future
    assert not torch.allclose(la[0, 3:], lb[0, 3:], atol=1e-4)
    assert not torch.allclose(la, lc, atol=1e-4)  # every step sees the visual prefix


def test_line_nll_charges_unknown_characters_and_line_ends():
    from codec.mini.reader import line_nll

    reader = _reader(2)
    cells = torch.randn(3, 12, 12)
    nll = line_nll(reader, cells, ["ab", "ab\u4e2d", ""])
    assert torch.isfinite(nll).all() and (nll > 0).all()
    assert nll[1] > nll[0] + vocab.UNK_NATS - 1  # the unknown CJK character costs 2^16 choices
    assert nll[2] > 0  # an empty slot still pays for its end


def _tiny_causal_net():
    torch.manual_seed(0)
    return MiniNet(mode_config("small", get_preset("mini"), dim=16, D=32, code=4, depth=1,
                               reader="causal", reader_dim=32, reader_depth=1))


def test_tiny_causal_reader_learns_in_a_few_steps():
    from codec.mini.reader import line_nll

    net = _tiny_causal_net()
    cfg = get_preset("mini")
    samples = render_pages([TEXT * 3], cfg, max_pages=2)
    ink = 1.0 - torch.from_numpy(np.stack([s.ink for s in samples])).float() / 255.0
    lines = [t for s in samples for t in bands_of(s, net.cfg.geometry.n_lines, 1)]
    chars = sum(len(t) + 1 for t in lines)
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    losses = []
    for _ in range(30):
        loss = line_nll(net.reader, net.line_cells(net.encode(ink)), lines).sum() / chars
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.6 * losses[0], losses


def test_train_reader_runs_from_a_stage1_checkpoint(tmp_path):
    """Stage 2 end to end: a stage-1 (CTC) checkpoint gets a causal reader; the encoder and
    compressor stay bit-identical, so stores converted with stage 1 stay valid."""
    from codec.mini import MiniCodec
    from codec.mini.configs import ReaderTrainConfig
    from codec.mini.train import save
    from codec.mini.train_reader import train

    torch.manual_seed(0)
    cfg = get_preset("mini")
    stage1 = MiniNet(mode_config("small", cfg, dim=16, D=32, code=4, depth=1))
    save(stage1, cfg, tmp_path / "s1", {"training": {"command": "test"}})
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("".join(json.dumps({"text": TEXT * (i + 2)}) + "\n" for i in range(21)))
    train(ReaderTrainConfig(init=str(tmp_path / "s1"), out=str(tmp_path / "s2"),
                            corpus=str(corpus), workdir=str(tmp_path / "work"), modes="small",
                            steps=3, val_every=3, val_pages=1, workers=0, dim=16, depth=1,
                            heads=2, batch=1, threads=1))
    meta = json.loads((tmp_path / "s2" / "small.json").read_text())
    assert meta["model"]["reader"] == "causal" and meta["training"]["steps_done"] == 3
    assert meta["training"]["previous"] == {"command": "test"}
    command = meta["training"]["command"]  # the run, as typed today (the flags it changed)
    assert command.startswith("vst codec train-reader ") and "--steps 3" in command
    assert meta["training"]["config"]["steps"] == 3 and meta["training"]["config"]["depth"] == 1
    codec1 = MiniCodec.from_pretrained("small", tmp_path / "s1")
    codec2 = MiniCodec.from_pretrained("small", tmp_path / "s2")
    assert codec2.net.reader is not None and codec1.net.reader is None
    _page, image = next(iter(__import__("render").render_text(TEXT, cfg)))
    assert torch.equal(codec1.encode([image]), codec2.encode([image]))
    assert isinstance(codec2.decode(codec2.encode([image]))[0], str)


def test_structured_pages_have_tables_columns_and_quotes():
    from codec.mini.data import structured_text

    rng = random.Random(0)
    text = structured_text(rng, ["alpha", "beta", "gamma"], n_lines=60)
    lines = text.splitlines()
    assert len(lines) == 60
    assert any(ln.startswith("+") and ln.endswith("+") and len(ln) > 74 for ln in lines)
    assert any("     " in ln.strip() for ln in lines)  # a run of blanks inside a line
    assert any('"' in ln for ln in lines)
    assert text == structured_text(random.Random(0), ["alpha", "beta", "gamma"], n_lines=60)


def test_sampling_at_a_low_temperature_is_the_greedy_read_and_differs_when_hot():
    import numpy as np

    from codec import load_codec
    from render import render_text

    codec = load_codec("mini")
    text = "Sampling reads the page from the decoder's own distribution.\n" * 6
    _, images = zip(*render_text(text, codec.render_config))
    tokens = codec.encode(np.stack(images[:1]))
    greedy = codec.decode(tokens)
    cold = codec.sample(tokens, 1e-4, torch.Generator().manual_seed(0))
    assert cold == greedy
    blind = codec.null_tokens(1)
    hot = [codec.sample(blind, 1.0, torch.Generator().manual_seed(s))[0] for s in (1, 2)]
    assert hot[0] != hot[1]  # the prior, sampled: different seeds, different pages


# ------------------------------------------------------------------- fast greedy decoding

def _fast_test_pages(cfg) -> list:
    """Held-out pages (full and dense), a short page, an empty page, non-ASCII and
    unknown characters, a structured page (tables, runs of blanks), a page of long words."""
    from codec.mini.data import structured_text
    from data.corpus import heldout_texts

    rng = random.Random(3)
    texts = [t for t in heldout_texts(n=6, min_chars=1500)]
    texts += ["Hello.\n", "",
              "Café — naïve “quotes” ‘x’ 3×4 ≤ 5 ± 2 µs § © ® € £ ¥ … → é è ß ñ Ü\n"
              "Unknown: 中文 and emoji 🙂 in a line.\n" * 3,
              structured_text(rng, ["alpha", "beta", "gamma"], n_lines=40),
              " ".join(rng.choice(["internationalization", "of", "x", "compression",
                                   "tokens"]) for _ in range(500))]
    return [next(iter(paginate(t, cfg))) for t in texts]


@pytest.mark.parametrize("mode", sorted(MODES))
def test_fast_decode_is_greedy_decode_exactly_on_real_pages(mode):
    """The drafted-and-verified read is the plain greedy read, page for page, character
    for character, and it really is drafted (a fast path that quietly fell back to plain
    greedy decoding would fail the draft assertions)."""
    from codec.mini.speculative import MARGIN

    codec = load_codec("mini", mode=mode, batch_size=4)  # 3 batches (a fallback is per batch)
    cfg = codec.render_config
    pages = _fast_test_pages(cfg)
    tokens = codec.encode([rasterize(p, cfg) for p in pages])
    plain = codec.decode(tokens, fast=False)
    assert codec.last_decode_stats is None
    fast = codec.decode(tokens, fast=True)  # the default but for `tiny`
    for i, (a, b) in enumerate(zip(plain, fast)):
        assert a == b, (mode, i, a, b)
    st = codec.last_decode_stats
    assert st.lines == 32 * len(pages)
    # `tiny` has one near-tie on these pages (its batch is read step by step)
    assert st.fallbacks <= (mode == "tiny") and st.gave_up == 0
    assert st.accepted >= 0.6 * st.chars  # most characters came from the draft
    assert 10 * st.rounds < st.chars  # passes, not steps
    assert st.fallbacks or st.min_margin >= MARGIN
    # one page at a time (the batch of lines and its padding differ) reads the same
    codec.batch_size = 1
    assert codec.decode(tokens[:3], fast=True) == plain[:3]
    assert codec.last_decode_stats.fallbacks == 0


def test_fast_decode_falls_back_to_greedy_at_near_ties(monkeypatch):
    """Where the reader's top two characters are too close for a batched pass to be sure
    of the greedy step's argmax, the batch is read step by step instead (same text)."""
    from codec.mini import speculative

    codec = load_codec("mini")
    tokens, _ = codec.encode_text(TEXT)
    plain = codec.decode(tokens, fast=False)
    monkeypatch.setattr(speculative, "MARGIN", float("inf"))
    assert codec.decode(tokens) == plain
    assert codec.last_decode_stats.fallbacks == len(tokens)


@pytest.mark.parametrize("mode", sorted(MODES))
def test_fast_decode_is_greedy_decode_with_wrong_drafts(mode, monkeypatch):
    """Random-init codecs: the CTC draft is nearly always wrong, so nearly every verified
    character is a rejection and a re-draft. The head is sharpened so that near-ties
    (which fall back) stay rare and the verify path is what is tested; the early give-up
    on hopeless drafts is switched off for the same reason."""
    from codec.mini import speculative

    monkeypatch.setattr(speculative, "GIVE_UP_BELOW", 0.0)
    codec = load_codec("mini", mode=mode, random_init=True, batch_size=1)
    codec.net.reader.head.weight.mul_(100)
    cfg = codec.render_config
    pages = _fast_test_pages(cfg)[5:9]
    tokens = codec.encode([rasterize(p, cfg) for p in pages])
    plain = codec.decode(tokens, fast=False)
    fast = codec.decode(tokens, fast=True)
    for i, (a, b) in enumerate(zip(plain, fast)):
        assert a == b, (mode, i)
    st = codec.last_decode_stats
    assert st.fallbacks < len(pages)  # at least one page went through verification
    assert st.drafted - st.accepted > 100  # ... with many rejected draft characters


def test_fast_greedy_with_edited_drafts_is_greedy():
    """The verifier alone, on drafts that are the greedy read with characters changed,
    dropped and doubled: every one re-reads to the greedy read, and the draft helps."""
    from codec.mini.speculative import ReadStats, fast_greedy

    reader = _reader(2)
    reader.head.weight.data.mul_(30)  # no near-ties (they would fall back)
    cells = torch.randn(24, 12, 12)
    truth = reader.greedy(cells, max_len=14)
    rng = random.Random(0)
    drafts = []
    for ids in truth:
        ids = list(ids)
        for _ in range(rng.randint(0, 3)):
            if not ids:
                break
            j = rng.randrange(len(ids))
            edit = rng.choice(["change", "drop", "double"])
            if edit == "change":
                ids[j] = rng.randrange(2, vocab.N_CLASSES)
            elif edit == "drop":
                del ids[j]
            else:
                ids.insert(j, ids[j])
        drafts.append((ids, [2 * j for j in range(len(ids))]))
    stats = ReadStats()
    assert fast_greedy(reader, cells, drafts, 14, stats) == truth
    assert stats.fallbacks == 0 and stats.rounds > 1
    assert stats.accepted > 0.5 * stats.chars
    exact = ReadStats()  # drafts that are the read: one round
    assert fast_greedy(reader, cells, [(t, [2 * j for j in range(len(t))]) for t in truth],
                       14, exact) == truth
    assert exact.rounds == 1 and exact.accepted >= exact.chars - len(truth)  # all but the last
