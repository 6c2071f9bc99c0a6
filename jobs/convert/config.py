"""What one conversion is asked to do (`ConvertConfig`) and what one part did (`PartResult`).

`ConvertConfig` is the single source of the job's flags: `jobs.convert.cli` derives the
command line from its fields, defaults and `metadata["help"]`, so nothing is typed twice.

    python -c "from jobs.convert.config import ConvertConfig; print(ConvertConfig('c', 'o'))"
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, Optional

OVERSIZED_CHOICES = ("split", "drop")


@dataclass(frozen=True)
class ConvertConfig:
    """Render, encode and store a corpus as visual tokens on Ray (resumable: just re-run)."""

    # The docstring is the command's help; `jobs.convert.driver._plan` lists the fields that
    # fix the output bytes (a resumed run must agree on them).

    corpus: str  # Corpus file or directory (.jsonl.zst/.jsonl/.parquet/.txt).
    out: str  # Store directory (absolute on a cluster). Re-run to resume.
    codec: str = "mini"  # Codec: a registered name, name:mode, or package.module:factory.
    codec_path: Optional[str] = None  # Codec checkpoint directory.
    codec_mode: Optional[str] = None  # Codec mode (e.g. mini: tiny/small/base).
    trust_remote_code: bool = False  # Allow a checkpoint's own code (deepseek-ocr).
    codec_options: list[str] = field(  # Extra codec factory argument KEY=VALUE (repeatable;
        # VALUE parsed as JSON if it can be), parsed by codec.parse_codec_options in the actor.
        default_factory=list, metadata={"flags": ("--codec-option",)})
    render_preset: Optional[str] = None  # Render preset (default: the codec's own page).
    num_parts: int = 8  # Corpus shards = store parts; fixed for a store.
    num_actors: int = 1  # Encoder actors, each holding the frozen codec.
    cpus_per_actor: float = 1.0  # CPUs per encoder actor (= its torch threads).
    gpus_per_actor: float = 0.0  # GPUs per encoder actor.
    render_cpus: float = 1.0  # CPUs per render actor (one per encoder).
    render_in_encoder: Optional[bool] = field(  # Who renders: each encoder actor its own
        # parts, or a render actor beside each encoder actor. Default: the encoder when it has
        # no GPU (one process a worker, no object-store hand-off: faster on CPU), render
        # actors when it has one (they keep the GPU fed).
        default=None, metadata={"flags": ("--render-in-encoder/--render-actors",)})
    batch_size: int = 16  # Pages per encode call.
    layout: str = "zarr"  # Store layout: zarr or npy (numpy memmap).
    dtype: str = "float16"  # Stored token dtype: float16 or bfloat16.
    text_field: str = "text"  # Text field of JSONL / parquet records.
    id_field: Optional[str] = None  # Record field naming each document (top-level or in
        # meta, e.g. an SFT set's SAMPLE#segment); default: the file and line.
    max_chars: Optional[int] = None  # Longest document read whole (default: the reader's limit);
        # see --oversized.
    oversized: Literal["split", "drop"] = "split"  # A document over max_chars: 'split' into ordered parts that keep the
        # document id, or 'drop' it with a recorded skip.
    max_retries: int = 2  # Retries of a failed part before giving up on it.
    progress_every: float = 5.0  # Seconds between progress lines.
    overwrite: bool = False  # Delete --out first and start over.
    num_cpus: Optional[int] = None  # Logical CPUs of a local Ray (only without RAY_ADDRESS).

    def __post_init__(self) -> None:
        if self.render_in_encoder is None:
            # A CPU encoder and its renderer would only take turns on the worker's core; a GPU
            # encoder wants a separate renderer that keeps it fed.
            object.__setattr__(self, "render_in_encoder", self.gpus_per_actor == 0)
        if self.oversized not in OVERSIZED_CHOICES:
            raise ValueError(f"oversized must be one of {OVERSIZED_CHOICES}, "
                             f"got {self.oversized!r}")

    @property
    def render_actor_cpus(self) -> float:
        return 0.0 if self.render_in_encoder else self.render_cpus

    def read_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of `data.corpus.read_corpus` for this job."""
        kw: dict[str, Any] = {"text_field": self.text_field, "id_field": self.id_field}
        if self.max_chars is not None:
            kw["max_chars"] = self.max_chars
        kw["oversized"] = self.oversized
        return kw


@dataclass
class PartResult:
    """What one part contributed; saved as `_convert/part-NNNNN.json`."""

    part: int
    docs_read: int = 0
    docs: int = 0
    pages: int = 0
    visual_tokens: int = 0
    chars: int = 0
    text_tokens: int = 0
    text_bytes: int = 0
    skips: list[dict] = field(default_factory=list)
    seconds: float = 0.0
    encode_seconds: float = 0.0
    wait_seconds: float = 0.0  # the encoder waiting for rendered pages
    write_seconds: float = 0.0  # closing the store part (tokens, index, checksums) + verifying
    peak_rss_mb: float = 0.0  # the encoder actor's process
    render_peak_rss_mb: float = 0.0  # the render actor's process
    cpu_seconds: float = 0.0  # CPU time of the encoder actor's process during the part
    render_cpu_seconds: float = 0.0  # and of the render actor's
