"""Visual-Symbolic Transformer: model, losses, training loop and generation.

    from vst import VST, flavour, TrainConfig, train
    result = train(TrainConfig(flavour="debug", data="synthetic", steps=100, out="runs/x"))

Names are imported lazily so that `import vst` (and `vst --help`) does not load torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "ModelConfig": "vst.config",
    "flavour": "vst.config",
    "FLAVOURS": "vst.config",
    "VST": "vst.model",
    "KVCache": "vst.model",
    "LossConfig": "vst.losses",
    "compute_losses": "vst.losses",
    "TrainConfig": "vst.train_config",
    "train": "vst.train",
    "evaluate": "vst.evaluate",
    "continue_tokens": "vst.generate",
    "continue_document": "vst.generate",
    "load_model": "vst.generate",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'vst' has no attribute {name!r}")
