"""LongBench v1/E scoring: expected values are derived here from the metric definitions."""

from __future__ import annotations

import json
import math
import string
from difflib import SequenceMatcher

import pytest
from typer.testing import CliRunner

from eval import longbench as lb
from eval.eval_cli import app


def f1(p: list[str], g: list[str]) -> float:
    """Bag-of-words F1 from its definition (multiset overlap)."""
    common = sum(min(p.count(w), g.count(w)) for w in set(p))
    if common == 0:
        return 0.0
    prec, rec = common / len(p), common / len(g)
    return 2 * prec * rec / (prec + rec)


def rouge_l_single_sentence(hyp: list[str], ref: list[str]) -> float:
    """`rouge` package ROUGE-L F for one dot-free sentence of distinct words:
    LCS / distinct words, F = 2PR / (P + R + 1e-8)."""
    m = [[0] * (len(ref) + 1) for _ in range(len(hyp) + 1)]
    for i, a in enumerate(hyp):
        for j, b in enumerate(ref):
            m[i + 1][j + 1] = m[i][j] + 1 if a == b else max(m[i][j + 1], m[i + 1][j])
    lcs = m[-1][-1]
    p, r = lcs / len(set(hyp)), lcs / len(set(ref))
    return 2.0 * (p * r / (p + r + 1e-8))


# ---------------------------------------------------------------- normalisation / qa_f1


def test_normalize_answer_drops_articles_punctuation_case():
    assert lb.normalize_answer("The  Cat, sat on an ANT-hill!") == "cat sat on anthill"
    # articles only as whole words; punctuation goes first, so "a.b" fuses to "ab"
    assert lb.normalize_answer("Theater a.b an") == "theater ab"


def test_qa_f1_partial_overlap():
    pred, gold = "The big red dog.", "a red dog"
    expected = f1(["big", "red", "dog"], ["red", "dog"])
    assert expected == pytest.approx(0.8)
    assert lb.qa_f1_score(pred, gold) == pytest.approx(expected)


def test_qa_f1_repeated_tokens_count_as_multiset():
    assert lb.qa_f1_score("dog dog dog", "dog") == pytest.approx(f1(["dog"] * 3, ["dog"]))


@pytest.mark.parametrize("metric", ["qa_f1", "rouge", "code_sim", "count", "retrieval"])
def test_empty_prediction_scores_zero(metric):
    gold = "Paragraph 3" if metric == "retrieval" else "x = 1" if metric == "code_sim" else "3"
    assert lb.METRICS[metric]("", gold, all_classes=[]) == 0.0


# ---------------------------------------------------------------- first-line datasets


def test_first_line_truncation_only_for_fewshot_datasets():
    pred = "\nParis\nLondon is wrong"
    # triviaqa keeps only the first non-empty line -> "Paris"
    assert lb.score_sample("triviaqa", pred, ["London"], []) == 0.0
    assert lb.score_sample("triviaqa", pred, ["Paris"], []) == 1.0
    # hotpotqa scores the whole output
    expected = f1(["paris", "london", "is", "wrong"], ["london"])
    assert lb.score_sample("hotpotqa", pred, ["London"], []) == pytest.approx(expected)


def test_max_over_answers():
    got = lb.score_sample("hotpotqa", "red dog", ["blue cat", "red dog"], [])
    assert got == 1.0


def test_samsum_first_line_rouge():
    pred = "quick fox jumps\nsecond line ignored"
    gold = "the quick red fox jumps high"
    expected = rouge_l_single_sentence(["quick", "fox", "jumps"], gold.split())
    assert lb.score_sample("samsum", pred, [gold], []) == pytest.approx(expected)
    # gov_report is not truncated: the extra words lower precision
    whole = rouge_l_single_sentence(pred.split(), gold.split())
    assert lb.score_sample("gov_report", pred, [gold], []) == pytest.approx(whole)
    assert whole < expected


def test_rouge_is_the_rouge_package_case_sensitive_and_dot_only_fails():
    # the `rouge` package does not lower-case
    assert lb.rouge_score("The Quick fox", "the quick fox") == pytest.approx(
        rouge_l_single_sentence(["The", "Quick", "fox"], ["the", "quick", "fox"])
    )
    assert lb.rouge_score("...", "the quick fox") == 0.0  # no sentence left -> error -> 0


# ---------------------------------------------------------------- classification


def test_classification_overlapping_names():
    classes = ["cat", "wildcat", "dog"]
    # "cat" is found inside "wildcat" but is a strict substring of the truth: dropped
    assert lb.classification_score("wildcat", "wildcat", all_classes=classes) == 1.0
    # two distinct classes named, truth among them -> 1/2
    assert lb.classification_score("wildcat or dog", "wildcat", all_classes=classes) == 0.5
    assert lb.classification_score("cat or dog", "wildcat", all_classes=classes) == 0.0


def test_classification_upstream_skip_after_remove():
    # Upstream removes from the list it iterates over, so the entry after a removed one
    # is never examined: found = [a1, a12, a123]; a1 removed, a12 skipped -> 2 left.
    classes = ["a1", "a12", "a123"]
    found = [c for c in classes if c in "a123"]
    kept, i = list(found), 0
    while i < len(kept):  # Python list-iterator semantics, written out
        if kept[i] in "a123" and kept[i] != "a123":
            del kept[i]
        i += 1
    assert kept == ["a12", "a123"]
    assert lb.classification_score("a123", "a123", all_classes=classes) == 1 / len(kept)


def test_trec_uses_first_line_and_classes():
    classes = ["Abbreviation", "City", "Country"]
    assert lb.score_sample("trec", "City\nCountry", ["City"], classes) == 1.0
    assert lb.score_sample("trec", "City, Country", ["City"], classes) == 0.5


# ---------------------------------------------------------------- retrieval / count / code


def test_retrieval_and_count():
    assert lb.retrieval_score("Paragraph 3, or maybe Paragraph 5", "Paragraph 3") == 0.5
    assert lb.retrieval_score("none", "Paragraph 3") == 0.0
    assert lb.retrieval_zh_score("段落12", "段落12") == 1.0
    assert lb.count_score("7 unique out of 12 paragraphs", "7") == 0.5
    assert lb.count_score("17", "7") == 0.0  # whole digit runs, not substrings


def test_fuzz_ratio_matches_fuzzywuzzy_pure_python():
    import random
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from fuzzywuzzy import fuzz

    if not getattr(fuzz, "SequenceMatcher", None) or fuzz.SequenceMatcher is not SequenceMatcher:
        pytest.skip("fuzzywuzzy uses python-Levenshtein here, not upstream's difflib path")
    rng = random.Random(0)
    for _ in range(300):
        a = "".join(rng.choice("ab c(x)=") for _ in range(rng.randint(0, 12)))
        b = "".join(rng.choice("ab c(x)=") for _ in range(rng.randint(0, 12)))
        assert lb.fuzz_ratio(a, b) == fuzz.ratio(a, b), (a, b)


def test_code_sim_first_plain_line():
    pred = "```python\n# a comment\nabcd\nmore"
    assert lb.code_sim_score(pred, "abcd") == 1.0
    expected = round(100 * SequenceMatcher(None, "abcd", "abce").ratio()) / 100
    assert lb.code_sim_score("\n\nabcd", "abce") == pytest.approx(expected)
    assert lb.code_sim_score("// c\n# d\n`x`", "abc") == 0.0  # no plain line -> ""


# ---------------------------------------------------------------- Chinese


def test_chinese_qa_f1_and_rouge():
    import jieba

    assert lb.qa_f1_zh_score("北京。", "北京") == 1.0  # punctuation tokens vanish

    pred, gold = "我们今天在北京开会", "今天在上海开会"

    def toks(s: str) -> list[str]:
        punct = set(string.punctuation) | set("，。！？")
        out = ["".join(ch for ch in t.lower() if ch not in punct).strip() for t in jieba.cut(s)]
        return [t for t in out if t]

    assert lb.qa_f1_zh_score(pred, gold) == pytest.approx(f1(toks(pred), toks(gold)))
    assert 0 < lb.qa_f1_zh_score(pred, gold) < 1
    assert lb.rouge_zh_score(gold, gold) == pytest.approx(2.0 * (1.0 / (2.0 + 1e-8)))
    assert lb.score_sample("multifieldqa_zh", "", ["北京"], []) == 0.0


# ---------------------------------------------------------------- prompts and truncation


def test_prompt_data_covers_all_datasets():
    prompts, maxlen = lb.dataset2prompt(), lb.dataset2maxlen()
    assert set(prompts) == set(lb.LONGBENCH_DATASETS) == set(maxlen) == set(lb.DATASET2METRIC)
    assert set(lb.LONGBENCH_E_DATASETS) <= set(prompts)
    for name, tmpl in prompts.items():
        fields = {f for _, f, _, _ in string.Formatter().parse(tmpl) if f is not None}
        assert fields <= {"context", "input"}, name
    sample = {"context": "CTX", "input": "Q?", "answers": ["a"]}
    assert lb.build_prompt("hotpotqa_e", sample) == prompts["hotpotqa"].format(**sample)
    assert maxlen["gov_report"] == 512 and maxlen["hotpotqa"] == 32


def test_truncate_middle_ids_styles():
    ids = list(range(10))
    assert lb.truncate_middle_ids(ids, 5, "v1") == [0, 1, 8, 9]  # int(5/2)=2 each side
    assert lb.truncate_middle_ids(ids, 5, "v2") == [0, 1, 7, 8, 9]  # -5//2 == -3
    assert lb.truncate_middle_ids(ids, 10) == ids


@pytest.mark.parametrize(
    "count",
    [len, lambda s: math.ceil(len(s) / 7), lb.cl100k_count],
    ids=["chars", "pages-of-7", "cl100k"],
)
def test_truncate_middle_fits_and_is_maximal(count):
    text = " ".join(f"word{i}" for i in range(400))
    budget = 60
    out = lb.truncate_middle(text, budget, count)
    assert count(out) <= budget
    # out = a prefix + a suffix of the input, the prefix the longest within half the budget
    half = budget // 2
    splits = [k for k in range(len(out) + 1) if text.startswith(out[:k]) and text.endswith(out[k:])]
    assert splits
    assert any(count(out[:k]) <= half < count(text[: k + 1]) for k in splits)
    assert lb.truncate_middle("short", budget, count) == "short"


def test_truncate_middle_chars_exact():
    assert lb.truncate_middle("abcdefghij", 4, len) == "abij"


# ---------------------------------------------------------------- result.json end to end


def _write(path, rows):
    with open(path, "w", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")


def _make_pred_dir(tmp_path):
    hot = [
        {"pred": "The big red dog.", "answers": ["a red dog"], "all_classes": None, "length": 1000},
        {"pred": "blue", "answers": ["red", "blue sky"], "all_classes": None, "length": 5000},
        {"pred": "", "answers": ["x"], "all_classes": None, "length": 9000},
    ]
    classes = ["City", "Country", "Abbreviation"]
    trec = [
        {"pred": "City\nCountry", "answers": ["City"], "all_classes": classes, "length": 100},
        {"pred": "City, Country", "answers": ["City"], "all_classes": classes, "length": 200},
        {"pred": "Abbreviation", "answers": ["Country"], "all_classes": classes, "length": 300},
    ]
    count = [
        {"pred": "7 unique out of 12", "answers": ["7"], "all_classes": None, "length": 8000},
        {"pred": "3", "answers": ["3"], "all_classes": None, "length": 8001},
    ]
    _write(tmp_path / "hotpotqa.jsonl", hot)
    _write(tmp_path / "trec.jsonl", trec)
    _write(tmp_path / "passage_count.jsonl", count)
    (tmp_path / "notes.txt").write_text("ignored")
    per_sample = {
        "hotpotqa": [
            f1(["big", "red", "dog"], ["red", "dog"]),
            max(f1(["blue"], ["red"]), f1(["blue"], ["blue", "sky"])),
            0.0,
        ],
        "trec": [1.0, 0.5, 0.0],
        "passage_count": [0.5, 1.0],
    }
    lengths = {
        "hotpotqa": [1000, 5000, 9000],
        "trec": [100, 200, 300],
        "passage_count": [8000, 8001],
    }
    return per_sample, lengths


def test_score_longbench_cli_matches_independent_scores(tmp_path):
    per_sample, _ = _make_pred_dir(tmp_path)
    res = CliRunner().invoke(app, ["score-longbench", str(tmp_path)])
    assert res.exit_code == 0, res.output
    got = json.loads((tmp_path / "result.json").read_text())
    expected = {k: round(100 * sum(v) / len(v), 2) for k, v in per_sample.items()}
    assert got == expected
    assert got["trec"] == 50.0


def test_score_longbench_e_buckets(tmp_path):
    per_sample, lengths = _make_pred_dir(tmp_path)
    res = CliRunner().invoke(app, ["score-longbench", str(tmp_path), "--e"])
    assert res.exit_code == 0, res.output
    raw = (tmp_path / "result.json").read_text()
    got = json.loads(raw)
    for ds, scores in per_sample.items():
        buckets = {"0-4k": [], "4-8k": [], "8k+": []}
        for s, n in zip(scores, lengths[ds]):
            buckets["0-4k" if n < 4000 else "4-8k" if n < 8000 else "8k+"].append(s)
        for b, xs in buckets.items():
            if xs:
                assert got[ds][b] == round(100 * sum(xs) / len(xs), 2), (ds, b)
            else:  # upstream writes NaN for an empty bucket (np.mean of [])
                assert math.isnan(got[ds][b]), (ds, b)
    assert list(got["hotpotqa"]) == ["0-4k", "4-8k", "8k+"]
    assert "NaN" in raw


def test_length_bucket_edges():
    assert [lb.length_bucket(n) for n in (0, 3999, 4000, 7999, 8000)] == [
        "0-4k", "0-4k", "4-8k", "4-8k", "8k+",
    ]  # fmt: skip


def test_e_requires_lengths(tmp_path):
    _write(tmp_path / "hotpotqa.jsonl", [{"pred": "yes", "answers": ["yes"], "all_classes": None}])
    with pytest.raises(ValueError):
        lb.score_directory(tmp_path, longbench_e=True)
    assert lb.score_directory(tmp_path) == {"hotpotqa": 100.0}


def test_make_longbench_task_cli(tmp_path):
    data = tmp_path / "samsum.jsonl"
    rec = {"context": "c", "input": "i", "answers": ["a"], "dataset": "samsum"}
    data.write_text(json.dumps(rec))
    res = CliRunner().invoke(app, ["make-longbench-task", str(data), "--out-dir", str(tmp_path)])
    assert res.exit_code == 0, res.output
    text = (tmp_path / "vst_longbench_samsum.yaml").read_text()
    assert str(data) in text and '"max_gen_toks": 128' in text and '"until": ["\\n"]' in text
