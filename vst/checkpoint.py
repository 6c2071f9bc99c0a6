"""Checkpoints: safetensors for tensors, JSON for everything else.

A checkpoint is a directory `step-NNNNNNN/` holding
  model.safetensors          the weights (unwrapped, device-independent)
  optim.safetensors          optimizer tensors, flattened as state.<param>.<name>
  rng-rank<r>.safetensors    torch (and CUDA) RNG state of each rank
  reader.safetensors         the hierarchical reader's weights, when the run trains one
  state.json                 train + model config, step, data position, optimizer
                             scalars and param groups, metrics
It is written to a temporary name and renamed, so a killed run never leaves half a
checkpoint that `--resume` would pick up.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from data.errors import BadCheckpoint

STATE = "state.json"


def _flatten_optim(sd: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    tensors, scalars = {}, {}
    for pid, st in sd["state"].items():
        for name, v in st.items():
            if isinstance(v, torch.Tensor):
                tensors[f"state.{pid}.{name}"] = v.detach().cpu().contiguous()
            else:
                scalars[f"{pid}.{name}"] = v
    return tensors, {"scalars": scalars, "param_groups": sd["param_groups"]}


def _unflatten_optim(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {}
    for key, v in tensors.items():
        _, pid, name = key.split(".", 2)
        state.setdefault(int(pid), {})[name] = v
    for key, v in meta["scalars"].items():
        pid, name = key.split(".", 1)
        state.setdefault(int(pid), {})[name] = v
    return {"state": state, "param_groups": meta["param_groups"]}


def rng_state() -> dict[str, torch.Tensor]:
    out = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            out[f"cuda{i}"] = s
    return out


def set_rng_state(st: dict[str, torch.Tensor]) -> None:
    torch.set_rng_state(st["torch"])
    cuda = [st[k] for k in sorted(k for k in st if k.startswith("cuda"))]
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda)


def step_dir(out_dir: Path, step: int) -> Path:
    return Path(out_dir) / f"step-{step:07d}"


def save_checkpoint(
    out_dir: Path,
    step: int,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer | None,
    state: dict[str, Any],
    rank: int = 0,
    world: int = 1,
    keep: int = 2,
    extra: dict[str, dict[str, torch.Tensor]] | None = None,
) -> Path:
    """Rank 0 writes weights/optimizer/state; every rank writes its own RNG state.
    `extra`: more named weight sets (NAME.safetensors; `load_extra` reads one back).

    With DDP the caller barriers before and after, so all ranks see the final directory.
    """
    final = step_dir(out_dir, step)
    tmp = final.with_name(final.name + ".tmp")
    if rank == 0:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        save_file(
            {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()},
            tmp / "model.safetensors",
        )
        for name, tensors in (extra or {}).items():
            save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()},
                      tmp / f"{name}.safetensors")
        meta: dict[str, Any] = {}
        if optimizer is not None:
            tensors, meta = _flatten_optim(optimizer.state_dict())
            save_file(tensors, tmp / "optim.safetensors")
        (tmp / STATE).write_text(
            json.dumps({**state, "step": step, "optimizer": meta, "world": world}, indent=1)
        )
    _barrier(world)
    save_file(
        {k: v.contiguous() for k, v in rng_state().items()}, tmp / f"rng-rank{rank}.safetensors"
    )
    _barrier(world)
    if rank == 0:
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)
        for old in sorted(Path(out_dir).glob("step-???????"))[:-keep] if keep > 0 else []:
            shutil.rmtree(old, ignore_errors=True)
    _barrier(world)
    return final


def latest_checkpoint(out_dir: Path) -> Path | None:
    steps = sorted(p for p in Path(out_dir).glob("step-???????") if (p / STATE).exists())
    return steps[-1] if steps else None


def read_state(ckpt: Path) -> dict[str, Any]:
    return json.loads((Path(ckpt) / STATE).read_text())


def load_checkpoint(
    ckpt: Path,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    rank: int = 0,
    restore_rng: bool = True,
) -> dict[str, Any]:
    ckpt = Path(ckpt)
    state = read_state(ckpt)
    device = next(model.parameters()).device
    model.load_state_dict(load_file(ckpt / "model.safetensors", device=str(device)))
    if optimizer is not None and (ckpt / "optim.safetensors").exists():
        # load on CPU: load_state_dict moves each state tensor to its parameter's device
        sd = _unflatten_optim(load_file(ckpt / "optim.safetensors"), state["optimizer"])
        optimizer.load_state_dict(sd)
    rng = ckpt / f"rng-rank{rank}.safetensors"
    if restore_rng and rng.exists():
        set_rng_state(load_file(rng))
    return state


def load_extra(ckpt: Path, name: str) -> dict[str, torch.Tensor]:
    """A weight set `save_checkpoint(extra=...)` wrote."""
    path = Path(ckpt) / f"{name}.safetensors"
    if not path.exists():
        raise BadCheckpoint(f"{ckpt} has no {name} weights ({path.name})",
                            hint="the run's checkpoint is incomplete; resume or retrain it")
    return load_file(path)


def _barrier(world: int) -> None:
    if world > 1:
        import torch.distributed as dist

        dist.barrier()
