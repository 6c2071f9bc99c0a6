"""LoRA adapters on the VST trunk's linear layers, through peft.

    vst sft --base runs/vst --data tasks.jsonl --lora-rank 8 --out runs/sft-lora

`apply_lora` injects rank-r adapters into every attention (q, kv, o) and MLP (up, down)
projection of the trunk and freezes everything else except what SFT adds to the model
(the special vectors and the stop head), so the base weights stay exactly the base run's.
A checkpoint records the adapter settings (`state["lora"]`), and `vst.generate.load_model`
re-applies them before loading, so an SFT checkpoint still describes itself.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from data.errors import BadInput

TARGETS = ("q", "kv", "o", "up", "down")  # the trunk's nn.Linear names (vst/model.py)
TRAINED_NEW = ("special.", "stop.")  # parameters SFT adds: always trained


def apply_lora(model: nn.Module, rank: int, alpha: float = 16.0,
               dropout: float = 0.0) -> dict[str, Any]:
    """Inject adapters in place; return the settings a checkpoint records."""
    from peft import LoraConfig, inject_adapter_in_model

    if rank <= 0:
        raise BadInput(f"LoRA rank must be positive, got {rank}")
    config = LoraConfig(r=rank, lora_alpha=alpha, lora_dropout=dropout,
                        target_modules=list(TARGETS), bias="none")
    inject_adapter_in_model(config, model)
    for name, p in model.named_parameters():
        p.requires_grad_("lora_" in name or name.startswith(TRAINED_NEW))
    return {"rank": rank, "alpha": alpha, "dropout": dropout}


def trainable_share(model: nn.Module) -> float:
    """Trainable parameters over all parameters."""
    total = sum(p.numel() for p in model.parameters())
    return sum(p.numel() for p in model.parameters() if p.requires_grad) / max(total, 1)
