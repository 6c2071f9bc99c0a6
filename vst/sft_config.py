"""`vst sft`'s configuration: every flag, declared once (the dataclass is the command line)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from data.errors import BadInput


@dataclass
class SFTConfig:
    base: str = ""  # base checkpoint: a `vst train` run directory (newest step) or a step dir
    data: str = ""  # instruction file or directory (Alpaca / ShareGPT / plain JSONL)
    val_data: Optional[str] = None  # held-out instruction file (default: a hash-split 5% of --data)
    out: str = "runs/sft"  # run directory: checkpoints, metrics.jsonl, result.json
    format: str = "auto"  # auto | alpaca | sharegpt | jsonl
    store: Optional[str] = None  # a store the samples' segments were converted into (`vst
        # convert --corpus segments.jsonl.zst`, eval/curriculum.py): read, not re-encoded
    codec: Optional[str] = None  # codec spec (default: the base run's own codec)
    codec_mode: Optional[str] = None  # codec resolution mode (default: the base run's)
    max_context_chars: int = 64000  # samples with a longer context are skipped (recorded)
    max_context_pages: Optional[int] = None  # keep only the last K context pages (cost cap)
    mix_budget: int = 0  # >0: mix the training set by family to this many answer bytes (equal
        # weights; answer tokens, not rows)
    # loss: only on response positions
    mse: float = 1.0  # weight of the MSE term on response tokens
    cos: float = 1.0  # weight of the 1 - cosine term on response tokens
    dec: float = 1.0  # weight of decoder-CE on the response pages (nats/byte, frozen decoder)
    energy: float = 1.0  # weight of the energy score (energy-head models)
    stop: float = 1.0  # weight of the stop head's BCE ("the response ended here")
    ptr: float = 1.0  # weight of the pointer head's NLL and gate BCE (models with one)
    reader: str = "frozen"  # frozen (the base run's reader) | trainable (a hierarchical reader,
        # vst/reader.py, trained jointly through decoder-CE; needs --dec > 0; one process)
    reader_lr: Optional[float] = None  # the trainable reader's peak learning rate (default --lr)
    pointer_dim: int = 0  # >0: give the model a pointer (copy) head of this key width, so an
        # answer can be an exact copy of a context token (vst/pointer.py); 0: the base's own
    lora_rank: int = 0  # >0: LoRA adapters of this rank (peft) on the trunk's linear layers,
        # base weights frozen; 0: full-parameter fine-tuning
    lora_alpha: float = 16.0  # LoRA scale numerator (the update is alpha / rank * B A)
    # optimisation
    batch_size: int = 4  # samples per step
    steps: int = 200  # optimizer steps (with --max-seconds: the most)
    max_seconds: Optional[float] = None  # stop after this much training wall-clock
    max_flops: Optional[float] = None  # stop after this many training FLOPs (VST forward and
        # backward, pointer scores and decoder-CE counted; compare text models at the same)
    lr: float = 1e-3  # peak learning rate (AdamW; cosine to 10%, linear warmup)
    warmup: int = 10  # warmup steps
    grad_clip: float = 1.0  # max gradient norm; 0 = off
    seed: int = 0  # seed of the new weights and the sample order
    # run
    device: str = "cpu"  # cpu | cuda | cuda:N
    threads: Optional[int] = None  # CPU threads (torch.set_num_threads)
    log_every: int = 10  # steps between logged metrics
    eval_samples: int = 16  # held-out samples scored at the end
    save_every: int = 100  # steps between checkpoints; 0 = only at the end
    keep: int = 2  # checkpoints kept
    resume: bool = False  # continue exactly from the newest checkpoint in --out
    halt_at: Optional[int] = field(default=None, repr=False, metadata={"cli": False})
        # tests: stop dead after this step

    def __post_init__(self) -> None:
        if self.format not in ("auto", "alpaca", "sharegpt", "jsonl"):
            raise BadInput(f"--format must be auto, alpaca, sharegpt or jsonl; got {self.format}")
