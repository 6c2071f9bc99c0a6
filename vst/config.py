"""Model configuration: one dial (`depth`) sets the size; named flavours pick a depth.

Width follows depth (d_model = aspect * depth, as in nanochat) so a single integer moves
a model along a sensible scaling line; heads follow width at a fixed head size.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields, replace
from typing import Any, Literal

from data.errors import BadInput

Modality = Literal["vector", "text"]
RopeMode = Literal["1d", "3d"]


@dataclass(frozen=True)
class ModelConfig:
    depth: int = 2
    aspect: int = 64  # d_model = aspect * depth
    head_dim: int = 64
    kv_ratio: int = 2  # query heads per key/value head (grouped-query attention)
    mlp: Literal["swiglu", "relu2"] = "swiglu"
    mlp_ratio: float = 4.0  # hidden = mlp_ratio * d_model (SwiGLU uses 2/3 of it per branch)
    rope: RopeMode = "3d"
    rope_base: float = 10000.0
    rope_sections: tuple[int, int, int] | None = None  # (page, row, col) frequency pairs
    doc_mask: bool = True  # block attention across document boundaries inside a window
    max_seq_len: int = 4096
    # modality: "vector" reads codec tokens of width D; "text" reads token ids (baseline)
    modality: Modality = "vector"
    D: int = 64  # codec token width (vector modality)
    vocab_size: int = 256  # text modality only
    grid: tuple[int, int] = (4, 4)  # (rows, cols) of a page's token grid (3d rope)
    # heads
    head: Literal["regression", "energy"] = "regression"
    norm_proj: Literal["none", "sphere", "layernorm"] = "none"  # hard projection of x_hat
    alpha: float = 1.0  # target norm of x_hat (penalty or projection)
    head_init: Literal["normal", "zero"] = "normal"  # zero: x_hat starts at the null token
    # a second linear head that takes the MSE/cosine terms, so the trunk gets a dense
    # regression signal while the main head is shaped by decoder-CE alone
    aux_head: bool = False
    # a per-token gate pi: the decoder reads each line as the mixture
    # pi * p(line | x_hat) + (1 - pi) * p(line | null token), a proper likelihood that
    # falls back to the decoder's prior where the prediction is unsure (vst/losses.py)
    gate: bool = False
    # a K-way mixture read-out (0: off): the head emits K candidate tokens and K mixture
    # logits per position, and the decoder reads each line as
    # -log sum_k softmax(logits)_k * p(line | component k's page) (vst/losses.py)
    mixture: int = 0
    energy_noise_dim: int = 64
    energy_blocks: int = 2
    energy_samples: int = 8  # samples per position for the energy score
    # instruction tuning (vst/sft.py): learned special input vectors that mark segment
    # starts and the end of a response, and a stop head ("this page ends the answer")
    specials: int = 0
    # a pointer (copy) head of this key width (0: off): the next item may be an exact copy
    # of an earlier input (vst/pointer.py), for tasks whose answer is in the context
    pointer: int = 0

    def __post_init__(self) -> None:
        if self.mixture < 0:
            raise BadInput(f"--mixture must be >= 0; got {self.mixture}")
        if self.mixture and (self.modality != "vector" or self.head != "regression" or self.gate):
            # the gate is a two-way mixture with the null token, which a K-way mixture can
            # learn as a component; the energy head samples instead of emitting candidates
            raise BadInput("--mixture needs the vector modality and the regression head, "
                             "without --gate")

    @property
    def d_model(self) -> int:
        return self.aspect * self.depth

    @property
    def n_heads(self) -> int:
        return max(self.kv_ratio, (self.d_model // self.head_dim) // self.kv_ratio * self.kv_ratio)

    @property
    def n_kv_heads(self) -> int:
        return self.n_heads // self.kv_ratio

    @property
    def tokens_per_page(self) -> int:
        return self.grid[0] * self.grid[1]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ModelConfig":
        known = {f.name for f in fields(cls)}
        d = {k: (tuple(v) if isinstance(v, list) else v) for k, v in d.items() if k in known}
        return cls(**d)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    def with_(self, **kw: Any) -> "ModelConfig":
        return replace(self, **kw)


# name -> overrides. Parameter counts of the VST (D=256; GQA with 2 query heads per kv
# head); a text baseline adds vocab * d_model twice (embedding + LM head).
FLAVOURS: dict[str, dict[str, Any]] = {
    "debug": dict(depth=2, aspect=32, head_dim=16),  # d=64, 0.1M: trains in CI in seconds
    "tiny": dict(depth=4, aspect=64, head_dim=32),  # d=256, 3M
    "small": dict(depth=8, aspect=64),  # d=512, 23M
    "base": dict(depth=12, aspect=64),  # d=768, 78M
    "large": dict(depth=20, aspect=64, head_dim=128),  # d=1280, 361M
    "1b": dict(depth=28, aspect=64, head_dim=128),  # d=1792, ~1.0B
}


def flavour(name: str, **overrides: Any) -> ModelConfig:
    if name not in FLAVOURS:
        raise BadInput(f"unknown flavour {name!r}; choose from {', '.join(FLAVOURS)}")
    return ModelConfig(**{**FLAVOURS[name], **overrides})
