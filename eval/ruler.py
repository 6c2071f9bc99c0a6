"""RULER-style synthetic long-context tasks, generated locally and seeded.

Families (after NVIDIA/RULER's synthetic set): needle-in-a-haystack (single, multikey,
multivalue, multiquery; keys and values as words, numbers or uuids), variable tracking
(vt), common-words extraction (cwe) and frequent-words extraction (fwe). Templates,
answer prefixes and task configurations are RULER's, stored as data in
`eval/prompts/ruler.json`; the generators are our own. One family is not RULER's:
`repeat_line` (a haystack one sentence a line; repeat the line that contains a quoted
3-4 word span found nowhere else), the retrieval curriculum's copying task (#23).

* Haystacks are any list of texts (e.g. documents from the project's corpus); without
  one, prose is taken from the docstrings of standard-library modules.
* The target length is measured in characters, cl100k text tokens, or by any
  `count_fn(text) -> int` (e.g. the VST's visual tokens). The haystack size is the
  largest one whose full prompt fits the target.
* Needles go in at requested depths (percent of the haystack), or at depths drawn from
  RULER's 40-point grid.
* Every sample is a pure function of (task, seed, index, haystack, target): records
  are reproducible one by one.

Records are LongBench-like JSON lines (`_id`, `input`, `context`, `answers`, `length`,
`all_classes`, `dataset`, `language`) plus `prompt_template` (with `{context}` and
`{input}`; it ends with RULER's answer prefix), `answer_prefix` and `max_new_tokens`;
`build_prompt(record)` = `prompt_template.format(**record)` is the model input;
`answer_lines` are the context lines that carry the answers (a training response that
RULER's `string_match_all` credits; with `needle_lines=True` each is a whole line).
Scoring is RULER's `string_match_all` / `string_match_part`.
"""

from __future__ import annotations

import bisect
import itertools
import json
import random
import re
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Callable, Iterable, Sequence

from data.errors import BadInput
from eval.prompts import load as _load_prompts
from eval.ruler_haystack import (
    cycle_from,
    distinct_values,
    haystack_sentences,
    random_value,
    sentence_lines,
    word_pool,
    zeta,
)

CountFn = Callable[[str], int]

# RULER samples needle depths from 40 evenly spaced percentages, rounded to integers.
DEPTHS: tuple[int, ...] = tuple(int(round(100 * i / 39)) for i in range(40))

# ---------------------------------------------------------------- lengths


def count_fn_for(unit: str | CountFn) -> CountFn:
    """"chars" -> len, "tokens" -> cl100k tokens, or a user count function as is."""
    if callable(unit):
        return unit
    if unit == "chars":
        return len
    if unit == "tokens":
        from eval.longbench import cl100k_count

        return cl100k_count
    raise BadInput(f"unknown length unit {unit!r}: use 'chars', 'tokens' or a function")


def _unit_name(unit: str | CountFn) -> str:
    return unit if isinstance(unit, str) else getattr(unit, "__name__", "custom")


# ---------------------------------------------------------------- task specs


@dataclass(frozen=True)
class TaskSpec:
    name: str
    family: str  # niah | variable_tracking | common_words_extraction | freq_words_extraction
    # | repeat_line
    args: dict


def task_specs() -> dict[str, TaskSpec]:
    """RULER's synthetic tasks (names as in its synthetic.yaml, QA tasks excluded)."""
    data = _load_prompts("ruler")
    return {k: TaskSpec(k, v["task"], dict(v["args"])) for k, v in data["tasks"].items()}


TASKS: tuple[str, ...] = tuple(_load_prompts("ruler")["tasks"])


def _template(family: str) -> dict:
    return _load_prompts("ruler")["templates"][family]


def _esc(s: str) -> str:
    return s.replace("{", "{{").replace("}", "}}")


_SENTINEL = "\x00CONTEXT\x00"


@dataclass
class _Draft:
    """One sample before it is measured: prompt pieces, context, answers, needle spans."""

    prefix: str  # few-shot examples + instructions, before the context
    context: str
    sep: str  # whitespace between context and question
    question: str
    answer_prefix: str
    answers: list[str]
    needles: list[dict]
    answer_lines: list[str] = field(default_factory=list)  # context lines with the answers
    valid: bool = True  # False: the haystack cannot make this sample (repeat_line)

    def prompt(self) -> str:
        return self.prefix + self.context + self.sep + self.question + self.answer_prefix


def _split_filled(filled: str) -> tuple[str, str, str]:
    """A template filled with the sentinel as context -> (prefix, sep, question)."""
    pre, post = filled.split(_SENTINEL)
    q = post.lstrip()
    return pre, post[: len(post) - len(q)], q


def _place(units: list[str], needles: Sequence[str], depths: Sequence[float], joiner: str,
           needle_lines: bool = False):
    """Insert needles at percent depths of `units`; return the context and needle info.

    Depth d puts a needle at the first unit boundary with at least d% of the
    haystack's characters before it, so depths mean the same for long and short
    sentences. Info per needle: requested `depth`, `actual_depth` (haystack characters
    before the needle, in percent) and its character `span` in the context.
    `needle_lines`: a needle is joined to its neighbours by "\n" whatever the joiner, so
    it is a line of its own (a "\n"-joined haystack is unchanged).
    """
    if len(depths) != len(needles):
        raise ValueError(f"{len(needles)} needles but {len(depths)} depths")
    cum = list(itertools.accumulate((len(u) for u in units), initial=0))
    total = cum[-1]
    order = sorted(range(len(needles)), key=lambda i: depths[i])
    parts: list[tuple[str, bool]] = []  # (text, is a needle)
    info: list[dict] = [{} for _ in needles]
    pos = 0
    for i in order:
        cut = max(pos, bisect.bisect_left(cum, total * depths[i] / 100))
        parts.extend((u, False) for u in units[pos:cut])
        pos = cut
        parts.append((needles[i], True))
        info[i] = {
            "text": needles[i],
            "depth": float(depths[i]),
            "actual_depth": 100 * cum[cut] / total if total else 0.0,
        }
    parts.extend((u, False) for u in units[pos:])
    out: list[str] = []
    offset, which = 0, iter(order)  # offset: where the next part starts in the joined text
    for k, (text, is_needle) in enumerate(parts):
        if k:
            sep = "\n" if needle_lines and (is_needle or parts[k - 1][1]) else joiner
            out.append(sep)
            offset += len(sep)
        if is_needle:
            info[next(which)]["span"] = [offset, offset + len(text)]
        out.append(text)
        offset += len(text)
    return "".join(out), info


# ---------------------------------------------------------------- families


def _niah(args: dict, n: int, rng_seed: str, hay: list[str], depths: Sequence[float] | None,
          needle_lines: bool = False):
    a = args
    rng = random.Random(rng_seed + "/needles")
    num_k = max(a["num_needle_k"], a["num_needle_q"])
    keys = distinct_values(rng, a["type_needle_k"], num_k)
    values = [distinct_values(rng, a["type_needle_v"], a["num_needle_v"]) for _ in keys]
    needle_fmt = _load_prompts("ruler")["niah_needle"]
    keyed = [
        (k, needle_fmt.format(type_needle_v=a["type_needle_v"], key=k, value=v))
        for k, vs in zip(keys, values)
        for v in vs
    ]
    rng.shuffle(keyed)  # the same permutation as shuffling the needles alone
    needles = [nd for _, nd in keyed]
    if depths is None:
        depths = rng.sample(DEPTHS, len(needles))
    queried = rng.sample(range(num_k), a["num_needle_q"])
    queries = [keys[i] for i in queried]
    answers = [v for i in queried for v in values[i]]
    start = rng.randrange(len(hay)) if hay else 0

    kind = a["type_haystack"]
    hay_rng = random.Random(rng_seed + "/haystack")
    if kind == "essay":
        units, joiner = cycle_from(hay, start, n), " "
    elif kind == "noise":
        units, joiner = [_load_prompts("ruler")["noise_sentence"]] * n, "\n"
    elif kind == "needle":  # distractor needles with other keys
        dk = distinct_values(hay_rng, a["type_needle_k"], n, avoid=frozenset(keys))
        tv = a["type_needle_v"]
        units = [needle_fmt.format(type_needle_v=tv, key=k, value=random_value(hay_rng, tv)) for k in dk]
        joiner = "\n"
    else:
        raise ValueError(f"unknown haystack type {kind!r}")
    context, info = _place(units, needles, depths, joiner, needle_lines)
    asked = set(queries)
    by_place = sorted(zip(keyed, info), key=lambda p: p[1]["span"][0])
    answer_lines = [d["text"] for (k, _), d in by_place if k in asked]

    t = _template("niah")
    template, answer_prefix, type_v = t["template"], t["answer_prefix"], a["type_needle_v"]
    if a["num_needle_q"] * a["num_needle_v"] == 1:  # RULER's singular wording
        for old, new in (("Some", "A"), ("are all", "is"), ("are", "is"), ("answers", "answer")):
            template, answer_prefix = template.replace(old, new), answer_prefix.replace(old, new)
        type_v = type_v[:-1]
    query = ", ".join(queries[:-1]) + ", and " + queries[-1] if len(queries) > 1 else queries[0]
    filled = template.format(type_needle_v=type_v, context=_SENTINEL, query=query)
    pre, sep, question = _split_filled(filled)
    ap = answer_prefix.format(type_needle_v=type_v, query=query)
    return _Draft(pre, context, sep, question, ap, answers, info, answer_lines)


def _vt_chains(rng: random.Random, num_chains: int, num_hops: int):
    """Distinct 5-letter variable names and assignment chains `VAR B = VAR A` from a value."""
    names: list[str] = []
    while len(names) < num_chains * (num_hops + 1):
        v = "".join(rng.choices("ABCDEFGHIJKLMNOPQRSTUVWXYZ", k=5))
        if v not in names:
            names.append(v)
    values = rng.sample(range(10000, 100000), num_chains)
    chains, var_lists = [], []
    for c in range(num_chains):
        vs = names[c * (num_hops + 1) : (c + 1) * (num_hops + 1)]
        stmts = [f"VAR {vs[0]} = {values[c]}"]
        stmts += [f"VAR {vs[j + 1]} = VAR {vs[j]}" for j in range(num_hops)]
        chains.append(stmts)
        var_lists.append(vs)
    return var_lists, chains


def _interleave(rng: random.Random, chains: list[list[str]]) -> list[str]:
    """Merge chains in random order while each chain keeps its own order."""
    pending = [list(c) for c in chains]
    out: list[str] = []
    while any(pending):
        c = rng.choice([i for i, p in enumerate(pending) if p])
        out.append(pending[c].pop(0))
    return out


def _vt(args: dict, n: int, rng_seed: str, hay: list[str], depths: Sequence[float] | None,
        needle_lines: bool = False):
    num_chains, num_hops = args["num_chains"], args["num_hops"]
    rng = random.Random(rng_seed + "/needles")
    var_lists, chains = _vt_chains(rng, num_chains, num_hops)
    flat = _interleave(rng, chains)
    if depths is None:
        depths = [100 * rng.random() for _ in flat]
    depths = sorted(depths)  # chain order = reading order
    t = _template("variable_tracking")
    noise = _load_prompts("ruler")["noise_sentence"]

    def filled(context: str, value: str) -> tuple[str, str]:
        q = t["template"].format(context=context, query=value, num_v=num_hops + 1)
        return q, t["answer_prefix"].format(query=value, num_v=num_hops + 1)

    # One worked example first, as RULER does (a short noise context, fresh names).
    icl_vars, icl_chains = _vt_chains(rng, num_chains, num_hops)
    icl_depths = sorted(rng.sample(range(101), num_chains * (num_hops + 1)))
    icl_ctx, _ = _place([noise] * 5, _interleave(rng, icl_chains), icl_depths, "\n")
    icl_q, icl_ap = filled(icl_ctx, icl_chains[0][0].split("= ")[-1])
    example = icl_q + icl_ap + " ".join(icl_vars[0]) + "\n"

    queried = set(chains[0])
    asked = [s in queried for s in flat]  # flat is in reading order
    if args.get("type_haystack", "noise") == "essay":
        units, joiner = cycle_from(hay, rng.randrange(len(hay)), n), " "
        flat = [s + "." for s in flat]
    else:
        units, joiner = [noise] * n, "\n"
    context, info = _place(units, flat, depths, joiner, needle_lines)
    answer_lines = [s for s, a in zip(flat, asked) if a]
    value = chains[0][0].split("= ")[-1]
    q, ap = filled(_SENTINEL, value)
    pre, sep, question = _split_filled(q)
    return _Draft(example + pre, context, sep, question, ap, list(var_lists[0]), info,
                  answer_lines)


def _cwe_list(rng: random.Random, n_words: int, reps_common: int, reps_rare: int, n_common: int):
    words = rng.sample(word_pool(n_words), n_words)
    common, rare = words[:n_common], words[n_common:]
    seq = common * reps_common + rare * reps_rare
    rng.shuffle(seq)
    return " ".join(f"{i + 1}. {w}" for i, w in enumerate(seq)), common


def _cwe(args: dict, n: int, rng_seed: str, hay: list[str], depths, short: bool = False,
         needle_lines: bool = False):
    num_cw = args["num_cw"]
    rng = random.Random(rng_seed + "/words")
    t = _template("common_words_extraction")
    shot_cfg = (20, 3, 1) if short else (40, 10, 3)
    ex_ctx, ex_ans = _cwe_list(rng, shot_cfg[0], shot_cfg[1], shot_cfg[2], num_cw)
    example = t["template"].format(context=ex_ctx, query="") + t["answer_prefix"] + " " + " ".join(
        f"{i + 1}. {w}" for i, w in enumerate(ex_ans)
    )
    reps = (6, 1) if short else (args["freq_cw"], args["freq_ucw"])
    list_rng = random.Random(rng_seed + f"/list/{n}")
    context, common = _cwe_list(list_rng, num_cw + n, reps[0], reps[1], num_cw)
    pre, sep, question = _split_filled(t["template"].format(context=_SENTINEL, query=""))
    return _Draft(example + "\n" + pre, context, sep, question, t["answer_prefix"], common, [])


@lru_cache(maxsize=8)
def _coded_vocab(rng_seed: str, size: int) -> tuple[str, ...]:
    """Random six-letter "coded words"; the first is replaced by noise ("..."), as in RULER."""
    rng = random.Random(rng_seed + "/vocab")
    vocab: dict[str, None] = {}
    while len(vocab) < size:
        vocab.setdefault("".join(rng.choices("abcdefghijklmnopqrstuvwxyz", k=6)))
    return ("...", *list(vocab)[1:])


def _fwe(args: dict, n: int, rng_seed: str, hay: list[str], depths: Sequence[float] | None,
         needle_lines: bool = False):
    alpha, vocab_size = float(args.get("alpha", 2.0)), int(args.get("vocab_size", 2000))
    vocab = _coded_vocab(rng_seed, vocab_size)
    z = zeta(alpha)
    words = [w for k, w in enumerate(vocab, 1) for _ in range(int(n * k**-alpha / z))]
    random.Random(rng_seed + f"/order/{n}").shuffle(words)
    t = _template("freq_words_extraction")
    pre, sep, question = _split_filled(t["template"].format(context=_SENTINEL, query=""))
    return _Draft(pre, " ".join(words), sep, question, t["answer_prefix"], list(vocab[1:4]), [])


def _repeat_line(args: dict, n: int, rng_seed: str, hay: Sequence[str],
                 depths: Sequence[float] | None, needle_lines: bool = False):
    """Haystack lines, one sentence each; the question quotes a 3-4 word span of one line
    that occurs nowhere else in the context (case-insensitive; words with a letter or digit,
    no double quote), the answer is that line.

    The line is the nearest one to a random depth (or `depths[0]`) that has such a span;
    when none of the 512 nearest has one (a haystack shorter than the context repeats),
    the draft is marked invalid and `generate_sample` refuses it.
    """
    rng = random.Random(rng_seed + "/line")
    start = rng.randrange(len(hay))
    depth = float(depths[0]) if depths else float(rng.choice(DEPTHS))
    width = rng.choice((3, 4))
    units = cycle_from(hay, start, n)
    context = "\n".join(units)
    low = context.lower()
    cum = list(itertools.accumulate((len(u) for u in units), initial=0))
    target = min(n - 1, bisect.bisect_left(cum, cum[-1] * depth / 100))
    found, valid = (target, " ".join(units[target].split()[:width])), False
    for i in sorted(range(n), key=lambda i: (abs(i - target), i))[:512]:
        words = units[i].split()
        starts = list(range(len(words) - width + 1))
        random.Random(f"{rng_seed}/span/{i}").shuffle(starts)
        quote = next((q for q in (" ".join(words[k : k + width]) for k in starts)
                      if '"' not in q and all(any(c.isalnum() for c in w) for w in q.split())
                      and low.count(q.lower()) == 1), None)
        if quote is not None:
            found, valid = (i, quote), True
            break
    i, quote = found
    line = units[i]
    offset = cum[i] + i  # one newline a line before it
    info = [{"text": line, "depth": depth, "actual_depth": 100 * cum[i] / max(1, cum[-1]),
             "span": [offset, offset + len(line)]}]
    t = _template("repeat_line")
    pre, sep, question = _split_filled(t["template"].format(context=_SENTINEL, query=quote))
    return _Draft(pre, context, sep, question, t["answer_prefix"], [line], info, [line], valid)


_FAMILIES = {
    "niah": _niah,
    "variable_tracking": _vt,
    "common_words_extraction": _cwe,
    "freq_words_extraction": _fwe,
    "repeat_line": _repeat_line,
}
# Smallest haystack size tried (fwe needs ~100 words before its top-3 counts separate).
_MIN_SIZE = {
    "niah": 1,
    "variable_tracking": 1,
    "common_words_extraction": 1,
    "freq_words_extraction": 100,
    "repeat_line": 1,
}


@lru_cache(maxsize=4)
def _haystack_units(texts: tuple[str, ...] | None, max_line_chars: int | None
                    ) -> tuple[str, ...]:
    """Sentences of the haystack texts (or lines of them, for repeat_line), computed once
    per haystack: a corpus-sized haystack is split once, not once a sample."""
    sents = haystack_sentences(texts)
    return tuple(sentence_lines(sents, max_line_chars) if max_line_chars else sents)


# ---------------------------------------------------------------- generation


def _largest_fitting(make: Callable[[int], _Draft], lo: int, budget: int, count: CountFn) -> _Draft:
    """Largest size whose prompt fits the budget: doubling, then bisection."""
    fits = lambda d: count(d.prompt()) <= budget  # noqa: E731
    best = make(lo)
    if not fits(best):
        raise BadInput(f"target length {budget} is too small for the smallest sample")
    hi = lo
    while True:
        hi *= 2
        d = make(hi)
        if not fits(d):
            break
        lo, best = hi, d
        if hi > 1 << 26:
            raise RuntimeError("length function does not grow with the text")
    while hi - lo > 1:
        mid = (lo + hi) // 2
        d = make(mid)
        if fits(d):
            lo, best = mid, d
        else:
            hi = mid
    return best


def generate_sample(
    task: str,
    target_length: int,
    *,
    unit: str | CountFn = "tokens",
    seed: int = 0,
    index: int = 0,
    haystack: Sequence[str] | None = None,
    depths: Sequence[float] | None = None,
    reserve: int = 0,
    overrides: dict | None = None,
    needle_lines: bool = False,
) -> dict:
    """One record whose full prompt (`build_prompt`) measures at most `target_length - reserve`.

    `depths` (percent, one per needle / variable-tracking statement) fixes where the
    needles go; `overrides` changes task arguments (e.g. `{"num_needle_k": 8}`).
    `needle_lines`: every needle (and variable-tracking statement) is a line of its own
    in the context; an essay haystack joins it with newlines instead of a space, a
    newline-joined haystack is unchanged. `record["answer_lines"]` are the context's
    needles that carry the answers (the queried keys' needles, the queried chain's
    statements, repeat_line's line; none for cwe / fwe), in reading order.
    """
    spec = task_specs()[task]
    args = {**spec.args, **(overrides or {})}
    count = count_fn_for(unit)
    # Only essay haystacks read text (the stdlib fallback imports ~50 modules once).
    texts = None if haystack is None else tuple(haystack)
    lines = args.get("max_line_chars") if spec.family == "repeat_line" else None
    hay = _haystack_units(texts, lines) if args.get("type_haystack") == "essay" else []
    rng_seed = f"{seed}/{task}/{index}"
    family = _FAMILIES[spec.family]
    budget = target_length - reserve

    def make(n: int, **kw) -> _Draft:
        return family(args, n, rng_seed, hay, depths, needle_lines=needle_lines, **kw)

    if spec.family == "common_words_extraction":
        try:
            draft = _largest_fitting(make, _MIN_SIZE[spec.family], budget, count)
        except ValueError:  # short targets: RULER's lighter repetition scheme
            draft = _largest_fitting(lambda n: make(n, short=True), 1, budget, count)
    else:
        draft = _largest_fitting(make, _MIN_SIZE[spec.family], budget, count)
    if not draft.valid:
        raise BadInput(f"{task} at length {target_length}: no line near the chosen depth has "
                       "a 3-4 word span found nowhere else in the context",
                       hint="give a larger, less repetitive haystack or a shorter length")

    # The answer prefix ends the template, so any runner that fills `prompt_template`
    # with `context` and `input` feeds the model exactly what RULER feeds it.
    tmpl = _esc(draft.prefix) + "{context}" + _esc(draft.sep) + "{input}"
    tmpl += _esc(draft.answer_prefix)
    record = {
        "_id": f"{task}-{seed}-{index}",
        "dataset": task,
        "task": spec.family,
        "language": "en",
        "input": draft.question,
        "context": draft.context,
        "answers": draft.answers,
        "all_classes": None,
        "prompt_template": tmpl,
        "answer_prefix": draft.answer_prefix,
        "max_new_tokens": _template(spec.family)["tokens_to_generate"],
        "metric": "string_match_all",
        "needles": draft.needles,
        "answer_lines": draft.answer_lines,
        "needle_lines": needle_lines,
        "length_unit": _unit_name(unit),
        "target_length": target_length,
        "seed": seed,
        "index": index,
    }
    record["length"] = count(build_prompt(record)) + reserve
    return record


def generate(task: str, target_length: int, num_samples: int, **kw) -> list[dict]:
    """`num_samples` records, index 0.. (keywords as `generate_sample`, `needle_lines` too)."""
    return [generate_sample(task, target_length, index=i, **kw) for i in range(num_samples)]


def build_prompt(record: dict, answer_prefix: bool = True) -> str:
    """The model input for a record: its template filled with context and question.

    The template ends with RULER's answer prefix; `answer_prefix=False` leaves it off.
    """
    text = record["prompt_template"].format(context=record["context"], input=record["input"])
    prefix = record.get("answer_prefix", "")
    if not answer_prefix and prefix and text.endswith(prefix):
        text = text[: -len(prefix)]
    return text


def write_jsonl(records: Iterable[dict], path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        for r in records:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
    return path


# ---------------------------------------------------------------- scoring


def postprocess_pred(pred: str) -> str:
    """RULER: strip, turn control characters into newlines, strip again."""
    return re.sub(r"[\x00-\x1f]", "\n", pred.strip()).strip()


def match_all(pred: str, refs: Sequence[str]) -> float:
    """Share of references found (case-insensitive substring) in the prediction."""
    return sum(r.lower() in pred.lower() for r in refs) / len(refs)


def match_part(pred: str, refs: Sequence[str]) -> float:
    """1 if any reference is found in the prediction."""
    return float(any(r.lower() in pred.lower() for r in refs))


def string_match_all(preds: Sequence[str], refs: Sequence[Sequence[str]]) -> float:
    """RULER's metric for the synthetic tasks: mean share of references found, x 100, 2 places."""
    return round(sum(match_all(p, r) for p, r in zip(preds, refs)) / len(preds) * 100, 2)


def string_match_part(preds: Sequence[str], refs: Sequence[Sequence[str]]) -> float:
    """RULER's QA metric: share of predictions containing any reference, x 100, 2 places."""
    return round(sum(match_part(p, r) for p, r in zip(preds, refs)) / len(preds) * 100, 2)


METRICS = {"string_match_all": string_match_all, "string_match_part": string_match_part}


def score_records(records: Sequence[dict], preds: Sequence[str] | None = None) -> dict:
    """Score one task's records (predictions from `preds` or each record's `pred`)."""
    preds = [r["pred"] for r in records] if preds is None else list(preds)
    preds = [postprocess_pred(p) for p in preds]
    metric = METRICS[records[0].get("metric", "string_match_all")]
    return {
        "score": metric(preds, [r["answers"] for r in records]),
        "nulls": f"{sum(not p for p in preds)}/{len(preds)}",
    }


def score_directory(pred_dir: str | Path, write: bool = True) -> dict[str, dict]:
    """Score every `<task>.jsonl` with `pred` fields; write `summary.json`."""
    pred_dir = Path(pred_dir)
    out: dict[str, dict] = {}
    for path in sorted(pred_dir.glob("*.jsonl")):
        lines = path.read_text(encoding="utf-8").splitlines()
        recs = [json.loads(line) for line in lines if line.strip()]
        if recs and all("pred" in r for r in recs):
            out[path.stem] = score_records(recs)
    if write:
        (pred_dir / "summary.json").write_text(json.dumps(out, indent=2))
    return out


def needle_depth(record: dict, i: int = 0) -> float:
    """Where needle `i` starts, in percent of the whole context (needles included)."""
    start = record["needles"][i]["span"][0]
    return 100 * start / max(1, len(record["context"]))

