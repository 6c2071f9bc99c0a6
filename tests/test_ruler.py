"""RULER-style generators: determinism, needle placement, length targets, scoring."""

from __future__ import annotations

import json
import math
import re
from collections import Counter

import pytest
from typer.testing import CliRunner

from eval import ruler, ruler_haystack
from eval.eval_cli import app

# A small local haystack: plain strings, as a corpus reader would hand them over.
HAYSTACK = [
    " ".join(f"Sentence {i} of document {d} talks about topic {i * d % 17}." for i in range(60))
    for d in range(1, 6)
]


def visual_tokens(text: str) -> int:
    """A stand-in for a VST budget: 64 tokens per started page of 1500 characters."""
    return 64 * math.ceil(len(text) / 1500)


# ---------------------------------------------------------------- determinism


@pytest.mark.parametrize("task", ruler.TASKS)
def test_seeded_determinism(task):
    a = ruler.generate_sample(task, 600, unit="tokens", seed=3, index=1, haystack=HAYSTACK)
    b = ruler.generate_sample(task, 600, unit="tokens", seed=3, index=1, haystack=HAYSTACK)
    c = ruler.generate_sample(task, 600, unit="tokens", seed=4, index=1, haystack=HAYSTACK)
    assert a == b
    assert json.loads(json.dumps(a)) == a  # JSON-safe
    assert (a["context"], a["answers"]) != (c["context"], c["answers"])


@pytest.mark.parametrize("task", ["niah_multiquery", "vt", "cwe", "fwe"])
def test_template_fills_like_longbench_and_ends_with_answer_prefix(task):
    rec = ruler.generate_sample(task, 700, unit="tokens", haystack=HAYSTACK)
    full = rec["prompt_template"].format(**rec)  # what a LongBench-style runner does
    assert full == ruler.build_prompt(rec)
    assert full.endswith(rec["answer_prefix"]) and rec["answer_prefix"].startswith(" Answer") or (
        task.startswith("niah") and rec["answer_prefix"].startswith(" The special magic")
    )
    bare = ruler.build_prompt(rec, answer_prefix=False)
    assert bare + rec["answer_prefix"] == full and bare.endswith(rec["input"])
    assert rec["context"] in bare


def test_samples_differ_by_index():
    recs = ruler.generate("niah_single_3", 500, 3, unit="tokens", seed=0, haystack=HAYSTACK)
    assert len({r["answers"][0] for r in recs}) == 3
    assert [r["_id"] for r in recs] == [f"niah_single_3-0-{i}" for i in range(3)]


# ---------------------------------------------------------------- lengths


@pytest.mark.parametrize(
    "unit, target",
    [("chars", 6000), ("tokens", 1500), (visual_tokens, 640)],
    ids=["chars", "cl100k", "visual"],
)
@pytest.mark.parametrize("task", ["niah_single_2", "niah_multikey_3", "vt", "cwe", "fwe"])
def test_target_length_hit(task, unit, target):
    rec = ruler.generate_sample(task, target, unit=unit, seed=0, haystack=HAYSTACK)
    count = ruler.count_fn_for(unit)
    measured = count(ruler.build_prompt(rec))
    assert measured == rec["length"]
    assert measured <= target
    # one more haystack unit would not fit, so we land close to the target
    slack = 0.13 if unit is visual_tokens else 0.08  # a page is 10% of 640 visual tokens
    assert measured >= (1 - slack) * target, (measured, target)


def test_reserve_leaves_room():
    rec = ruler.generate_sample("niah_single_1", 1000, unit="tokens", reserve=128)
    prompt_tokens = ruler.count_fn_for("tokens")(ruler.build_prompt(rec))
    assert prompt_tokens <= 1000 - 128
    assert rec["length"] == prompt_tokens + 128


def test_too_small_target_raises():
    with pytest.raises(ValueError):
        ruler.generate_sample("niah_single_2", 20, unit="tokens", haystack=HAYSTACK)


# ---------------------------------------------------------------- needles


@pytest.mark.parametrize("depth", [0, 10, 37.5, 50, 90, 100])
def test_needle_at_requested_depth(depth):
    rec = ruler.generate_sample(
        "niah_single_2", 3000, unit="tokens", seed=1, haystack=HAYSTACK, depths=[depth]
    )
    (needle,) = rec["needles"]
    start, end = needle["span"]
    assert rec["context"][start:end] == needle["text"]
    assert rec["answers"][0] in needle["text"]
    # the haystack share before the needle is the requested depth, to within one sentence
    ctx = rec["context"]
    def chars(t: str) -> int:
        return len(re.sub(r"\s", "", t))
    total = chars(ctx[:start] + ctx[end:])
    longest = max(chars(s) for s in ruler_haystack.split_sentences(" ".join(HAYSTACK)))
    assert abs(100 * chars(ctx[:start]) / total - depth) <= 100 * longest / total + 0.5
    assert needle["actual_depth"] == pytest.approx(depth, abs=100 * (longest + 20) / total)


def test_multikey_needles_all_present_and_answer_is_queried_key():
    rec = ruler.generate_sample(
        "niah_multikey_1", 2000, unit="tokens", seed=2, haystack=HAYSTACK, depths=[10, 30, 60, 90]
    )
    assert len(rec["needles"]) == 4
    for n in rec["needles"]:
        assert rec["context"][n["span"][0] : n["span"][1]] == n["text"]
    order = sorted(range(4), key=lambda i: rec["needles"][i]["depth"])
    starts = [rec["needles"][i]["span"][0] for i in order]
    assert starts == sorted(starts)  # deeper needles come later
    (value,) = rec["answers"]
    key = re.search(r"for (\S+) is: " + value, rec["context"]).group(1)
    assert key in rec["input"] and key in rec["answer_prefix"]
    assert rec["context"].count(value) == 1


def test_multivalue_and_multiquery_answers():
    mv = ruler.generate_sample("niah_multivalue", 1500, unit="tokens", haystack=HAYSTACK)
    mq = ruler.generate_sample("niah_multiquery", 1500, unit="tokens", haystack=HAYSTACK)
    for rec in (mv, mq):
        assert len(rec["answers"]) == 4
        assert all(a in rec["context"] for a in rec["answers"])
        assert "Some special magic numbers" in ruler.build_prompt(rec)
    keys = set(re.findall(r"for (\S+) is: ", mv["context"]))
    assert len(keys) == 1  # one key, four values
    assert mq["input"].count(",") >= 2 and ", and " in mq["input"]


UUID = r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}"


@pytest.mark.parametrize(
    "task, kind",
    [("niah_single_1", r"\d{7}"), ("niah_single_3", UUID), ("niah_multikey_3", UUID)],
)
def test_value_types_and_singular_wording(task, kind):
    rec = ruler.generate_sample(task, 800, unit="tokens", haystack=HAYSTACK)
    assert re.fullmatch(kind, rec["answers"][0])
    prompt = ruler.build_prompt(rec)
    assert prompt.startswith("A special magic")
    assert prompt.endswith("mentioned in the provided text is")


def test_needle_haystack_distractors_use_other_keys():
    rec = ruler.generate_sample("niah_multikey_2", 1000, unit="tokens")
    lines = rec["context"].split("\n")
    assert len(lines) > 10
    assert all(line.startswith("One of the special magic numbers for") for line in lines)
    (value,) = rec["answers"]
    key = re.search(r"for (\S+) is: " + value, rec["context"]).group(1)
    assert sum(f"for {key} is:" in line for line in lines) == 1


def test_vt_chain_resolves_to_answers():
    rec = ruler.generate_sample("vt", 1200, unit="tokens", seed=5)
    stmts = re.findall(r"VAR (\w+) = (VAR )?(\w+)", rec["context"])
    value = {}
    for name, is_ref, rhs in stmts:  # reading order resolves every link
        value[name] = value[rhs] if is_ref else rhs
    target = re.search(r"assigned the value (\d+)", rec["input"]).group(1)
    assert sorted(n for n, v in value.items() if v == target) == sorted(rec["answers"])
    assert len(rec["answers"]) == 5
    # the worked example comes first and has different variables
    assert not any(a in rec["prompt_template"] for a in rec["answers"])


def test_vt_depths_respected():
    rec = ruler.generate_sample("vt", 1500, unit="tokens", depths=[5, 20, 40, 60, 95])
    assert [round(n["depth"]) for n in rec["needles"]] == [5, 20, 40, 60, 95]
    starts = [n["span"][0] for n in rec["needles"]]
    assert starts == sorted(starts)


def test_cwe_common_words_are_most_frequent():
    rec = ruler.generate_sample("cwe", 3000, unit="tokens", seed=7)
    words = re.findall(r"\d+\. (\S+)", rec["context"])
    counts = Counter(words)
    top = {w for w, _ in counts.most_common(10)}
    assert top == set(rec["answers"]) and len(rec["answers"]) == 10
    least_common = min(counts[w] for w in rec["answers"])
    assert least_common > max(c for w, c in counts.items() if w not in top)
    numbers = [int(n) for n in re.findall(r"(\d+)\. ", rec["context"])]
    assert numbers == list(range(1, len(words) + 1))


def test_cwe_short_target_uses_lighter_scheme():
    rec = ruler.generate_sample("cwe", 700, unit="tokens", seed=7)
    counts = Counter(re.findall(r"\d+\. (\S+)", rec["context"]))
    assert {counts[w] for w in rec["answers"]} == {6}


def test_fwe_answers_are_top_three_after_noise():
    rec = ruler.generate_sample("fwe", 2000, unit="tokens", seed=9)
    counts = Counter(rec["context"].split())
    ranked = [w for w, _ in counts.most_common()]
    assert ranked[0] == "..."
    assert ranked[1:4] == rec["answers"]
    assert counts[ranked[3]] > counts[ranked[4]]


def test_stdlib_fallback_haystack():
    texts = ruler_haystack.stdlib_haystack()
    assert len(texts) > 50
    rec = ruler.generate_sample("niah_single_2", 1000, unit="tokens")
    assert rec["answers"][0] in rec["context"]


# ---------------------------------------------------------------- scoring


def test_string_match_metrics():
    preds = ["The values are 123 and 456.", "nothing", "ABC-def"]
    refs = [["123", "456", "789"], ["x"], ["abc-DEF"]]
    # per sample: all -> 2/3, 0, 1 ; part -> 1, 0, 1
    assert ruler.string_match_all(preds, refs) == round((2 / 3 + 0 + 1) / 3 * 100, 2)
    assert ruler.string_match_part(preds, refs) == round(2 / 3 * 100, 2)
    assert ruler.postprocess_pred("  a\x00b\tc \n") == "a\nb\nc"


def test_score_directory_and_perfect_predictions(tmp_path):
    recs = ruler.generate("niah_multivalue", 800, 3, unit="tokens", haystack=HAYSTACK)
    recs[0]["pred"] = " ".join(recs[0]["answers"])
    recs[1]["pred"] = recs[1]["answers"][0]
    recs[2]["pred"] = ""
    ruler.write_jsonl(recs, tmp_path / "niah_multivalue.jsonl")
    out = ruler.score_directory(tmp_path)
    assert out == {"niah_multivalue": {"score": round((1 + 0.25 + 0) / 3 * 100, 2), "nulls": "1/3"}}
    assert json.loads((tmp_path / "summary.json").read_text()) == out


def test_make_ruler_cli(tmp_path):
    hay = tmp_path / "hay.txt"
    hay.write_text("\n\n".join(HAYSTACK))
    out = tmp_path / "out"
    args = ["make-ruler", str(out), "--tasks", "niah_single_2,fwe", "-l", "1200", "-n", "2"]
    res = CliRunner().invoke(app, [*args, "--unit", "chars", "--haystack", str(hay)])
    assert res.exit_code == 0, res.output
    recs = [json.loads(x) for x in (out / "niah_single_2_1200.jsonl").read_text().splitlines()]
    assert len(recs) == 2 and all(r["length"] <= 1200 and r["length_unit"] == "chars" for r in recs)
    assert "Sentence" in recs[0]["context"]
    yaml_text = (out / "vst_ruler_fwe_1200.yaml").read_text()
    assert 'dataset_path: "json"' in yaml_text and str(out / "fwe_1200.jsonl") in yaml_text
    bad = CliRunner().invoke(app, ["make-ruler", str(tmp_path / "o2"), "-t", "fwe", "-l", "50"])
    assert bad.exit_code != 0 and "too small" in bad.output


@pytest.mark.slow
def test_long_target_32k_tokens():
    rec = ruler.generate_sample("niah_multikey_1", 32768, unit="tokens", seed=0)
    n = ruler.count_fn_for("tokens")(ruler.build_prompt(rec))
    assert 0.97 * 32768 <= n <= 32768


def test_shipped_lm_eval_yamls_are_current(tmp_path):
    from eval.tasks import TASKS_DIR, write_static_yamls

    for path in write_static_yamls(tmp_path):
        assert (TASKS_DIR / path.name).read_text() == path.read_text(), path.name


@pytest.mark.slow
def test_lm_eval_loads_local_tasks(tmp_path, monkeypatch):
    """lm-eval indexes eval/tasks plus generated YAMLs, offline, and scores with our metrics."""
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    from lm_eval.tasks import TaskManager, get_task_dict

    from eval.tasks import TASKS_DIR, write_longbench_yaml, write_ruler_yamls

    data = ruler.write_jsonl(ruler.generate("vt", 500, 2, unit="tokens"), tmp_path / "vt_500.jsonl")
    write_ruler_yamls([data], tmp_path)
    lb_file = tmp_path / "trec.jsonl"
    rec = {"input": "Type?", "context": "Q: where? Type: City", "answers": ["City"],
           "dataset": "trec", "all_classes": ["City", "Country"], "length": 5}  # fmt: skip
    lb_file.write_text(json.dumps(rec) + "\n")
    write_longbench_yaml(lb_file, tmp_path)

    tm = TaskManager(include_path=[str(tmp_path), str(TASKS_DIR)])
    assert {"vst_ruler_vt_500", "vst_longbench_trec", "vst_ruler_4096"} <= set(tm.all_tasks)
    tasks = get_task_dict(["vst_ruler_vt_500", "vst_longbench_trec"], tm)
    vt, trec = tasks["vst_ruler_vt_500"], tasks["vst_longbench_trec"]
    doc = list(vt.test_docs())[0]
    assert vt.doc_to_text(doc) == ruler.build_prompt(doc)
    assert vt.process_results(doc, [" ".join(doc["answers"])]) == {"string_match_all": 100.0}
    tdoc = list(trec.test_docs())[0]
    assert trec.doc_to_text(tdoc).endswith("Type: City\nType?")
    assert trec.process_results(tdoc, ["City\nCountry"]) == {"longbench_score": 100.0}
    assert trec.config.generation_kwargs["max_gen_toks"] == 64
