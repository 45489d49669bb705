"""Evaluation metrics: pure functions of per-sample scores (`unlearnkit.scoring.SampleScore`) and
greedy generations. `tofu` (Maini et al. 2024), `muse` (Shi et al. 2024), `mia` (membership
inference attacks and their AUC), `text` (ROUGE-L, zlib). `unlearnkit.evaluate` runs them all on a
model and a world."""
from . import mia, muse, text, tofu
from .mia import attack_aucs, auc, loss_score, min_k_plus_plus_score, min_k_score, reference_score, zlib_score
from .muse import PRIVLEAK_K, knowmem, privleak, verbmem
from .text import rouge_l, rouge_l_f1, rouge_l_recall, zlib_length
from .tofu import (
    answer_probability,
    exact_memorisation,
    extraction_strength,
    extraction_strength_by_search,
    forget_quality,
    harmonic_mean,
    model_utility,
    normalised_probability,
    rouge_recall_mean,
    truth_ratio,
    truth_ratio_score,
)

__all__ = [
    "mia", "muse", "text", "tofu",
    "answer_probability", "normalised_probability", "truth_ratio", "truth_ratio_score", "forget_quality",
    "harmonic_mean", "model_utility", "rouge_recall_mean", "exact_memorisation", "extraction_strength",
    "extraction_strength_by_search", "verbmem", "knowmem", "privleak", "PRIVLEAK_K", "auc", "attack_aucs", "loss_score",
    "zlib_score", "min_k_score", "min_k_plus_plus_score", "reference_score", "rouge_l", "rouge_l_f1",
    "rouge_l_recall", "zlib_length",
]
