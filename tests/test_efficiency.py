"""The efficiency report on tiny sizes: sane fields, consistent arithmetic, files written."""

from __future__ import annotations

import json

import pytest
import torch

from tests.test_runners import ByteCodec




class GridByteCodec(ByteCodec):
    grid = (2, 2)


def test_efficiency_report_fields(tmp_path):
    from eval.efficiency import EfficiencyConfig, run_efficiency

    codec = GridByteCodec()
    res = run_efficiency(
        # long enough that the KV cache (~1 KiB per position) dwarfs malloc's background noise
        EfficiencyConfig(out=tmp_path, lengths=[4096, 8192], flavour="debug", decode_steps=3,
                         repeats=1), codec=codec)
    rows = res["rows"]
    assert [r["chars"] for r in rows] == [4096, 8192]
    for r in rows:
        v, t = r["vst"], r["text"]
        assert r["pages"] == r["chars"] // codec.page_chars
        assert v["positions"] == r["visual"] == r["pages"] * codec.n
        assert t["positions"] == r["cl100k"] > 0 and r["bytes"] >= r["chars"]
        for m in (v, t):
            assert m["prefill_s"] > 0 and m["decode_pos_s"] > 0
            assert m["peak_mem_bytes"] >= m["kv_bytes"]  # the cache is allocated inside prefill
        vc, tc = res["models"]["vst"], res["models"]["text"]
        # KV bytes: 2 (K and V) x layers x kv-heads x head-dim x positions x 4 bytes (fp32)
        per_pos = 2 * vc["depth"] * vc["n_kv_heads"] * vc["head_dim"] * 4
        assert v["kv_bytes"] == per_pos * v["positions"]
        assert t["kv_bytes"] == per_pos * t["positions"]
        assert r["kv_saving"] == pytest.approx(1 - v["positions"] / t["positions"])
        assert r["prefill_speedup"] == pytest.approx(t["prefill_s"] / v["prefill_s"])
        assert v["decode_chars_s"] == pytest.approx(v["decode_pos_s"] * r["chars"] / v["positions"])
        assert "encode_s" in r and "codec_decode_s_per_page" in r
        shape = ("depth", "d_model", "n_heads", "n_kv_heads", "head_dim")
        assert [vc[k] for k in shape] == [tc[k] for k in shape]
    # same trunk, different ends: the text model's embedding/LM head is what differs
    assert res["models"]["vst"]["trunk_params"] == res["models"]["text"]["trunk_params"]
    saved = json.loads((tmp_path / "efficiency.json").read_text())
    assert saved["rows"][0]["chars"] == 4096 and saved["anchor"]["prefill_speedup"] == 4.8
    md = (tmp_path / "efficiency.md").read_text()
    assert "| chars | pages |" in md and "Glyph" in md and md.count("\n| 4096 |") == 2
    for name in ("prefill_latency", "decode_throughput", "kv_cache", "peak_memory", "positions"):
        assert (tmp_path / f"{name}.png").stat().st_size > 1000


def test_efficiency_with_real_renderer_and_mini_codec(tmp_path):
    from codec import load_codec
    from eval.efficiency import EfficiencyConfig, run_efficiency

    codec = load_codec("mini", random_init=True)
    res = run_efficiency(EfficiencyConfig(out=tmp_path, lengths=[3000], flavour="debug",
                                          decode_steps=2, repeats=1, encode=False, plots=False),
                         codec=codec)
    (row,) = res["rows"]
    assert row["pages"] >= 1 and row["visual"] == row["pages"] * codec.n
    assert row["compression_vs_cl100k"] == pytest.approx(row["cl100k"] / row["visual"])
    assert "encode_s" not in row and not list(tmp_path.glob("*.png"))


def test_measure_kv_cache_and_decode_agree_with_model():
    """Decoding against the cache gives the same hidden state as a full forward."""
    from eval.efficiency import _positions, build_models

    codec = GridByteCodec()
    vst, _ = build_models(codec, flavour="debug", text_vocab=256, max_len=64)
    x = torch.randn(1, 9, codec.D)
    bos = torch.zeros(1, 9, dtype=torch.bool)
    bos[0, 0] = True
    with torch.no_grad():
        full = vst(x, bos, _positions(vst, 0, 9, "cpu"))
        cache = vst.new_cache(1, 9)
        vst(x[:, :8], bos[:, :8], _positions(vst, 0, 8, "cpu"), cache=cache)
        step = vst(x[:, 8:], bos[:, 8:], _positions(vst, 8, 1, "cpu"), cache=cache)
    assert torch.allclose(full[:, -1], step[:, 0], atol=1e-4)
