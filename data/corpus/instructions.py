"""Instruction-tuning samples: one `Instruction` is [instruction, context, response].

Readers for local instruction files (nothing is downloaded). Every bad record becomes a
`Skip(source, item, reason)` in the caller's `SkipLog`, never an exception and never a
silent drop:

    from data.corpus import SkipLog
    from data.corpus.instructions import read_instructions
    skips = SkipLog()
    samples = list(read_instructions("alpaca.json", skips=skips))   # format sniffed
    vst sft --base runs/vst --data sft.jsonl --out runs/sft         # the trainer reads these

Formats:
- Alpaca: records with `instruction`, `input` (optional) and `output`; a JSON array or JSONL.
- ShareGPT: records with `conversations: [{from, value}, ...]`; every assistant turn
  (`gpt`/`assistant`) is one sample whose instruction is the user turn right before it
  and whose context is the earlier turns, as text (`User: ...` / `Assistant: ...`).
- Plain JSONL: `instruction`, `context` (optional), `response`.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterator, Literal

from data.corpus.reader import SkipLog

Format = Literal["auto", "alpaca", "sharegpt", "jsonl"]
DEFAULT_MAX_CONTEXT_CHARS = 64_000  # a longer context is skipped (the reason is recorded)
USER_ROLES = ("human", "user")
ASSISTANT_ROLES = ("gpt", "assistant", "chatgpt", "bing", "bard")


@dataclass
class Instruction:
    id: str
    instruction: str
    context: str
    response: str
    family: str = "file"  # task family (generated sets) or "file"
    meta: dict = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Instruction":
        return cls(**{k: d[k] for k in ("id", "instruction", "context", "response")},
                   family=d.get("family", "file"), meta=d.get("meta", {}))


def write_instructions(samples, path: str | Path) -> Path:
    """Samples as plain JSONL (the format `read_instructions` reads back losslessly)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as f:
        for s in samples:
            f.write(json.dumps(s.to_dict(), ensure_ascii=False) + "\n")
    return path


def _records(path: Path, skips: SkipLog) -> Iterator[tuple[str, Any]]:
    """(item id, parsed record) of a JSON array file or a JSONL file; bad lines -> skips."""
    raw = path.read_bytes()
    head = raw.lstrip()[:1]
    if head == b"[":
        try:
            data = json.loads(raw.decode("utf-8"))
        except UnicodeDecodeError as e:
            skips.add(str(path), "*", f"invalid UTF-8: {e.reason}")
            return
        except json.JSONDecodeError as e:
            skips.add(str(path), "*", f"invalid JSON: {e.msg}")
            return
        for i, rec in enumerate(data):
            yield str(i), rec
        return
    for i, line in enumerate(raw.split(b"\n")):
        if not line.strip():
            continue
        try:
            yield str(i), json.loads(line.decode("utf-8"))
        except UnicodeDecodeError as e:
            skips.add(str(path), f"line {i}", f"invalid UTF-8: {e.reason}")
        except json.JSONDecodeError as e:
            skips.add(str(path), f"line {i}", f"invalid JSON: {e.msg}")


def sniff_format(rec: Any) -> str:
    if isinstance(rec, dict):
        if "conversations" in rec:
            return "sharegpt"
        if "output" in rec:
            return "alpaca"
    return "jsonl"


def _text(rec: dict, key: str, required: bool) -> str | None:
    """A string field, or None when a required one is missing / not a string."""
    v = rec.get(key)
    if v is None:
        return None if required else ""
    return v if isinstance(v, str) else None


def _check(sample: Instruction, source: str, item: str, skips: SkipLog,
           max_context_chars: int) -> Instruction | None:
    if not sample.response.strip():
        skips.add(source, item, "empty response")
    elif not sample.instruction.strip():
        skips.add(source, item, "empty instruction")
    elif len(sample.context) > max_context_chars:
        skips.add(source, item, f"context of {len(sample.context)} chars is over "
                                f"max_context_chars={max_context_chars}")
    else:
        return sample
    return None


def _from_flat(rec: Any, fmt: str, source: str, item: str, skips: SkipLog) -> Instruction | None:
    keys = ("instruction", "input", "output") if fmt == "alpaca" else \
        ("instruction", "context", "response")
    if not isinstance(rec, dict):
        skips.add(source, item, "record is not an object")
        return None
    vals = [_text(rec, keys[0], True), _text(rec, keys[1], False), _text(rec, keys[2], True)]
    missing = [k for k, v in zip(keys, vals) if v is None]
    if missing:
        skips.add(source, item, f"missing or non-string field(s): {', '.join(missing)}")
        return None
    rid = str(rec.get("id", f"{Path(source).stem}:{item}"))
    return Instruction(rid, vals[0], vals[1], vals[2], family=str(rec.get("family", "file")),
                       meta=rec.get("meta", {}) if isinstance(rec.get("meta"), dict) else {})


def _from_sharegpt(rec: Any, source: str, item: str, skips: SkipLog) -> list[Instruction]:
    turns = rec.get("conversations") if isinstance(rec, dict) else None
    if not isinstance(turns, list) or not turns:
        skips.add(source, item, "missing or empty conversations")
        return []
    rid = str(rec.get("id", f"{Path(source).stem}:{item}"))
    out, history = [], []
    for j, turn in enumerate(turns):
        role = turn.get("from") if isinstance(turn, dict) else None
        value = turn.get("value") if isinstance(turn, dict) else None
        if not isinstance(role, str) or not isinstance(value, str):
            skips.add(source, f"{item} turn {j}", "turn without string from/value")
            return out  # later turns would lose their context: stop this conversation here
        if role in ASSISTANT_ROLES:
            prev = history[-1] if history else None
            if prev is None or prev[0] not in USER_ROLES:
                skips.add(source, f"{item} turn {j}",
                          "assistant turn without a user turn before it")
            else:
                context = "\n".join(
                    f"{'User' if r in USER_ROLES else 'Assistant'}: {v}" for r, v in history[:-1])
                out.append(Instruction(f"{rid}#turn-{j}", prev[1], context, value, "sharegpt"))
        history.append((role, value))
    return out


def read_instructions(path: str | Path, *, fmt: Format = "auto", skips: SkipLog | None = None,
                      max_context_chars: int = DEFAULT_MAX_CONTEXT_CHARS) -> Iterator[Instruction]:
    """Samples of a local instruction file (or a directory of .json/.jsonl files)."""
    skips = skips if skips is not None else SkipLog()
    path = Path(path)
    files = sorted(p for p in path.rglob("*") if p.suffix in (".json", ".jsonl")) \
        if path.is_dir() else [path]
    for file in files:
        source = str(file)
        for item, rec in _records(file, skips):
            kind = sniff_format(rec) if fmt == "auto" else fmt
            if kind == "sharegpt":
                found = _from_sharegpt(rec, source, item, skips)
            else:
                one = _from_flat(rec, kind, source, item, skips)
                found = [one] if one is not None else []
            for s in found:
                checked = _check(s, source, s.id if kind == "sharegpt" else item, skips,
                                 max_context_chars)
                if checked is not None:
                    yield checked
