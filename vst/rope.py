"""Rotary position embeddings: 1D along the reading path, or page-aware 3D.

3D mode gives every token a (page, row, column) coordinate. The head's frequency pairs
are shared out across the three axes *interleaved* (pair i -> axis i % 3, as in
Qwen3-VL's interleaved MRoPE) rather than in contiguous blocks, so each axis gets both
high and low frequencies. With equal coordinates on all axes it reduces to 1D RoPE.
"""

from __future__ import annotations

import torch


def default_sections(n_pairs: int) -> tuple[int, int, int]:
    """Frequency pairs per axis (page, row, col): row and col equal, page takes the rest."""
    hw = n_pairs // 3
    return (n_pairs - 2 * hw, hw, hw)


def axis_of_pair(n_pairs: int, sections: tuple[int, int, int] | None = None) -> torch.Tensor:
    """Which axis (0 page, 1 row, 2 col) drives each frequency pair.

    Pairs are interleaved page,row,col,page,row,col,... while row/col still have
    budget (3 * section); any remainder goes to the page axis, as in Qwen3-VL.
    """
    sections = sections or default_sections(n_pairs)
    if sum(sections) != n_pairs:
        raise ValueError(f"rope sections {sections} must sum to {n_pairs} frequency pairs")
    axis = torch.zeros(n_pairs, dtype=torch.long)
    for a in (1, 2):
        idx = torch.arange(a, 3 * sections[a], 3)
        axis[idx[idx < n_pairs]] = a
    if int((axis == 0).sum()) != sections[0]:
        raise ValueError(f"rope sections {sections} cannot be interleaved over {n_pairs} pairs")
    return axis


def inv_freq(head_dim: int, base: float) -> torch.Tensor:
    return 1.0 / (base ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim))


def rope_angles(
    positions: torch.Tensor,
    head_dim: int,
    base: float = 10000.0,
    sections: tuple[int, int, int] | None = None,
) -> torch.Tensor:
    """Rotation angles [B, T, head_dim/2] for positions [B, T] (1D) or [B, T, 3] (3D)."""
    freqs = inv_freq(head_dim, base).to(positions.device)
    pos = positions.float()
    if pos.dim() == 2:
        return pos[..., None] * freqs
    axis = axis_of_pair(freqs.numel(), sections).to(positions.device)
    return pos[..., axis] * freqs  # pick, per pair, the coordinate of its axis


def cos_sin(angles: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    # [B, 1, T, hd/2]: broadcast over heads
    return angles.cos()[:, None].to(dtype), angles.sin()[:, None].to(dtype)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate x [B, H, T, hd]; pairs are (x[..., :hd/2], x[..., hd/2:]) (half-split)."""
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((x1 * cos - x2 * sin, x1 * sin + x2 * cos), dim=-1)


def page_positions(page: torch.Tensor, slot: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """(page, row, col) [B, T, 3] from page index and slot-within-page [B, T] (raster order)."""
    cols = grid[1]
    return torch.stack((page, slot // cols, slot % cols), dim=-1)
