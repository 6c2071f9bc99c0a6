"""The `deepseek-ocr2` backend on a tiny random DeepSeek-OCR-2 checkpoint (real classes,
shrunk widths, the real processor geometry), loaded from a temp dir with the hub offline."""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest
import torch

from codec import available_codecs, load_codec
from codec.deepseek_common import CheckpointError, greedy_generate, windowed_no_repeat_processor
from codec.deepseek_common import DEFAULT_PROMPT

try:  # tests/ as a package or as a plain directory on sys.path
    from tests.codec_contract import CodecContract, check_codec_contract
    from tests.tiny_deepseek import save_tiny_checkpoint
except ModuleNotFoundError:
    from codec_contract import CodecContract, check_codec_contract
    from tiny_deepseek import save_tiny_checkpoint

N_GLOBAL, N_TILE = 256, 144  # 1024² global view, 768² tiles, one query per 64x64 px


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    assert os.environ.get("HF_HUB_OFFLINE") == "1"
    return save_tiny_checkpoint(tmp_path_factory.mktemp("tiny-ocr2"))


@pytest.fixture(scope="module")
def codec(ckpt):
    return load_codec("deepseek-ocr2", path=ckpt)


@pytest.fixture(scope="module")
def crops(ckpt):
    return load_codec("deepseek-ocr2", path=ckpt, mode="crops")


@pytest.fixture(scope="module")
def batch():
    return pages(2)


@pytest.fixture(scope="module")
def tokens2(codec, batch):
    return codec.encode(batch)


SHAPES = [(1024, 1024), (700, 600), (1024, 2048)]


@pytest.fixture(scope="module")
def crops_batch():
    return [pages(1, size=s, seed=i)[0] for i, s in enumerate(SHAPES)]


@pytest.fixture(scope="module")
def crops_out(crops, crops_batch):
    return crops.encode_with_mask(crops_batch)


def pages(n: int, size=(1024, 1024), seed: int = 0) -> np.ndarray:
    """Pages with some structure (bars of different grey) so pages differ visibly."""
    rng = np.random.default_rng(seed)
    out = np.full((n, *size, 3), 255, dtype=np.uint8)
    for i in range(n):
        for _ in range(12):
            y, x = rng.integers(0, size[0] - 40), rng.integers(0, size[1] - 200)
            out[i, y : y + 20, x : x + int(rng.integers(50, 200))] = rng.integers(0, 120)
    return out


# ---- attributes, registry ---------------------------------------------------------------


def test_registered_and_attributes(codec, ckpt):
    assert "deepseek-ocr2" in available_codecs()
    assert codec.name == "deepseek-ocr2" and codec.mode == "global"
    assert codec.D == 64  # the tiny decoder width (1280 in the real model)
    assert codec.n == N_GLOBAL + 1 and codec.grid == (1, codec.n)
    assert "mode=global" in codec.version and "sep=1" in codec.version
    assert codec.render_config is not None
    # the version identifies the weights: another seed gives another version
    other = save_tiny_checkpoint(ckpt.parent / "other", seed=1)
    assert load_codec("deepseek-ocr2", path=other).version != codec.version


def test_frozen_weights(codec):
    assert not any(p.requires_grad for p in codec.model.parameters())
    assert not codec.model.training


# ---- encode: counts and order -------------------------------------------------------------


def test_encode_shape_determinism_and_input_forms(codec, batch, tokens2):
    tokens = tokens2
    assert tokens.shape == (2, codec.n, codec.D)
    assert torch.isfinite(tokens).all()
    torch.testing.assert_close(codec.encode(list(batch)), tokens)  # list of [H, W, 3]
    torch.testing.assert_close(codec.encode(torch.from_numpy(batch)), tokens)
    # the image matters (SAM initialised with a real std, see tests/tiny_deepseek.py)
    assert (tokens[0, :N_GLOBAL] - tokens[1, :N_GLOBAL]).abs().max() > 1e-4
    # batching does not change a page's tokens
    torch.testing.assert_close(codec.encode(batch[1:2])[0], tokens[1], rtol=1e-4, atol=1e-5)


def test_encode_rejects_bad_pages(codec):
    with pytest.raises(ValueError, match="batch of pages"):
        codec.encode(pages(1)[0])
    with pytest.raises(ValueError, match="uint8"):
        codec.encode(pages(1).astype(np.float32))


def test_global_order_matches_model(codec, batch, tokens2):
    tokens = tokens2
    ip = codec.processor.image_processor
    features = ip(list(batch), crop_to_patches=False, tile_size=1024, return_tensors="pt")
    pixel_values = features["pixel_values"]
    assert pixel_values.shape[-1] == 1024  # the 1024² global view, not a 768² one
    with torch.no_grad():
        ref = codec.model.get_image_features(pixel_values=pixel_values).pooler_output
    torch.testing.assert_close(tokens, torch.stack(ref))
    sep = codec.model.model.view_separator
    torch.testing.assert_close(tokens[:, -1], sep.expand(2, -1))  # separator last


def test_global_view_pixels_are_the_processors(codec, batch):
    """Pages at the view's size skip the CPU processor; their pixels must be its, bit for bit."""
    rng = np.random.default_rng(1)
    noise = rng.integers(0, 256, size=(1, 1024, 1024, 3), dtype=np.uint8)  # every level, per channel
    images = list(np.concatenate([batch, noise]))
    ip = codec.processor.image_processor
    expected = ip(images, crop_to_patches=False, tile_size=1024, return_tensors="pt")
    got = codec._global_view(images)
    assert got is not None and got.dtype == codec.dtype
    assert torch.equal(got, expected["pixel_values"].to(codec.dtype))
    # a page of another size needs resizing and padding: the processor does it
    assert codec._global_view([pages(1, size=(700, 600))[0]]) is None


def test_global_view_falls_back_when_processor_is_not_per_value(codec, batch, tokens2,
                                                               monkeypatch, caplog):
    real = codec._processor_features

    def shifted(images):  # a processor whose output depends on a pixel's neighbour
        features = real(images)
        features["pixel_values"] = features["pixel_values"].roll(1, dims=-1)
        return features

    monkeypatch.setattr(codec, "_table", None)
    monkeypatch.setattr(codec, "_processor_features", shifted)
    with caplog.at_level("WARNING"):
        assert codec._global_view(list(batch)) is None
    assert "not per-value" in caplog.text
    monkeypatch.setattr(codec, "_processor_features", real)
    torch.testing.assert_close(codec.encode(batch), tokens2)  # the processor's path, same tokens


def test_crops_count_and_order(codec, crops, batch, tokens2, crops_batch, crops_out):
    page = batch[:1]
    tokens, mask = crops.encode_with_mask(page)
    # a square page gets a 2x2 tiling (min_patches=2): 4 tiles, then the global view
    assert crops.num_tiles(1024, 1024) == 4
    assert tokens.shape[1] == 4 * N_TILE + N_GLOBAL + 1 == crops.tokens_per_page(1024, 1024)
    assert mask.all()
    # the global view and separator come last and equal the global-only mode's tokens
    torch.testing.assert_close(tokens[0, 4 * N_TILE :], tokens2[0], rtol=1e-4, atol=1e-5)
    # the first tile's tokens come first
    features = crops.processor.image_processor(list(page), return_tensors="pt")
    with torch.no_grad():
        tower = crops.model.model.vision_tower
        vision = tower(features["pixel_values_local"][:1]).last_hidden_state
        first = crops.model.model.multi_modal_projector(vision)[0]
    torch.testing.assert_close(tokens[0, :N_TILE], first, rtol=1e-4, atol=1e-5)
    assert crops.n is None and crops.grid is None and "mode=crops" in crops.version


def test_crops_variable_counts_padding_and_mask(crops, crops_batch, crops_out):
    tokens, mask = crops_out
    counts = [crops.tokens_per_page(*s) for s in SHAPES]
    assert counts == [4 * N_TILE + N_GLOBAL + 1, N_GLOBAL + 1, 2 * N_TILE + N_GLOBAL + 1]
    assert mask.sum(1).tolist() == counts
    assert tokens.shape == (3, max(counts), crops.D)
    assert (tokens[~mask] == 0).all()  # padding is exact zeros (what decode infers from)
    # each page alone gives the same tokens as in the padded batch
    alone = crops.encode(crops_batch[1:2])[0]
    torch.testing.assert_close(tokens[1, : counts[1]], alone, rtol=1e-4, atol=1e-5)


def test_keep_separator_false(ckpt, codec, batch, tokens2):
    drop = load_codec("deepseek-ocr2", path=ckpt, keep_separator=False)
    assert drop.n == N_GLOBAL and drop.grid == (1, N_GLOBAL) and "sep=0" in drop.version
    full, short = tokens2, drop.encode(batch)
    torch.testing.assert_close(short, full[:, :N_GLOBAL])
    texts = ["Free OCR.", "the quick fox"]
    # the separator is put back for the decoder: the same likelihood either way
    torch.testing.assert_close(drop.text_nll(short, texts).nll, codec.text_nll(full, texts).nll)


# ---- text_nll -----------------------------------------------------------------------------


def test_text_nll_gradient_reaches_tokens_only(codec, tokens2):
    tokens = tokens2.clone().requires_grad_(True)
    texts = ["The quick brown fox.", "Lorem ipsum dolor sit amet, consectetur."]
    out = codec.text_nll(tokens, texts)
    assert out.nll.shape == (2,) and torch.isfinite(out.nll).all() and (out.nll > 0).all()
    assert out.n_bytes.tolist() == [len(t.encode()) for t in texts]
    assert torch.isfinite(out.bits_per_byte())
    out.bits_per_byte().backward()
    assert tokens.grad is not None and tokens.grad.abs().sum() > 0
    assert tokens.grad[0].abs().sum() > 0 and tokens.grad[1].abs().sum() > 0
    assert all(p.grad is None for p in codec.model.parameters())


def test_text_nll_matches_full_forward_and_is_batch_independent(codec, tokens2):
    tokens = tokens2
    texts = ["Free OCR. 123", "a much longer text that needs padding in the batch."]
    batched = codec.text_nll(tokens, texts).nll
    for i in range(2):
        alone = codec.text_nll(tokens[i : i + 1], texts[i : i + 1]).nll[0]
        torch.testing.assert_close(batched[i], alone, rtol=1e-4, atol=1e-4)
    # reference: a plain forward over [BOS, visual, prompt suffix, text] with summed CE
    ids = codec.tokenizer(texts[0], add_special_tokens=False)["input_ids"]
    emb = codec.model.get_input_embeddings()
    seq = torch.cat([emb(torch.tensor(codec.prefix_ids)), tokens[0],
                     emb(torch.tensor(codec.suffix_ids)), emb(torch.tensor(ids))])
    with torch.no_grad():
        logits = codec.model(inputs_embeds=seq[None]).logits[0]
    ref = torch.nn.functional.cross_entropy(
        logits[-len(ids) - 1 : -1], torch.tensor(ids), reduction="sum"
    )
    torch.testing.assert_close(batched[0], ref, rtol=1e-4, atol=1e-4)


def test_text_nll_depends_on_tokens_and_handles_empty_text(codec, tokens2):
    tokens = tokens2[:1]
    a = codec.text_nll(tokens, ["hello"]).nll
    b = codec.text_nll(tokens + 0.5, ["hello"]).nll
    assert not torch.allclose(a, b)
    empty = codec.text_nll(tokens, [""])
    assert empty.nll.tolist() == [0.0] and empty.n_bytes.tolist() == [0]
    with pytest.raises(ValueError, match="texts"):
        codec.text_nll(tokens, ["a", "b"])


def test_text_nll_crops_with_padding(crops, crops_out):
    tokens, mask = crops_out
    tokens, mask = tokens[:2, : int(mask[:2].sum(1).max())], mask[:2, : int(mask[:2].sum(1).max())]
    tokens = tokens.clone().requires_grad_(True)
    texts = ["page one", "page two"]
    out = crops.text_nll(tokens, texts, mask=mask)
    out.nll.sum().backward()
    assert tokens.grad[1][~mask[1]].abs().sum() == 0  # padding is never read
    assert tokens.grad[1][mask[1]].abs().sum() > 0
    # without the mask, trailing zero rows are taken as padding: same result
    torch.testing.assert_close(crops.text_nll(tokens.detach(), texts).nll, out.nll.detach())
    alone = crops.text_nll(tokens.detach()[1:, : int(mask[1].sum())], texts[1:]).nll
    torch.testing.assert_close(out.nll[1:].detach(), alone, rtol=1e-4, atol=1e-4)


# ---- decode -------------------------------------------------------------------------------


def test_decode_batch_of_different_token_counts(crops, crops_out):
    tokens, mask = crops_out
    texts = crops.decode(tokens, max_new_tokens=12, mask=mask)
    assert isinstance(texts, list) and len(texts) == 3 and all(isinstance(t, str) for t in texts)
    # each page decodes as it would alone (no padding leaks into generation)
    for i in range(3):
        n_i = int(mask[i].sum())
        assert crops.decode(tokens[i : i + 1, :n_i], max_new_tokens=12) == [texts[i]]
    assert crops.decode(tokens, max_new_tokens=12) == texts  # mask inferred from zero rows


def test_decode_global_and_null_tokens(codec, tokens2):
    tokens = tokens2
    texts = codec.decode(tokens, max_new_tokens=8)
    assert len(texts) == 2 and all(isinstance(t, str) for t in texts)
    assert codec.decode(tokens, max_new_tokens=8) == texts  # greedy is deterministic
    assert len(codec.decode(codec.null_tokens(2), max_new_tokens=4)) == 2
    short = codec.generate_ids(tokens, max_new_tokens=4)
    long = codec.generate_ids(tokens, max_new_tokens=8)
    assert all(len(s) <= 4 and len(l) <= 8 for s, l in zip(short, long))
    assert all(l[: len(s)] == s for s, l in zip(short, long))  # greedy: a prefix of the longer run
    assert texts == [codec.tokenizer.decode(i, skip_special_tokens=True) for i in long]


def test_greedy_loop_matches_generate(codec, tokens2):
    """The hand-written greedy loop (used by the v1 backend) equals HF `generate`."""
    tokens = tokens2
    rows = codec._visual_rows(tokens, None)
    emb = codec.model.get_input_embeddings()
    prefix, suffix = emb(torch.tensor(codec.prefix_ids)), emb(torch.tensor(codec.suffix_ids))
    prompt = torch.stack([torch.cat([prefix, r, suffix]) for r in rows])

    def step(inputs, attention, positions, past):
        out = codec.model.model(
            inputs_embeds=inputs, attention_mask=attention, position_ids=positions,
            past_key_values=past, use_cache=True,
        )
        return codec.model.lm_head(out.last_hidden_state[:, -1]).float(), out.past_key_values

    guard = windowed_no_repeat_processor(codec.no_repeat_ngram, codec.no_repeat_window)(0)
    with torch.no_grad():
        ids = greedy_generate(step, emb, prompt, codec.eos_id, 10, guard)
    assert [codec.tokenizer.decode(i, skip_special_tokens=True) for i in ids] == codec.decode(
        tokens, max_new_tokens=10
    )


def test_no_repeat_guard_bans_loop_continuation():
    guard = windowed_no_repeat_processor(ngram=3, window=10)(0)
    scores = torch.zeros(2, 8)
    ids = torch.tensor([[1, 2, 5, 1, 2, 6, 7, 1, 2], [3, 3, 3, 3, 3, 3, 3, 3, 4]])
    out = guard(ids, scores.clone())
    # row 0 ends in (1, 2): 5 and 6 followed (1, 2) before, so both are banned
    assert torch.isinf(out[0, 5]) and torch.isinf(out[0, 6]) and not torch.isinf(out[0]).sum() > 2
    assert not torch.isinf(out[1]).any()  # (3, 4) never occurred before
    # window 6 sees [1, 2, 6, 7, 1, 2]: the older (1, 2) -> 5 is out of reach
    near = windowed_no_repeat_processor(ngram=3, window=6)(0)(ids[:1], scores[:1].clone())
    assert not torch.isinf(near[0, 5]) and torch.isinf(near[0, 6])


# ---- checkpoint directory errors ----------------------------------------------------------


def _copy(ckpt, tmp_path, drop=()):
    out = tmp_path / "copy"
    shutil.copytree(ckpt, out)
    for name in drop:
        (out / name).unlink()
    return out


def test_missing_path_and_directory(tmp_path, monkeypatch):
    monkeypatch.delenv("VST_DEEPSEEK_OCR2_PATH", raising=False)
    with pytest.raises(CheckpointError, match="--codec-path"):
        load_codec("deepseek-ocr2")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_codec("deepseek-ocr2", path=tmp_path / "nowhere")
    (tmp_path / "file").write_text("x")
    with pytest.raises(CheckpointError, match="is a file"):
        load_codec("deepseek-ocr2", path=tmp_path / "file")


def test_env_var_points_at_checkpoint(ckpt, monkeypatch):
    monkeypatch.setenv("VST_DEEPSEEK_OCR2_PATH", str(ckpt))
    assert load_codec("deepseek-ocr2").n == N_GLOBAL + 1


@pytest.mark.parametrize(
    ("drop", "message"),
    [(["config.json"], "config.json is missing"), (["model.safetensors"], "no weights"),
     (["tokenizer.json"], "no tokenizer")],
)
def test_incomplete_directory(ckpt, tmp_path, drop, message):
    with pytest.raises(CheckpointError, match=message):
        load_codec("deepseek-ocr2", path=_copy(ckpt, tmp_path, drop))


def test_missing_shard(ckpt, tmp_path):
    d = _copy(ckpt, tmp_path, ["model.safetensors"])
    index = {"weight_map": {"a": "model-00001-of-00002.safetensors"}}
    (d / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(CheckpointError, match="missing shard"):
        load_codec("deepseek-ocr2", path=d)


def test_wrong_model_type(ckpt, tmp_path):
    d = _copy(ckpt, tmp_path)
    config = json.loads((d / "config.json").read_text())
    (d / "config.json").write_text(json.dumps({**config, "model_type": "llama"}))
    with pytest.raises(CheckpointError, match="expected model_type 'deepseek_ocr2'"):
        load_codec("deepseek-ocr2", path=d)
    remote = {"model_type": "deepseek_vl_v2", "auto_map": {"AutoModel": "modeling_deepseekocr2.X"}}
    (d / "config.json").write_text(json.dumps(remote))
    with pytest.raises(CheckpointError, match="remote-code release"):
        load_codec("deepseek-ocr2", path=d)


def test_unknown_mode(ckpt):
    with pytest.raises(ValueError, match="unknown mode"):
        load_codec("deepseek-ocr2", path=ckpt, mode="gundam")


def test_empty_batch_and_wrong_shapes(codec):
    empty = codec.encode([])
    assert empty.shape == (0, codec.n, codec.D)
    assert codec.decode(empty) == []
    assert codec.text_nll(empty, []).nll.shape == (0,)
    with pytest.raises(ValueError, match="tokens must be"):
        codec.decode(torch.zeros(1, 10, codec.D))
    with pytest.raises(ValueError, match="tokens must be"):
        codec.text_nll(torch.zeros(1, codec.n, codec.D + 1), ["x"])


def test_from_model_matches_loaded_codec(codec, batch, tokens2):
    from codec.deepseek_ocr2 import DeepseekOcr2Codec

    try:
        from tests.tiny_deepseek import build_model, build_processor, build_tokenizer
    except ModuleNotFoundError:
        from tiny_deepseek import build_model, build_processor, build_tokenizer
    tokenizer = build_tokenizer()
    built = DeepseekOcr2Codec.from_model(
        build_model(tokenizer), build_processor(tokenizer), weights_id="mem"
    )
    assert built.version == "deepseek-ocr2:mem:mode=global:sep=1:float32"
    assert not any(p.requires_grad for p in built.model.parameters())
    torch.testing.assert_close(built.encode(batch[:1]), tokens2[:1], rtol=1e-4, atol=1e-5)


def _bench_module():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "deepseek_encode_bench.py"
    spec = importlib.util.spec_from_file_location("deepseek_encode_bench", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU refusal")
def test_bench_refuses_real_size_on_cpu(capsys):
    assert _bench_module().main(["--size", "real"]) == 2
    assert "GPU backend" in capsys.readouterr().err


@pytest.mark.slow
def test_bench_tiny_runs(tmp_path):
    out = tmp_path / "bench.json"
    assert _bench_module().main(["--size", "tiny", "--device", "cpu", "--batch-sizes", "1,2",
                                 "--repeats", "1", "--out", str(out)]) == 0
    rows = json.loads(out.read_text())["results"]
    assert [r["batch"] for r in rows] == [1, 2] and all(r["pages_per_s"] > 0 for r in rows)
    assert all(r["tokens_per_page"] == N_GLOBAL + 1 for r in rows)


# ---- against the reference pipeline (processor-built input_ids + pixel_values) ----------


@pytest.fixture(scope="module")
def reference(crops, batch):
    """The model's own path: the processor expands <image> and builds pixel values."""
    text = "Hello world 42"
    page = list(batch[:1])
    return text, crops.processor(images=page, text=DEFAULT_PROMPT + text, return_tensors="pt")


def test_text_nll_matches_processor_pipeline(crops, batch, reference):
    text, inputs = reference
    ids = inputs["input_ids"][0]
    tokens, _ = crops.encode_with_mask(batch[:1])
    n_image = int((ids == crops.model.config.image_token_id).sum())
    assert n_image == tokens.shape[1] == 4 * N_TILE + N_GLOBAL + 1
    # the same token ids: [BOS] + image + prompt suffix + text
    expected = crops.prefix_ids + [crops.model.config.image_token_id] * n_image
    expected += crops.suffix_ids + crops._ids(text)
    assert ids.tolist() == expected
    with torch.no_grad():
        logits = crops.model(**inputs).logits[0]
    n_text = len(crops._ids(text))
    ref = torch.nn.functional.cross_entropy(
        logits[-n_text - 1 : -1], ids[-n_text:], reduction="sum"
    )
    torch.testing.assert_close(crops.text_nll(tokens, [text]).nll[0], ref, rtol=1e-4, atol=1e-4)


def test_decode_matches_processor_pipeline(crops, batch):
    inputs = crops.processor(images=list(batch[:1]), text=DEFAULT_PROMPT, return_tensors="pt")
    with torch.no_grad():
        out = crops.model.generate(**inputs, do_sample=False, max_new_tokens=10)
    new = out[0, inputs["input_ids"].shape[1] :].tolist()
    if crops.eos_id in new:
        new = new[: new.index(crops.eos_id)]
    tokens, _ = crops.encode_with_mask(batch[:1])
    assert crops.generate_ids(tokens, max_new_tokens=10) == [new]


# ---- the shared codec contract (tests/codec_contract.py) ---------------------------------


class TestContractGlobal(CodecContract):
    @pytest.fixture(scope="class")
    def codec(self, ckpt):
        # random weights rarely emit EOS: a short cap keeps the contract's decodes cheap
        return load_codec("deepseek-ocr2", path=ckpt, max_new_tokens=16)


@pytest.mark.parametrize("options", [{"mode": "crops"}, {"keep_separator": False}])
def test_contract_other_settings(ckpt, options):
    check_codec_contract(load_codec("deepseek-ocr2", path=ckpt, max_new_tokens=16, **options))
