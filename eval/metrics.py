"""Text-fidelity metrics: how close decoded text is to the text that was rendered.

Fox-style precision (DeepSeek-OCR's headline number) is 1 - normalised edit distance,
clipped at 0, averaged over pages (per page: `codec.text_metrics`, which the codec's
training uses too). The rest are standard: character error rate, corpus
BLEU and chrF (sacrebleu), ROUGE-L (rouge-score, with a tokenizer that keeps non-Latin
text), and the exact-page-match rate.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from codec.text_metrics import edit_distance, precision

# Words of letters/digits, and each CJK/kana/hangul character as its own token, so that
# ROUGE-L works on text without spaces (rouge-score's default drops non-ASCII outright).
_CJK = r"\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff"
_TOKEN = re.compile(rf"[{_CJK}]|[^\W{_CJK}]+", re.UNICODE)


class UnicodeTokenizer:
    """rouge-score tokenizer: lower-cased words, CJK characters one by one."""

    def tokenize(self, text: str) -> list[str]:
        return _TOKEN.findall(text.lower())


def rouge_l(preds: Sequence[str], refs: Sequence[str]) -> float:
    """Mean ROUGE-L F1 over pages."""
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(["rougeL"], tokenizer=UnicodeTokenizer())
    scores = [scorer.score(r, p)["rougeL"].fmeasure for p, r in zip(preds, refs)]
    return sum(scores) / max(len(scores), 1)


def text_metrics(preds: Sequence[str], refs: Sequence[str]) -> dict[str, float]:
    """All fidelity metrics for paired page texts (decoded, original)."""
    import sacrebleu

    if len(preds) != len(refs):
        raise ValueError(f"{len(preds)} predictions for {len(refs)} references")
    if not refs:
        raise ValueError("no pages to score")
    dists = [edit_distance(p, r) for p, r in zip(preds, refs)]
    n_ref = sum(len(r) for r in refs)
    return {
        "precision": sum(precision(p, r) for p, r in zip(preds, refs)) / len(refs),
        "cer": sum(dists) / max(n_ref, 1),
        "bleu": sacrebleu.corpus_bleu(list(preds), [list(refs)]).score,
        "chrf": sacrebleu.corpus_chrf(list(preds), [list(refs)]).score,
        "rouge_l": rouge_l(preds, refs),
        "exact_match": sum(p == r for p, r in zip(preds, refs)) / len(refs),
        "pages": len(refs),
        "ref_chars": n_ref,
    }
