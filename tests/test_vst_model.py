"""VST model pieces: rotary positions, attention masking, KV cache, heads."""

from __future__ import annotations

import math

import pytest
import torch

from vst.config import FLAVOURS, ModelConfig, flavour
from vst.data import collate_vector
from vst.heads import energy_score
from vst.model import VST
from vst.rope import apply_rope, axis_of_pair, cos_sin, default_sections, inv_freq, rope_angles
from codec.toy import ToyCodec
from vst.synthetic import SyntheticSource




def rotate(x: torch.Tensor, pos: torch.Tensor, sections=None) -> torch.Tensor:
    """x [T, hd], pos [T, 3] -> rotated [T, hd]."""
    cos, sin = cos_sin(rope_angles(pos[None], x.size(-1), 10000.0, sections), x.dtype)
    return apply_rope(x[None, None], cos, sin)[0, 0]


def test_interleaved_axes_match_qwen3_vl_layout():
    # 8 frequency pairs (head_dim 16): sections (4, 2, 2) -> page,row,col,page,row,col,page,page
    assert default_sections(8) == (4, 2, 2)
    assert axis_of_pair(8).tolist() == [0, 1, 2, 0, 1, 2, 0, 0]
    # head_dim 128 as in Qwen3-VL: sections (24, 20, 20); THW interleaved up to pair 60
    axes = axis_of_pair(64, (24, 20, 20))
    assert axes[:60].tolist() == [0, 1, 2] * 20 and axes[60:].tolist() == [0, 0, 0, 0]
    with pytest.raises(ValueError):
        axis_of_pair(8, (2, 3, 3))


def test_3d_positions_on_a_known_page_grid():
    # a 2x4 token grid; a window of 3 pages starting at page 5 of a document (mid-document)
    codec = ToyCodec(D=16, grid=(2, 4))
    src = SyntheticSource(codec, n_docs=20, pages_per_window=3)
    idx = next(i for i in range(len(src)) if not src.window(i).doc_start.any())
    w = src.window(idx)
    batch = collate_vector([w], codec.grid, "3d")
    pos = batch.positions[0]
    first_page = int(w.page[0])
    expected = [(first_page + t // 8, (t % 8) // 4, t % 4) for t in range(24)]
    assert [tuple(p) for p in pos.tolist()] == expected
    assert not batch.valid[0, 0] and batch.valid[0, 1:].all()  # no context for the first token


def test_3d_angles_use_each_pairs_own_axis():
    hd = 16
    pos = torch.tensor([[[3, 1, 2], [7, 0, 3]]])
    ang = rope_angles(pos, hd)
    axes = axis_of_pair(hd // 2)
    f = inv_freq(hd, 10000.0)
    for t in range(2):
        for i in range(hd // 2):
            assert math.isclose(float(ang[0, t, i]), float(pos[0, t, axes[i]] * f[i]), rel_tol=1e-6)
    # equal coordinates on all axes reduce to ordinary 1D rope
    flat = torch.tensor([[0, 1, 2, 5]])
    assert torch.allclose(rope_angles(flat[..., None].expand(-1, -1, 3), hd), rope_angles(flat, hd))


def test_3d_rope_is_relative_per_axis_and_moves_only_its_bands():
    torch.manual_seed(0)
    hd = 24
    q, k = torch.randn(1, hd), torch.randn(1, hd)
    p, r = torch.tensor([[2, 1, 3]]), torch.tensor([[0, 0, 1]])
    base = (rotate(q, p) * rotate(k, r)).sum()
    for shift in ([4, 0, 0], [0, 3, 0], [0, 0, 5], [1, 2, 3]):
        s = torch.tensor([shift])
        assert torch.allclose((rotate(q, p + s) * rotate(k, r + s)).sum(), base, atol=1e-4)
    # a row step changes the row pairs only (half-split layout: pair i = dims i and i + hd/2)
    moved = rotate(q, p + torch.tensor([[0, 1, 0]])) - rotate(q, p)
    axes = axis_of_pair(hd // 2)
    changed = (moved.abs() > 1e-6).view(2, hd // 2).any(0)
    assert changed.tolist() == (axes == 1).tolist()


def make_model(**kw) -> VST:
    torch.manual_seed(0)
    return VST(flavour("debug", D=16, grid=(2, 4), **kw)).eval()


@pytest.mark.parametrize("rope", ["1d", "3d"])
def test_kv_cache_matches_full_forward(rope):
    m = make_model(rope=rope)
    T = 12
    x = torch.randn(1, T, 16)
    bos = torch.zeros(1, T, dtype=torch.bool)
    bos[0, 0] = True
    t = torch.arange(T)
    pos = t[None] if rope == "1d" else torch.stack((t // 8, (t % 8) // 4, t % 4), -1)[None]
    full = m(x, bos, pos)
    cache = m.new_cache(1, T)
    parts = [m(x[:, :5], bos[:, :5], pos[:, :5], cache=cache)]
    parts.append(m(x[:, 5:9], bos[:, 5:9], pos[:, 5:9], cache=cache))  # multi-token chunk
    for i in range(9, T):
        parts.append(m(x[:, i : i + 1], bos[:, i : i + 1], pos[:, i : i + 1], cache=cache))
    assert torch.allclose(torch.cat(parts, 1), full, atol=1e-5)


def test_document_mask_isolates_documents_in_a_window():
    m = make_model()
    a, b = torch.randn(1, 8, 16), torch.randn(1, 8, 16)
    t = torch.arange(8)
    pos8 = torch.stack((t // 8, (t % 8) // 4, t % 4), -1)[None]
    bos8 = torch.zeros(1, 8, dtype=torch.bool)
    bos8[0, 0] = True
    alone = m(b, bos8, pos8)
    both_x = torch.cat([a, b], 1)
    both_bos = torch.cat([bos8, bos8], 1)
    ids = both_bos.long().cumsum(1)
    both = m(both_x, both_bos, torch.cat([pos8, pos8], 1), ids)
    assert torch.allclose(both[:, 8:], alone, atol=1e-5)
    leaky = VST(m.cfg.with_(doc_mask=False)).eval()
    leaky.load_state_dict(m.state_dict())
    assert not torch.allclose(
        leaky(both_x, both_bos, torch.cat([pos8, pos8], 1), ids)[:, 8:], alone, atol=1e-3
    )


def test_flavours_scale_with_depth_and_build():
    dims = [ModelConfig(**FLAVOURS[n]).d_model for n in FLAVOURS]
    assert dims == sorted(dims) and len(set(dims)) == len(dims)
    for name in FLAVOURS:
        c = flavour(name)
        assert c.n_heads % c.n_kv_heads == 0 and c.n_kv_heads >= 1
    m = VST(flavour("debug", D=16, grid=(2, 4), head="energy"))
    assert m.num_params() < 300_000
    txt = VST(flavour("debug", modality="text", vocab_size=256))
    h = txt(
        torch.randint(0, 256, (2, 10)),
        torch.zeros(2, 10, dtype=torch.bool),
        torch.arange(10).expand(2, -1),
    )
    assert txt.lm_head(h).shape == (2, 10, 256)


@pytest.mark.parametrize("mode", ["sphere", "layernorm"])
def test_norm_projection_fixes_the_norm(mode):
    m = VST(flavour("debug", D=16, grid=(2, 4), norm_proj=mode, alpha=3.0))
    x_hat = m.head(torch.randn(4, 5, m.cfg.d_model))
    assert torch.allclose(x_hat.norm(dim=-1), torch.full((4, 5), 3.0), rtol=1e-3)


def test_energy_score_prefers_the_true_distribution():
    torch.manual_seed(0)
    y = torch.randn(4000, 8)
    samples = torch.randn(8, 4000, 8)  # the model's samples: N(0, I), as the truth
    true = energy_score(samples, y).mean()
    for shifted in (y + 0.5, y * 2.0, y.roll(1, dims=1) + 1.0):
        assert energy_score(samples, shifted).mean() > true
    # a collapsed (point) forecast at the mean scores worse than the right spread
    assert energy_score(torch.zeros(8, 4000, 8) + 1e-3 * torch.randn(8, 4000, 8), y).mean() > true
