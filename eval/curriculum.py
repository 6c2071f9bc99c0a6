"""The retrieval curriculum (#23): RULER-style retrieval samples as instruction data, with
held-out evaluation files, in one seeded build.

    vst curriculum build --out runs/curriculum --corpus DIR/train.jsonl.zst
    vst convert --corpus runs/curriculum/segments.jsonl.zst --out STORE --id-field id

Writes into `out`:

* `train.jsonl`, `val.jsonl`: `Instruction`s (`vst sft --data`). A RULER sample becomes
  instruction = the prompt around the context (`eval.runners.common.build_prompt`: its
  `before + after`), context = the haystack with every needle on a line of its own
  (`needle_lines=True`), response = the lines that carry the answers (`answer_lines`,
  joined by newlines: RULER's `string_match_all` credits it). A `natural_ratio` share are
  `natural` samples: "Continue the text." / a passage of the training text cut at a line
  boundary / its next line. Haystacks come from the training corpus only.
* `eval/<task>_<length>.jsonl`: RULER records of every trained and held-out task at every
  length, haystack from the held-out corpus (`vst eval run` + `vst eval score-ruler`).
* `segments.jsonl.zst`: the train + val samples as store documents `SAMPLE#segment`
  (`vst.sft_data.segment_documents`), a corpus for `vst convert --id-field id`.
* `manifest.json`: the config, counts, characters, haystack sources and the commands.

Haystacks: `corpus` is a corpus file or directory; a `vst corpus build` directory (or its
`train.jsonl.zst`) brings its held-out source `heldout_source.jsonl.zst`. The evaluation
haystack is `heldout_corpus` if given, else that held-out source, else the corpus's
held-out documents (`split_of(id, heldout_fraction) == "val"`), which are then left out of
the training haystack. Without `corpus`, the demo corpus is built under `out/corpus`; it
has no held-out source, so its held-out documents (20% by default: ~125k characters, enough
for 64k-character contexts without repeating the haystack) are the evaluation haystack.
Seeds: train `seed`, val `seed + 1000`, eval `seed + 2000`, each with its own index range
and one per length, so no sample repeats across splits or lengths.
"""

from __future__ import annotations

import json
import random
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Optional

from data.corpus.instructions import Instruction, write_instructions
from data.errors import BadInput, existing_path

TRAINED_TASKS = ("niah_single_1", "niah_single_2", "niah_multikey_1", "niah_multivalue", "vt",
                 "repeat_line")
HELDOUT_TASKS = ("niah_multiquery",)
NATURAL_INSTRUCTION = "Continue the text."
NATURAL_MAX_LINE = 300  # a natural sample's response line is at most this long
SPLIT_SEEDS = {"train": 0, "val": 1000, "eval": 2000}  # added to the seed
SPLIT_INDEX = {"train": 0, "val": 10_000_000, "eval": 20_000_000}  # first sample index
LENGTH_STRIDE = 100_000  # index offset between lengths (one length's samples fit below it)


@dataclass
class CurriculumConfig:
    """Build the retrieval curriculum: RULER-style retrieval samples (needles on lines of
    their own, responses = the answer lines) and natural continuations as train / val
    instruction sets, their store segments, and held-out RULER evaluation files.

    Example (the demo corpus, built locally; seconds on a CPU):

        vst curriculum build --out runs/cur --train-per-length 8 --lengths 2000 --lengths 8000
    """

    out: str = "runs/curriculum"  # output directory (train.jsonl, val.jsonl, eval/, ...)
    corpus: Optional[str] = None  # training corpus (file or directory; a `vst corpus build`
        # directory brings its held-out source); default: the demo corpus, built in OUT/corpus
    heldout_corpus: Optional[str] = None  # evaluation haystack; default: the corpus's held-out
        # source, else its held-out documents (see --heldout-fraction)
    tasks: list[str] = field(default_factory=lambda: list(TRAINED_TASKS))  # trained RULER
        # tasks (repeatable)
    heldout_tasks: list[str] = field(default_factory=lambda: list(HELDOUT_TASKS))  # tasks
        # only evaluated, never trained (repeatable)
    lengths: list[int] = field(default_factory=lambda: [2000, 8000, 32000, 64000])  # prompt
        # lengths in characters (repeatable)
    train_per_length: int = 40  # training samples per task and length
    eval_per_length: int = 4  # evaluation samples per task and length (held-out haystack)
    val_per_length: int = 2  # validation samples per task and length (training haystack)
    natural_ratio: float = 0.2  # share of natural-text samples in train and val
    heldout_fraction: float = 0.2  # documents held out of training when the corpus's
        # held-out documents are the evaluation haystack (by a hash of the id)
    seed: int = 0  # seed of every sample (val: +1000, eval: +2000)

    def __post_init__(self) -> None:
        from eval.ruler import TASKS

        self.tasks, self.heldout_tasks = _names(self.tasks), _names(self.heldout_tasks)
        unknown = [t for t in self.tasks + self.heldout_tasks if t not in TASKS]
        if unknown:
            raise BadInput(f"unknown task(s) {unknown}", hint=f"choose from {list(TASKS)}")
        if not self.tasks:
            raise BadInput("no task to train", hint="give --tasks")
        both = sorted(set(self.tasks) & set(self.heldout_tasks))
        if both:
            raise BadInput(f"task(s) {both} are both trained and held out",
                           hint="a held-out task is never trained: drop it from one list")
        lineless = [t for t in self.tasks if t in ("cwe", "fwe")]
        if lineless:
            raise BadInput(f"task(s) {lineless} have no answer lines to train on",
                           hint="give them as --heldout-tasks")
        if not self.lengths or min(self.lengths) < 1:
            raise BadInput(f"lengths must be positive characters, got {self.lengths}",
                           hint="e.g. --lengths 2000 --lengths 8000")
        if self.train_per_length < 1 or min(self.eval_per_length, self.val_per_length) < 0:
            raise BadInput("train_per_length must be >= 1, val/eval_per_length >= 0")
        if not 0 <= self.natural_ratio < 1:
            raise BadInput(f"natural_ratio must be in [0, 1), got {self.natural_ratio}")
        if not 0 < self.heldout_fraction < 1:
            raise BadInput(f"heldout_fraction must be in (0, 1), got {self.heldout_fraction}")


def _names(items) -> list[str]:
    """Task names from a list whose items may also be comma-separated."""
    return [t.strip() for x in items for t in str(x).split(",") if t.strip()]


# ---------------------------------------------------------------- haystacks


def _read_texts(path: Path) -> list[str]:
    from data.corpus import read_corpus

    return [d.text for d in read_corpus(path)]


def haystacks(cfg: CurriculumConfig) -> tuple[list[str], list[str], dict]:
    """(training texts, evaluation texts, a description of both sources)."""
    from data.corpus import build_demo_corpus, read_corpus, split_of
    from data.corpus.build import HELDOUT_FILE, TRAIN_FILE
    from data.corpus.demo import DEMO_FILE_NAME

    held_source: Path | None = None
    if cfg.corpus is None:
        path = Path(cfg.out) / "corpus" / DEMO_FILE_NAME
        if not path.exists():
            path = build_demo_corpus(path.parent)
        kind = "demo corpus (data.corpus.demo), built locally"
    else:
        path = existing_path(cfg.corpus, "corpus", hint="check --corpus")
        kind = "corpus"
        if path.is_dir() and (path / TRAIN_FILE).exists():
            path = path / TRAIN_FILE
        if path.name == TRAIN_FILE and (path.parent / HELDOUT_FILE).exists():
            held_source = path.parent / HELDOUT_FILE
    docs = list(read_corpus(path))
    if not docs:
        raise BadInput(f"the corpus {path} has no documents", hint="check --corpus")
    if cfg.heldout_corpus is not None:
        held_path = existing_path(cfg.heldout_corpus, "held-out corpus",
                                  hint="check --heldout-corpus")
        held, how = _read_texts(held_path), f"--heldout-corpus {held_path}"
    elif held_source is not None and (held := _read_texts(held_source)):
        held_path, how = held_source, "the corpus's held-out source"
    else:
        held_path, held = path, [d.text for d in docs
                                 if split_of(d.id, cfg.heldout_fraction) == "val"]
        docs = [d for d in docs if split_of(d.id, cfg.heldout_fraction) == "train"]
        how = (f"held-out documents of the corpus: split_of(id, {cfg.heldout_fraction}) == "
               "'val', left out of training")
    train = [d.text for d in docs]
    if not train or not held:
        which = "training" if not train else "evaluation"
        raise BadInput(f"the {which} haystack is empty", hint="give a larger --corpus, "
                       "a --heldout-corpus or another --heldout-fraction")
    sources = {"train": {"path": str(path), "kind": kind, "documents": len(train),
                         "characters": sum(map(len, train))},
               "eval": {"path": str(held_path), "kind": how, "documents": len(held),
                        "characters": sum(map(len, held))}}
    return train, held, sources


# ---------------------------------------------------------------- samples


def ruler_instruction(task: str, record: dict) -> Instruction:
    """A RULER record in the SFT layout: instruction = the prompt around the context,
    context = the context, response = the answer lines."""
    from eval import ruler
    from eval.runners.common import build_prompt

    p = build_prompt(task, record)
    if p.before + p.context + p.after != ruler.build_prompt(record):
        raise AssertionError(f"{record['_id']}: the split prompt is not the record's prompt")
    length = record["target_length"]
    return Instruction(f"{record['_id']}-{length}", p.before + p.after, p.context,
                       "\n".join(record["answer_lines"]), f"ruler:{task}",
                       {"task": task, "length": length, "answers": record["answers"],
                        "metric": record["metric"]})


def natural_instruction(stream: str, length: int, rng: random.Random, sid: str) -> Instruction:
    """"Continue the text.": up to `length` characters of `stream` ending at a line boundary,
    and the next (non-empty, at most NATURAL_MAX_LINE characters) line."""
    for _ in range(200):
        a = rng.randrange(max(1, len(stream) - length))
        a = stream.rfind("\n", 0, a) + 1  # a line start
        b = stream.rfind("\n", a, a + length) + 1  # the last line start inside the window
        if b <= a:
            continue
        end = stream.find("\n", b)
        line = stream[b : end if end >= 0 else len(stream)].rstrip()
        if line.strip() and len(line) <= NATURAL_MAX_LINE and stream[a:b].strip():
            return Instruction(sid, NATURAL_INSTRUCTION, stream[a:b], line, "natural",
                               {"task": "natural", "length": length, "answers": [line],
                                "metric": "string_match_all"})
    raise BadInput(f"no passage of the training text ends before a short line at length {length}",
                   hint="give a corpus with line breaks, or shorter --lengths")


def _plan(cfg: CurriculumConfig, split: str, per_length: int):
    """(task, length, seed, index) of every RULER sample of a split, shortest lengths first."""
    tasks = cfg.tasks + (cfg.heldout_tasks if split == "eval" else [])
    seed = cfg.seed + SPLIT_SEEDS[split]
    return [(task, length, seed, SPLIT_INDEX[split] + li * LENGTH_STRIDE + i)
            for li, length in enumerate(cfg.lengths) for task in tasks
            for i in range(per_length)]


def natural_count(n_ruler: int, ratio: float) -> int:
    """Natural samples beside n_ruler RULER samples so that they are `ratio` of the set."""
    return round(n_ruler * ratio / (1 - ratio))


def _generate(task, length, seed, index, hay) -> dict:
    from eval import ruler

    try:
        return ruler.generate_sample(task, length, unit="chars", seed=seed, index=index,
                                     haystack=hay, needle_lines=True)
    except BadInput as err:
        raise BadInput(f"{task} at length {length}: {err.args[0]}",
                       hint=err.hint or "use longer --lengths (a few hundred characters "
                       "at least; variable tracking needs ~1000)") from err


# ---------------------------------------------------------------- the build


def build_curriculum(cfg: CurriculumConfig) -> dict:
    """Write the curriculum into `cfg.out`; return its manifest (also `manifest.json`)."""
    from tqdm.auto import tqdm

    from data.corpus.build import write_corpus
    from eval import ruler
    from vst.sft_data import segment_documents

    out = Path(cfg.out)
    train_hay, held_hay, sources = haystacks(cfg)
    stream = "\n\n".join(train_hay)  # natural passages may cross a document boundary
    plans = {s: _plan(cfg, s, n) for s, n in (("train", cfg.train_per_length),
                                              ("val", cfg.val_per_length),
                                              ("eval", cfg.eval_per_length))}
    n_nat = {s: natural_count(len(plans[s]), cfg.natural_ratio) for s in ("train", "val")}
    total = sum(map(len, plans.values())) + sum(n_nat.values())
    samples: dict[str, list[Instruction]] = {"train": [], "val": []}
    eval_files: dict[str, list[dict]] = {}
    with tqdm(total=total, desc="curriculum", unit="sample", disable=None) as bar:
        for split in ("train", "val", "eval"):
            hay = held_hay if split == "eval" else train_hay
            for task, length, seed, index in plans[split]:
                rec = _generate(task, length, seed, index, hay)
                if split == "eval":
                    eval_files.setdefault(f"{task}_{length}", []).append(rec)
                else:
                    samples[split].append(ruler_instruction(task, rec))
                bar.update()
            if split == "eval":
                continue
            seed = cfg.seed + SPLIT_SEEDS[split]
            rng = random.Random(f"{seed}/natural")
            for i in range(n_nat[split]):
                li = i % len(cfg.lengths)
                length = cfg.lengths[li]
                sid = f"natural-{seed}-{SPLIT_INDEX[split] + li * LENGTH_STRIDE + i}-{length}"
                samples[split].append(natural_instruction(stream, length, rng, sid))
                bar.update()
    for split, items in samples.items():
        items.sort(key=lambda s: s.meta["length"])  # stable: shortest first, tasks in order
        write_instructions(items, out / f"{split}.jsonl")
    for name, recs in eval_files.items():
        ruler.write_jsonl(recs, out / "eval" / f"{name}.jsonl")
    segments = write_corpus(
        ({"text": d.text, "meta": {"id": d.id, "split": split, **d.meta}}
         for split in ("train", "val") for d in segment_documents(samples[split])),
        out / "segments.jsonl.zst")
    manifest = {
        "config": asdict(cfg),
        "haystacks": sources,
        "counts": {s: _counts(items) for s, items in samples.items()},
        "characters": {s: {k: sum(len(getattr(x, k)) for x in items)
                           for k in ("instruction", "context", "response")}
                       for s, items in samples.items()},
        "eval_files": {f"eval/{k}.jsonl": len(v) for k, v in sorted(eval_files.items())},
        "segments": {"file": "segments.jsonl.zst", **segments},
        "commands": _commands(out),
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
    return manifest


def _counts(items: list[Instruction]) -> dict:
    by = Counter((s.family, s.meta["length"]) for s in items)
    out: dict[str, dict] = {}
    for (family, length), n in sorted(by.items()):
        out.setdefault(family, {})[str(length)] = n
    return {"total": len(items), "by_family": out}


def _commands(out: Path) -> dict:
    return {
        "convert": f"vst convert --corpus {out}/segments.jsonl.zst --out {out}/store --id-field id",
        "train": f"vst sft --base RUN --data {out}/train.jsonl --val-data {out}/val.jsonl "
                 f"--out {out}/sft",
        "evaluate": f"vst eval run {out}/eval --runner vst --model CKPT --out {out}/pred",
        "score": f"vst eval score-ruler {out}/pred",
    }


def build_and_print(cfg: CurriculumConfig) -> dict:
    """`vst curriculum build`: build, then print the counts and the next commands."""
    manifest = build_curriculum(cfg)
    for split in ("train", "val"):
        print(f"{split}: {manifest['counts'][split]['total']} samples")
    print(f"eval: {sum(manifest['eval_files'].values())} records in "
          f"{len(manifest['eval_files'])} files")
    for name, cmd in manifest["commands"].items():
        print(f"{name}: {cmd}")
    return manifest
