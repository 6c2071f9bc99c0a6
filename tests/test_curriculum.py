"""The retrieval curriculum (#23): needles on lines of their own, answer lines, the
repeat_line task, and `build_curriculum` end to end (its segments through the Ray job)."""

from __future__ import annotations

import hashlib
import json
import re

import pytest

from data.errors import BadInput
from eval import ruler
from eval.curriculum import CurriculumConfig, build_curriculum, natural_count, ruler_instruction
from eval.runners.common import build_prompt as split_prompt

HAYSTACK = [
    " ".join(f"Sentence {i} of document {d} talks about topic {i * d % 17}." for i in range(60))
    for d in range(1, 6)
]
NIAH = ["niah_single_1", "niah_single_2", "niah_multikey_1", "niah_multikey_2",
        "niah_multivalue", "niah_multiquery"]
WORDS = ("amber", "brisk", "cedar", "dune", "ember", "fjord", "grove", "heath", "inlet", "jade",
         "kelp", "larch", "marsh", "nook", "oasis", "pine", "quill", "reef", "sage", "tundra")
MARKER = "quokka"  # a word only the held-out corpus has


def _alone_on_a_line(ctx: str, span: list[int]) -> bool:
    a, b = span
    return (a == 0 or ctx[a - 1] == "\n") and (b == len(ctx) or ctx[b] == "\n")


@pytest.mark.parametrize("task", NIAH + ["vt", "vt_essay"])
def test_needle_lines_put_each_needle_alone_on_a_line(task):
    over = {"type_haystack": "essay"} if task == "vt_essay" else None
    name = "vt" if task == "vt_essay" else task
    kw = dict(unit="chars", seed=2, index=1, haystack=HAYSTACK, overrides=over)
    rec = ruler.generate_sample(name, 3000, needle_lines=True, **kw)
    assert rec["needles"] and rec["needle_lines"] is True
    for n in rec["needles"]:
        assert rec["context"][n["span"][0] : n["span"][1]] == n["text"]
        assert _alone_on_a_line(rec["context"], n["span"]), n
        assert n["text"] in rec["context"].split("\n")
    assert len(rec["prompt_template"].format(**rec)) <= 3000
    if name == "niah_single_2" or task == "vt_essay":  # an essay haystack: the flag matters
        plain = ruler.generate_sample(name, 3000, **kw)
        assert not all(_alone_on_a_line(plain["context"], n["span"]) for n in plain["needles"])
        assert all(plain["context"][n["span"][0]:n["span"][1]] == n["text"]
                   for n in plain["needles"])


# sha256 of records made before needle_lines existed (HAYSTACK, 3000 chars, seed 5, index 2),
# without the two new keys: the default output is byte-for-byte what it was.
GOLDEN = {
    "niah_single_2": "8c44b2c320a333dff93a5de904e0b01d1c06e9028db91be455692bba05eb279c",
    "niah_multivalue": "d14060458e76e68c68dafb39973b75bcca21e62a246d1b40d840f2bd12552281",
    "vt": "0e5e3345147cbe75a11fc62fda714acb5a8e5b11e3cf94accae34046d89f8fbb",
    "niah_single_1": "1ff75936912172b51a3b687330f90732f4c95507b9776f5938398d5218c7ce2d",
    "cwe": "9c4d93f172551e91595b81fb79dd4232e8f5f62405500548ffd36bb2a8922cf3",
}


@pytest.mark.parametrize("task", sorted(GOLDEN))
def test_default_output_is_unchanged(task):
    rec = ruler.generate_sample(task, 3000, unit="chars", seed=5, index=2, haystack=HAYSTACK)
    assert rec == ruler.generate_sample(task, 3000, unit="chars", seed=5, index=2,
                                        haystack=HAYSTACK, needle_lines=False)
    assert rec.pop("needle_lines") is False and isinstance(rec.pop("answer_lines"), list)
    digest = hashlib.sha256(json.dumps(rec, sort_keys=True).encode()).hexdigest()
    assert digest == GOLDEN[task]


@pytest.mark.parametrize("task", NIAH + ["niah_multikey_3", "vt", "repeat_line"])
def test_answer_lines_carry_every_answer_in_reading_order(task):
    rec = ruler.generate_sample(task, 4000, unit="chars", seed=7, haystack=HAYSTACK,
                                needle_lines=True)
    lines, response = rec["context"].split("\n"), "\n".join(rec["answer_lines"])
    assert rec["answer_lines"] and all(a in lines for a in rec["answer_lines"])
    assert ruler.match_all(response, rec["answers"]) == 1.0  # RULER credits the response
    starts = [rec["context"].index(a) for a in rec["answer_lines"]]
    assert starts == sorted(starts)
    if task == "niah_multikey_1":  # only the queried key's needle, not the other three
        assert len(rec["needles"]) == 4 and len(rec["answer_lines"]) == 1
    if task == "vt":
        assert len(rec["answer_lines"]) == 5 and rec["answer_lines"][0].startswith("VAR ")


def test_cwe_and_fwe_have_no_answer_lines():
    for task in ("cwe", "fwe"):
        assert ruler.generate_sample(task, 3000, unit="chars", haystack=HAYSTACK,
                                     needle_lines=True)["answer_lines"] == []


@pytest.mark.parametrize("seed", range(6))
def test_repeat_line_quotes_a_unique_span_of_a_context_line(seed):
    rec = ruler.generate_sample("repeat_line", 2500, unit="chars", seed=seed, haystack=HAYSTACK)
    assert rec == ruler.generate_sample("repeat_line", 2500, unit="chars", seed=seed,
                                        haystack=HAYSTACK)
    quote = re.fullmatch(r'Repeat the line that contains "(.+)"\.', rec["input"]).group(1)
    assert 3 <= len(quote.split()) <= 4
    ctx, (line,) = rec["context"], rec["answers"]
    assert ctx.lower().count(quote.lower()) == 1  # nowhere else in the context
    lines = ctx.split("\n")
    assert line in lines and quote in line and rec["answer_lines"] == [line]
    assert all(len(x) <= 100 for x in lines) and len(lines) > 10
    (needle,) = rec["needles"]
    assert ctx[needle["span"][0] : needle["span"][1]] == line
    assert rec["metric"] == "string_match_all" and rec["max_new_tokens"] == 64
    assert ruler.build_prompt(rec).endswith(rec["input"] + " The line is:")
    assert 0.9 * 2500 <= len(ruler.build_prompt(rec)) <= 2500


def test_repeat_line_refuses_a_haystack_that_repeats_in_the_context():
    with pytest.raises(BadInput):
        ruler.generate_sample("repeat_line", 3000, unit="chars",
                              haystack=["one two three four five six."])


@pytest.mark.parametrize("task", ["niah_single_2", "vt", "repeat_line", "niah_multiquery"])
def test_sft_layout_is_the_ruler_prompt_split_around_its_context(task):
    rec = ruler.generate_sample(task, 3000, unit="chars", haystack=HAYSTACK, needle_lines=True)
    p = split_prompt(task, rec)
    assert p.before + p.context + p.after == ruler.build_prompt(rec)
    s = ruler_instruction(task, rec)
    assert (s.instruction, s.context) == (p.before + p.after, rec["context"])
    assert s.response == "\n".join(rec["answer_lines"]) and s.family == f"ruler:{task}"
    assert set(s.meta) == {"task", "length", "answers", "metric"}


# ---------------------------------------------------------------- build_curriculum


def _write_jsonl(path, texts):
    path.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    return path


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("curriculum")
    train = [
        "".join(f"Doc {d} line {j} says the {WORDS[(d + j) % 20]} meets the {WORDS[j % 20]} "
                f"at {j * 7 + d}." + ("\n" if j % 2 else " ") for j in range(80))
        for d in range(8)
    ]
    held = [" ".join(f"The {MARKER} number {i} likes {WORDS[i % 20]} and {WORDS[(i * 3) % 20]} "
                     f"leaves." for i in range(k * 60, k * 60 + 60)) for k in range(2)]
    cfg = CurriculumConfig(out=str(root / "out"),
                           corpus=str(_write_jsonl(root / "train.jsonl", train)),
                           heldout_corpus=str(_write_jsonl(root / "held.jsonl", held)),
                           tasks=["niah_single_1", "niah_single_2", "vt", "repeat_line"],
                           heldout_tasks=["niah_multiquery"], lengths=[1500, 3000],
                           train_per_length=2, val_per_length=1, eval_per_length=1,
                           natural_ratio=0.2, seed=3)
    return cfg, build_curriculum(cfg)


def _samples(cfg, split):
    from data.corpus.instructions import read_instructions

    return list(read_instructions(f"{cfg.out}/{split}.jsonl"))


def test_build_writes_every_file_with_counts(built):
    from pathlib import Path

    cfg, manifest = built
    out = Path(cfg.out)
    for name in ("train.jsonl", "val.jsonl", "segments.jsonl.zst", "manifest.json"):
        assert (out / name).stat().st_size > 0, name
    names = {f"{t}_{n}.jsonl" for t in cfg.tasks + cfg.heldout_tasks for n in cfg.lengths}
    assert {p.name for p in (out / "eval").iterdir()} == names
    assert json.loads((out / "manifest.json").read_text()) == manifest
    train, val = _samples(cfg, "train"), _samples(cfg, "val")
    assert manifest["counts"]["train"]["total"] == len(train) == 16 + natural_count(16, 0.2)
    assert manifest["counts"]["val"]["total"] == len(val) == 8 + natural_count(8, 0.2)
    assert manifest["counts"]["train"]["by_family"]["ruler:vt"] == {"1500": 2, "3000": 2}
    for s in train + val:  # the SFT layout: needles alone on lines, response = answer lines
        assert s.response and s.meta["length"] in cfg.lengths
        if s.family.startswith("ruler:"):
            assert ruler.match_all(s.response, s.meta["answers"]) == 1.0
            assert all(line in s.context.split("\n") for line in s.response.split("\n"))
            assert len(s.instruction) + len(s.context) <= s.meta["length"]
    assert "--id-field id" in manifest["commands"]["convert"]


def test_natural_samples_hold_their_ratio(built):
    cfg, _ = built
    for split in ("train", "val"):
        samples = _samples(cfg, split)
        nat = [s for s in samples if s.family == "natural"]
        assert abs(len(nat) - cfg.natural_ratio * len(samples)) <= 1, (split, len(nat))
        for s in nat:  # a passage cut at a line boundary, then its next line
            assert s.instruction == "Continue the text." and s.context.endswith("\n")
            assert "\n" not in s.response and s.response.strip()
            assert len(s.context) <= s.meta["length"] and MARKER not in s.context


def test_splits_share_no_sample_and_eval_reads_the_heldout_corpus(built):
    from pathlib import Path

    cfg, manifest = built
    train, val = _samples(cfg, "train"), _samples(cfg, "val")
    evals = [json.loads(x) for p in sorted((Path(cfg.out) / "eval").iterdir())
             for x in p.read_text().splitlines()]
    ctx = {"train": {s.context for s in train}, "val": {s.context for s in val},
           "eval": {r["context"] for r in evals}}
    assert len(ctx["train"]) == len(train) and len(ctx["val"]) == len(val)
    assert not (ctx["train"] & ctx["val"]) and not (ctx["train"] | ctx["val"]) & ctx["eval"]
    ids = [s.id for s in train + val] + [r["_id"] + str(r["target_length"]) for r in evals]
    assert len(ids) == len(set(ids))
    assert all(MARKER not in s.context for s in train + val)
    essay = [r for r in evals if r["dataset"] in ("niah_single_2", "repeat_line",
                                                  "niah_multiquery")]
    assert essay and all(MARKER in r["context"] for r in essay)
    assert all(r["needle_lines"] for r in evals)
    assert manifest["haystacks"]["eval"]["path"].endswith("held.jsonl")


def test_bad_input_is_refused_with_a_hint(tmp_path):
    with pytest.raises(BadInput, match="unknown task"):
        CurriculumConfig(tasks=["nosuchtask"])
    with pytest.raises(BadInput, match="held out"):
        CurriculumConfig(tasks=["vt"], heldout_tasks=["vt"])
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    with pytest.raises(BadInput, match="no documents"):
        build_curriculum(CurriculumConfig(out=str(tmp_path / "o"), corpus=str(empty)))
    corpus = _write_jsonl(tmp_path / "c.jsonl", [" ".join(f"Word {i} here." for i in range(300))])
    with pytest.raises(BadInput, match="length 50") as err:
        build_curriculum(CurriculumConfig(out=str(tmp_path / "o"), corpus=str(corpus),
                                          heldout_corpus=str(corpus), lengths=[50]))
    assert err.value.hint


def test_segments_convert_through_the_ray_job(built, local_ray, tmp_path):
    """segments.jsonl.zst is a corpus: `vst convert --id-field id` stores every segment, and
    `encoded_from_store` reads each sample back, its pages tiling its segments' text."""
    from data.store import Store
    from jobs.convert.driver import run_conversion
    from vst.sft_data import SEGMENTS, encoded_from_store

    cfg, _ = built
    samples = _samples(cfg, "train") + _samples(cfg, "val")
    summary = run_conversion(f"{cfg.out}/segments.jsonl.zst", tmp_path / "store",
                             codec="mini:tiny", num_parts=1, num_actors=1, layout="npy",
                             id_field="id")
    assert summary["docs"] == 3 * len(samples) and summary["skips"] == 0
    store = Store(tmp_path / "store")
    for s in samples:
        got = encoded_from_store(store, s)
        for seg in SEGMENTS:
            assert "".join(got.texts[seg]) == getattr(s, seg), (s.id, seg)
            assert got.tokens[seg].shape[0] == len(got.texts[seg]) > 0
