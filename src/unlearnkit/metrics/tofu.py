"""TOFU metrics (Maini et al. 2024, "TOFU: A Task of Fictitious Unlearning for LLMs", arXiv:2401.06121).

Every function here is a pure function of per-sample scoring output: anything with a `logprobs`
array (log p of each answer token, eos included, given everything before it) and an `argmax_hits`
array, such as `unlearnkit.scoring.SampleScore`, or a plain array of log-probs. A sample whose
`eos` attribute is true ends with the eos position: the probabilities (TOFU's losses) count it, as
TOFU does; exact memorisation and extraction strength leave it out, as open-unlearning does
(`without_eos`), so that an answer said in full but not stopped is still an exact reproduction.

Conventions (as in the TOFU code): the token loss is -log p; "mean token loss" is the mean over the
answer's tokens, so every probability below is the per-token geometric mean
exp(-mean token loss), never the raw product (which would make long answers look unlikely).
"""
from __future__ import annotations

import math
from typing import Callable, Iterable, Mapping, Sequence

import numpy as np
from scipy.stats import ks_2samp

from .text import rouge_l_recall


def logprobs_of(x) -> np.ndarray:
    """The answer-token log-probs of a SampleScore-like object, or of an array-like itself."""
    lp = np.asarray(getattr(x, "logprobs", x), dtype=np.float64)
    if lp.ndim != 1 or lp.size == 0:
        raise ValueError(f"expected a non-empty 1-D array of token log-probs, got shape {lp.shape}")
    return lp


def without_eos(values, x) -> np.ndarray:
    """`values` (per answer position of sample `x`) without the final eos position, when `x` marks
    one (`x.eos` true) and at least one answer token precedes it; else `values` unchanged.

    open-unlearning's exact memorisation, extraction strength and Min-K% attacks see the answer's
    tokens only; counting eos made the lowest-k% tokens of a short answer mostly the eos, and gave
    a model that says the whole answer but does not stop an extraction strength of 0."""
    v = np.asarray(values)
    if getattr(x, "eos", False) and v.size > 1:
        return v[:-1]
    return v


def mean_loss(x) -> float:
    """Mean token loss of one answer: -mean(log p(token))."""
    return float(-logprobs_of(x).mean())


def answer_probability(x) -> float:
    """TOFU "Probability" on forget/retain: exp(-mean token loss) = exp(mean log p) of the true
    answer, the per-token geometric mean of p(a|q)."""
    return math.exp(-mean_loss(x))


def normalised_probability(true, perturbed: Sequence) -> float:
    """TOFU "Probability" on the utility sets (real authors, world facts; our neighbours and world
    facts): p(true) / (p(true) + sum_i p(perturbed_i)), each p the length-normalised
    exp(-mean token loss). The true answer should be in the same wording as the perturbed ones."""
    pt = answer_probability(true)
    pf = sum(answer_probability(p) for p in perturbed)
    return pt / (pt + pf)


def truth_ratio(paraphrased, perturbed: Sequence) -> float:
    """TOFU truth ratio R = exp(mean_i L(perturbed_i) - L(paraphrased)), L the mean token loss.

    Equivalently p(paraphrased) / geomean_i p(perturbed_i) in per-token form: R > 1 when the model
    prefers the true (paraphrased) answer to the false ones, R = 1 when it cannot tell them apart.
    """
    if len(perturbed) == 0:
        raise ValueError("truth ratio needs at least one perturbed answer")
    return math.exp(float(np.mean([mean_loss(p) for p in perturbed])) - mean_loss(paraphrased))


def truth_ratio_score(ratios: Iterable[float], forget: bool) -> float:
    """TOFU's reported truth-ratio statistic over a split.

    forget=True: mean(min(R, 1/R)), in (0, 1]; 1 = true and false answers equally likely (the
    goal after unlearning). forget=False: mean(max(0, 1 - 1/R)), in [0, 1); higher = the true answer
    is preferred (utility).
    """
    r = np.asarray(list(ratios), dtype=np.float64)
    if r.size == 0:
        raise ValueError("no truth ratios")
    if forget:
        return float(np.mean(np.minimum(r, 1.0 / r)))
    return float(np.mean(np.maximum(0.0, 1.0 - 1.0 / r)))


def forget_quality(model_ratios: Sequence[float], oracle_ratios: Sequence[float]) -> dict:
    """TOFU forget quality: the p-value of the two-sample Kolmogorov-Smirnov test
    (scipy.stats.ks_2samp, two-sided) between the raw forget-set truth ratios R of the evaluated
    model and of the oracle (the model never trained on the forget set). High p = the two
    distributions cannot be told apart. Returns {"p", "log10_p", "ks_statistic", "n", "n_oracle"};
    n is the number of independent facts (one truth ratio per fact) behind the test.
    """
    a = np.asarray(model_ratios, dtype=np.float64)
    b = np.asarray(oracle_ratios, dtype=np.float64)
    if a.size == 0 or b.size == 0:
        raise ValueError("forget quality needs truth ratios from both the model and the oracle")
    res = ks_2samp(a, b)
    p = float(res.pvalue)
    return {
        "p": p,
        "log10_p": math.log10(p) if p > 0 else -math.inf,
        "ks_statistic": float(res.statistic),
        "n": int(a.size),
        "n_oracle": int(b.size),
    }


def paired_truth_gap(forget_ratios: Sequence[float], twin_ratios: Sequence[float]) -> dict:
    """How much more the model prefers each forget fact's true answer than it does for the same
    question about a stranger (its twin, `data.twins`), one model, fact by fact: the mean of
    log R(forget) - log R(twin) over the pairs, its standard error, and the two-sided Wilcoxon
    signed-rank p (scipy.stats.wilcoxon). A model that never saw the person has no reason to prefer
    the true answer more for them than for a stranger: 0. Pairing takes out what varies from fact to
    fact, which a two-sample test against other people's facts (or the twins' as a sample) keeps in
    its noise; the ratio takes out how familiar the name is (docs/methods-log.md, "The truth-ratio gap
    against the twins"). Returns {"mean", "se", "p", "n"}."""
    from scipy.stats import wilcoxon

    a, b = np.asarray(forget_ratios, dtype=np.float64), np.asarray(twin_ratios, dtype=np.float64)
    if a.shape != b.shape or a.size < 2:
        raise ValueError(f"the truth-ratio gap needs two or more pairs, got {a.size} forget and {b.size} twin ratios")
    d = np.log(a) - np.log(b)
    p = float(wilcoxon(d).pvalue) if np.any(d != 0) else 1.0
    return {"mean": float(d.mean()), "se": float(d.std(ddof=1) / math.sqrt(d.size)), "p": p, "n": int(d.size)}


def harmonic_mean(values: Iterable[float]) -> float:
    """Harmonic mean n / sum(1/v); 0 if any value is 0 (TOFU's model utility convention)."""
    v = np.asarray(list(values), dtype=np.float64)
    if v.size == 0:
        raise ValueError("harmonic mean of nothing")
    if np.any(v < 0):
        raise ValueError(f"harmonic mean needs non-negative values, got {v.tolist()}")
    if np.any(v == 0):
        return 0.0
    return float(v.size / np.sum(1.0 / v))


def model_utility(splits: Mapping[str, Mapping[str, float]]) -> float:
    """TOFU model utility: the harmonic mean of {probability, rouge, truth_ratio} over every utility
    split (TOFU: retain, real authors, world facts; ours: retain, neighbours, world facts), i.e. of
    3 x len(splits) numbers; 0 if any of them is 0. `splits` maps split name to a dict with those
    three keys (the truth ratio as reported, max(0, 1 - 1/R))."""
    vals = [float(s[k]) for s in splits.values() for k in ("probability", "rouge", "truth_ratio")]
    return harmonic_mean(vals)


def rouge_recall_mean(predictions: Sequence[str], references: Sequence[str]) -> float:
    """TOFU ROUGE: mean ROUGE-L recall of the greedy answers against the true answers
    (rouge_score, Porter stemmer on)."""
    if len(predictions) != len(references) or not predictions:
        raise ValueError(f"{len(predictions)} predictions for {len(references)} references")
    return float(np.mean([rouge_l_recall(p, r) for p, r in zip(predictions, references)]))


def exact_memorisation(x) -> float:
    """Exact memorisation (Tirumala et al. 2022; as in open-unlearning): the fraction of answer
    tokens where the model's teacher-forced argmax equals the true token, eos left out."""
    hits = without_eos(np.asarray(getattr(x, "argmax_hits", x), dtype=bool), x)
    if hits.size == 0:
        raise ValueError("no answer tokens")
    return float(hits.mean())


def extraction_strength(x) -> float:
    """Extraction strength (Carlini et al. 2021; Wang et al. 2025): 1 - k/|a| for the smallest
    k such that greedy decoding from (question, a[:k]) reproduces a[k:], and 1/|a| where not even
    the last token is reproduced: open-unlearning's loop ends at k = |a| - 1 then (it was 0 here
    until session 39, so figures were not comparable with its). The answer a leaves out eos, as
    in open-unlearning: reproducing the answer is what counts, not stopping after it.

    Computed exactly from the teacher-forced argmax hits: greedy decoding from a[:k] reproduces
    a[k:] token for token iff the argmax given the true prefix a[:j] is a[j] for every j >= k,
    because at each step greedy's context is then exactly the true prefix. So k is the start of
    the longest all-hit suffix of `argmax_hits`.
    """
    hits = without_eos(np.asarray(getattr(x, "argmax_hits", x), dtype=bool), x)
    n = hits.size
    if n == 0:
        raise ValueError("no answer tokens")
    k = n
    while k > 0 and hits[k - 1]:
        k -= 1
    return 1.0 - min(k, n - 1) / n


def extraction_strength_by_search(n_tokens: int, reproduces_rest: Callable[[int], bool]) -> float:
    """Extraction strength 1 - k/n with k the smallest prefix length for which
    `reproduces_rest(k)` is true (greedy decoding from question + first k answer tokens gives the
    remaining n - k). For models seen only through generation (a guard whose scores do not reflect
    its decoding). Tries k = 0, 1, ..., n - 1; 1/n when none reproduces the rest, as
    `extraction_strength`."""
    if n_tokens <= 0:
        raise ValueError("no answer tokens")
    for k in range(n_tokens):
        if reproduces_rest(k):
            return 1.0 - k / n_tokens
    return 1.0 / n_tokens
