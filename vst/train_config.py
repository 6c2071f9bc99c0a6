"""The training run's configuration: every flag of `vst train`, declared once.

The dataclass is the command line (`jobs/cli.py` derives `vst train` from it: each
field's comment is its --help); from Python, `TrainConfig(...)` or
`TrainConfig.from_recipe("learn", data=..., out=...)`.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from typing import Any, Optional

from data.errors import BadInput
from vst.losses import LossConfig

READERS = ("frozen", "trainable")  # what reads the VST's predictions (vst/reader.py)
READER_INPUTS = ("vst", "null")  # what decoder-CE reads: the predictions, or null tokens


@dataclass
class TrainConfig:
    out: str = "runs/vst"  # run directory: checkpoints, metrics.jsonl, tb/, result.json
    recipe: Optional[str] = None  # named recipe (learn | text-bytes | text-cl100k |
        # text-bytes-page, vst/recipes.py): sets every flag you do not give
    # model
    flavour: str = "debug"  # model size: debug | tiny | small | base | large | 1b
    depth: Optional[int] = None  # override the flavour's depth, the size dial (width follows)
    modality: str = "vector"  # vector (the VST) | text (the same-shape text baseline)
    tokenizer: str = "bytes"  # text modality: bytes | cl100k
    text_seq_len: int = 2048  # text modality: max tokens per window
    text_context: str = "window"  # text modality: window (a token sees its window) | page (each
        # token attends only within its own page: the page-cut arm of Delta_text)
    rope: str = "3d"  # 1d (reading order) | 3d (page, row, col; interleaved); text is always 1d
    mlp: str = "swiglu"  # swiglu | relu2
    head: str = "regression"  # regression | energy (CALM-style sampler)
    norm_proj: str = "none"  # hard norm constraint on x_hat: none | sphere | layernorm
    alpha: float = 0.0  # target norm of x_hat; 0 = mean token norm of the training data
    energy_samples: int = 8  # energy head: samples per position
    # data
    data: str = "synthetic"  # token-store directory, or 'synthetic'
    codec: str = "auto"  # codec for decoder-CE and eval: auto (the store's own; toy for synthetic)
        # | toy | mini | ...
    codec_mode: Optional[str] = None  # codec resolution mode (default: the store's)
    codec_path: Optional[str] = None  # codec weights directory
    codec_option: list[str] = field(default_factory=list)  # KEY=VALUE passed to load_codec (JSON
        # values), repeatable
    pages_per_window: int = 4  # window length in pages (T = pages * n)
    window_tokens: Optional[int] = None  # window length T in tokens (overrides pages)
    val_fraction: float = 0.05  # fraction of store documents held out for validation (by a hash of
        # the id)
    synthetic_docs: int = 64  # synthetic data: number of documents
    # loss
    mse: float = 1.0  # weight of the MSE term
    cos: float = 1.0  # weight of the 1 - cosine term
    dec: float = 0.0  # weight of the decoder-CE term (nats/byte via the frozen codec)
    norm: float = 0.0  # weight of the norm penalty (|x_hat| - alpha)^2
    energy: float = 1.0  # weight of the energy score (energy head)
    dec_pages: int = 1  # decoder-CE on the last k whole pages of a window; -1 = every page
    dec_lines: int = 0  # decoder-CE reads a random sample of k lines of each page; 0 = all
    eval_pages: Optional[int] = None  # bpb on the last k whole pages; -1 = all (default:
        # --dec-pages)
    head_init: str = "normal"  # normal | zero (the head starts at null tokens, the decoder's prior)
    aux_head: bool = False  # put --mse/--cos on a second head (a dense signal for the trunk); the
        # main head gets decoder-CE only
    gate: bool = False  # a per-token gate: each line is read as a mixture of the prediction and
        # the decoder's prior (null token)
    mixture: int = 0  # K > 0: a K-way mixture read-out; the head emits K candidate tokens and
        # K mixture logits, and decoder-CE reads each line as the mixture of the K candidate
        # pages (K times decoder-CE's cost, counted in the FLOPs); 0 = off
    leak_free: bool = True  # decoder-CE reads each line without the token slots after it (a
        # teacher-forced prediction has seen the earlier lines' true tokens), where the codec
        # reads by lines
    reader: str = "frozen"  # frozen (the codec's decoder) | trainable (the hierarchical reader: a
        # line-local copy of the codec's reader trained jointly, vst/reader.py)
    reader_lr: Optional[float] = None  # peak learning rate of a trainable reader (default: --lr)
    reader_input: str = "vst"  # what decoder-CE reads: vst (the predictions) | null (null
        # tokens: the reader-only control)
    # optimisation
    batch_size: int = 8  # global batch in windows (split over DDP ranks)
    grad_accum: int = 1  # micro-batches per rank and step (same gradient, less memory)
    steps: int = 200  # optimizer steps (with a time or FLOPs cap: the most)
    max_seconds: Optional[float] = None  # stop after this much training wall-clock, eval excluded
        # (lr anneals to it)
    max_flops: Optional[float] = None  # stop after this many training FLOPs, decoder-CE included
    lr: float = 3e-3  # peak learning rate (AdamW)
    min_lr_ratio: float = 0.1  # final lr / peak lr
    warmup: int = 20  # linear warmup steps
    schedule: str = "cosine"  # cosine | linear | constant | wsd
    weight_decay: float = 0.0  # AdamW weight decay on matrices
    beta1: float = 0.9  # AdamW beta1
    beta2: float = 0.95  # AdamW beta2
    grad_clip: float = 1.0  # max gradient norm; 0 = off
    seed: int = 0  # seed of the model, data order and sampling
    # run
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    dtype: str = "auto"  # auto (bf16 autocast on GPU) | fp32 | bf16
    compile: bool = False  # torch.compile the model
    threads: Optional[int] = None  # CPU threads (torch.set_num_threads); default: torch's
    eval_every: int = 100  # steps between evaluations; 0 = only at the end
    eval_points: int = 0  # also evaluate after each 1/N of the budget (steps, time or FLOPs)
    eval_batches: int = 8  # validation batches per evaluation
    save_every: int = 100  # steps between checkpoints; 0 = only at the end
    keep: int = 2  # checkpoints kept
    log_every: int = 10  # steps between logged metrics
    resume: bool = False  # continue exactly from the newest checkpoint in --out
    tensorboard: bool = True  # write TensorBoard logs under OUT/tb
    wandb: Optional[str] = None  # wandb project (used only if wandb is installed)
    progress: bool = True  # show a progress bar
    halt_at: Optional[int] = field(default=None, repr=False, metadata={"cli": False})
        # tests: stop dead after this step


    @classmethod
    def from_recipe(cls, name: str, **overrides: Any) -> "TrainConfig":
        """A named recipe (vst/recipes.py); `overrides` win over the recipe's values."""
        from vst.recipes import recipe_overrides

        return cls(**{**recipe_overrides(name), **overrides, "recipe": name})

    def __post_init__(self) -> None:
        choices = {
            "modality": ("vector", "text"),
            "tokenizer": ("bytes", "cl100k"),
            "text_context": ("window", "page"),
            "rope": ("1d", "3d"),
            "mlp": ("swiglu", "relu2"),
            "head": ("regression", "energy"),
            "norm_proj": ("none", "sphere", "layernorm"),
            "schedule": ("cosine", "linear", "constant", "wsd"),
            "dtype": ("auto", "fp32", "bf16"),
            "head_init": ("normal", "zero"),
            "reader": READERS,
            "reader_input": READER_INPUTS,
        }
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise BadInput(
                    f"--{name.replace('_', '-')} must be one of {', '.join(allowed)}; "
                    f"got {getattr(self, name)!r}"
                )
        if self.reader_input == "null" and self.reader == "frozen":
            raise BadInput("--reader-input null trains the reader alone: it needs --reader "
                             "trainable (a frozen reader's control is its prior, bpb_null)")
        if self.head == "energy" and self.energy_samples < 2:
            raise BadInput("the energy head needs --energy-samples >= 2")

    def loss_config(self) -> LossConfig:
        """The loss weights and coverage: the fields `LossConfig` shares with this config."""
        return LossConfig(**{f.name: getattr(self, f.name) for f in fields(LossConfig)
                             if hasattr(self, f.name)})

    def load_codec(self):
        """The frozen codec the run trains through and evaluates with ("auto" resolved)."""
        from codec import load_codec

        cfg = resolve_codec(self)
        return load_codec(cfg.codec, mode=cfg.codec_mode, path=cfg.codec_path,
                          options=cfg.codec_option)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TrainConfig":
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})


def resolve_codec(cfg: TrainConfig) -> TrainConfig:
    """Replace codec "auto" by the codec (and mode) that wrote the store; toy for synthetic.

    The resolved names are what checkpoints record, so a run can be reloaded without its data.
    """
    if cfg.codec != "auto":
        return cfg
    if cfg.data == "synthetic":
        return replace(cfg, codec="toy")
    from data.store import read_store_meta

    meta = read_store_meta(cfg.data)
    return replace(cfg, codec=meta.codec_name, codec_mode=cfg.codec_mode or meta.codec_mode)
