"""Output heads of the VST: a regression head and a distributional energy-score head.

Plain regression learns only the conditional mean of the next token, which for a
multimodal future is a blurry average. The energy head (as in CALM) is a small
noise-conditioned MLP that *samples* a next token; it is trained with the energy score,
a strictly proper scoring rule that needs only samples, no likelihood.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from vst.config import ModelConfig


def project_norm(x: torch.Tensor, mode: str, alpha: float) -> torch.Tensor:
    """Optional hard constraint on the predicted token's norm (instead of a penalty)."""
    if mode == "sphere":
        return alpha * F.normalize(x, dim=-1, eps=1e-6)
    if mode == "layernorm":  # zero mean, unit variance per vector, then scaled to norm alpha
        return F.layer_norm(x, (x.size(-1),)) * (alpha / math.sqrt(x.size(-1)))
    return x


class RegressionHead(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.proj = nn.Linear(cfg.d_model, cfg.D)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return project_norm(self.proj(h), self.cfg.norm_proj, self.cfg.alpha)


def pick(tokens: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """Component `index` [...] of candidate tokens [..., K, D] -> [..., D]."""
    idx = index[..., None, None].expand(*index.shape, 1, tokens.size(-1))
    return tokens.gather(-2, idx.to(tokens.device))[..., 0, :]


class MixtureHead(nn.Module):
    """K candidate tokens per position and K mixture logits (`--mixture K`): decoder-CE
    reads each line as a mixture over the K pages the candidates make (vst/losses.py).

    Symmetry: with `head_init zero` every candidate starts at the null token (an untrained
    mixture reads exactly as the decoder's prior), and identical candidates under equal
    weights would get identical gradients forever. The mixture logits keep the default
    random init instead (O(1) logits that differ per position), so while the candidates are
    still equal each one's gradient is weighted by its own, position-dependent weight, and
    they drift apart; random candidate offsets would break it too, but would start the
    mixture off the prior.
    """

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg, self.k = cfg, cfg.mixture
        self.proj = nn.Linear(cfg.d_model, cfg.mixture * cfg.D)
        self.mix = nn.Linear(cfg.d_model, cfg.mixture)

    def components(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Candidates [..., K, D] and mixture logits [..., K]."""
        x = self.proj(h).unflatten(-1, (self.k, self.cfg.D))
        return project_norm(x, self.cfg.norm_proj, self.cfg.alpha), self.mix(h)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        """The point prediction: each position's most-weighted candidate [..., D] (what
        L_reg, val_mse and greedy generation read)."""
        x, logits = self.components(h)
        return pick(x, logits.argmax(-1))

    def sample(self, h: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """One candidate per position drawn by its weight [..., D]."""
        x, logits = self.components(h)
        probs = logits.float().softmax(-1).flatten(0, -2).cpu()  # the generator's device
        k = torch.multinomial(probs, 1, generator=generator).view(logits.shape[:-1])
        return pick(x, k)


class _ResBlock(nn.Module):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(width)
        self.fc1, self.fc2 = nn.Linear(width, 2 * width), nn.Linear(2 * width, width)

    def forward(self, z: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        return z + self.fc2(F.silu(self.fc1(self.norm(z + c))))


class EnergyHead(nn.Module):
    """x ~ g(h, eps), eps ~ U[-1/2, 1/2]^noise_dim; the condition h re-enters every block."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        w = cfg.d_model
        self.cond = nn.Linear(cfg.d_model, w)
        self.noise = nn.Linear(cfg.energy_noise_dim, w)
        self.blocks = nn.ModuleList(_ResBlock(w) for _ in range(cfg.energy_blocks))
        self.out = nn.Linear(w, cfg.D)

    def sample(self, h: torch.Tensor, n: int = 1) -> torch.Tensor:
        """n samples per position: h [..., d] -> [n, ..., D]."""
        c = self.cond(h).expand(n, *h.shape[:-1], -1)
        eps = (
            torch.rand(n, *h.shape[:-1], self.cfg.energy_noise_dim, device=h.device, dtype=h.dtype)
            - 0.5
        )
        z = self.noise(eps)
        for block in self.blocks:
            z = block(z, c)
        return project_norm(self.out(z), self.cfg.norm_proj, self.cfg.alpha)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.sample(h, 1)[0]


def _dist(a: torch.Tensor, b: torch.Tensor, beta: float) -> torch.Tensor:
    # eps keeps the gradient of ||.|| finite at zero distance
    return ((a - b).square().sum(-1) + 1e-8).pow(beta / 2)


def energy_score(samples: torch.Tensor, target: torch.Tensor, beta: float = 1.0) -> torch.Tensor:
    """Energy-score loss per position: samples [N, ..., D], target [..., D] -> [...].

    2/N sum_i ||s_i - y||^b - 1/(N(N-1)) sum_{i != j} ||s_i - s_j||^b, strictly proper for
    b in (0, 2); its expectation is minimised only by the true distribution.
    """
    n = samples.size(0)
    if n < 2:
        raise ValueError("the energy score needs at least two samples per position")
    fit = _dist(samples, target[None], beta).mean(0)
    flat = samples.reshape(n, -1, samples.size(-1)).transpose(0, 1)  # [P, N, D]
    # cdist avoids materialising the [N, N, P, D] differences; the diagonal is dropped
    pair = torch.cdist(flat.float(), flat.float()).pow(beta)  # [P, N, N]
    off = ~torch.eye(n, dtype=torch.bool, device=samples.device)
    spread = (pair * off).sum((1, 2)) / (n * (n - 1))
    return 2 * fit - spread.view(target.shape[:-1]).to(fit.dtype)
