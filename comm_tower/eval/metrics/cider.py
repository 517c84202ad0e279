"""CIDEr-D (the "CIDEr" of coco-caption) for image captioning and region captioning (REG), without Java.

Definition (Vedantam et al. 2015, CIDEr-D variant): for n = 1..4, captions become tf-idf vectors over their
n-grams (tf = raw count; idf = log(#images) - log(max(1, df)), df = number of images whose references
contain the n-gram). For one reference, the n-gram similarity is sum(min(h, r) * r) / (|h| |r|), multiplied
by the length penalty exp(-(len_h - len_r)^2 / (2 * 6^2)). An image scores 10 x the mean over n and over its
references; the corpus score is the mean over images. idf comes from the references of the scored set, as
in coco-caption. Captions are tokenised first (see `caption_tokenize.py`) unless `tokenize=False`.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping, Sequence

from comm_tower.eval.metrics.base import METRICS, Sample, Scores, get_field, prediction_text, require_samples
from comm_tower.eval.metrics.caption_tokenize import tokenize_caption

NGram = tuple[str, ...]


def ngram_counts(caption: str, n: int = 4) -> Counter[NGram]:
    """Counts of all 1..n-grams of a space-tokenised caption."""
    words = caption.split()
    return Counter(tuple(words[i : i + k]) for k in range(1, n + 1) for i in range(len(words) - k + 1))


def _tfidf(counts: Counter[NGram], df: Mapping[NGram, float], log_n_images: float, n: int):
    vecs: list[dict[NGram, float]] = [{} for _ in range(n)]
    for gram, tf in counts.items():
        vecs[len(gram) - 1][gram] = tf * (log_n_images - math.log(max(1.0, df.get(gram, 0.0))))
    norms = [math.sqrt(sum(v * v for v in vec.values())) for vec in vecs]
    return vecs, norms


def cider_d(
    hypotheses: Sequence[str], references: Sequence[Sequence[str]], n: int = 4, sigma: float = 6.0
) -> tuple[float, list[float]]:
    """Corpus CIDEr-D and per-image scores for pre-tokenised captions (one hypothesis per image)."""
    if len(hypotheses) != len(references):
        raise ValueError(f"cider: {len(hypotheses)} hypotheses but {len(references)} reference sets")
    ref_counts = [[ngram_counts(r, n) for r in refs] for refs in references]
    for i, refs in enumerate(ref_counts):
        if not refs:
            raise ValueError(f"cider: image {i} has no reference captions")
    df: Counter[NGram] = Counter()
    for refs in ref_counts:
        df.update({g for counts in refs for g in counts})
    log_n = math.log(float(len(references)))
    per_image = []
    for hyp, refs in zip(hypotheses, ref_counts):
        h_vec, h_norm = _tfidf(ngram_counts(hyp, n), df, log_n, n)
        h_len = len(hyp.split())
        total = 0.0
        for counts in refs:
            r_vec, r_norm = _tfidf(counts, df, log_n, n)
            r_len = sum(c for g, c in counts.items() if len(g) == 1)
            penalty = math.exp(-((h_len - r_len) ** 2) / (2 * sigma**2))
            for k in range(n):
                dot = sum(min(v, r_vec[k].get(g, 0.0)) * r_vec[k].get(g, 0.0) for g, v in h_vec[k].items())
                if h_norm[k] and r_norm[k]:
                    dot /= h_norm[k] * r_norm[k]
                total += dot * penalty
        per_image.append(10.0 * total / (n * len(refs)))
    return sum(per_image) / len(per_image), per_image


def _references(sample: Sample, index: int, metric: str) -> list[str]:
    raw = get_field(sample, ("references", "captions", "answers"), index, metric)
    if isinstance(raw, str):
        raw = [raw]
    if not isinstance(raw, (list, tuple)) or not raw:
        raise ValueError(f"{metric}: sample {index} 'references' must be a non-empty list of captions")
    return [str(r) for r in raw]


def _cider_metric(samples: Sequence[Sample], metric: str, tokenize: bool) -> Scores:
    require_samples(samples, metric)
    prep = tokenize_caption if tokenize else (lambda s: s)
    hyps = [prep(prediction_text(s, i, metric)) for i, s in enumerate(samples)]
    refs = [[prep(r) for r in _references(s, i, metric)] for i, s in enumerate(samples)]
    score, _ = cider_d(hyps, refs)
    return {"cider": 100.0 * score, "count": float(len(samples))}


@METRICS.register("caption")
def caption_scores(samples: Sequence[Sample], tokenize: bool = True) -> Scores:
    """CIDEr-D (x100, as papers report it) of image captions."""
    return _cider_metric(samples, "caption", tokenize)


@METRICS.register("reg")
def reg_scores(samples: Sequence[Sample], tokenize: bool = True) -> Scores:
    """CIDEr-D (x100) of region descriptions (referring expression generation)."""
    return _cider_metric(samples, "reg", tokenize)
