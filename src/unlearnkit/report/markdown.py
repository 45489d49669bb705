"""A short Markdown report: headline metrics per model, the verdict, and where each number came from."""
from __future__ import annotations

from pathlib import Path

from .. import runinfo

# (results key, label, which way is good): the headline metrics, shared by every report format
ROWS = [
    ("forget_quality", "Forget quality (KS p vs oracle, higher = closer)", "higher: closer to the oracle"),
    ("forget_quality_twins", "Forget quality against twins (KS p, no oracle)", "higher: closer to never seen"),
    ("truth_gap_twins", "Truth-ratio gap against twins (mean log, paired, no oracle)", "near 0: no more than for a stranger"),
    ("model_utility", "Model utility (harmonic mean, higher = better)", "higher"),
    ("forget_rouge", "Forget ROUGE-L recall (lower = forgot)", "lower, down to the oracle's"),
    ("retain_rouge", "Retain ROUGE-L recall (higher = kept)", "higher"),
    ("paraphrase_forget_rouge", "Forget ROUGE on held-out phrasings", "lower, down to the oracle's"),
    ("forget_truth_ratio", "Forget truth ratio (1 = true and false equally likely)", "like the oracle's"),
    ("privleak", "PrivLeak vs oracle (0 = like oracle)", "near 0"),
    # MUSE's (a MUSE benchmark run had no row here: its table printed empty)
    ("verbmem_forget", "VerbMem on forget (ROUGE-L F1 of continuations, lower = forgot)", "lower, down to the oracle's"),
    ("knowmem_forget", "KnowMem on forget (ROUGE-L F1 of answers, lower = forgot)", "lower, down to the oracle's"),
    ("knowmem_retain", "KnowMem on retain (higher = kept)", "higher"),
]


def fmt(v) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:.3g}" if abs(v) < 1e-2 and v != 0 else f"{v:.3f}"
    return str(v)


def headline_table(models: dict[str, dict]) -> list[list[str]]:
    """Rows [label, value per model] for the metrics present in any model's results."""
    names = list(models)
    rows = []
    for key, label, _ in ROWS:
        if any(models[n].get(key) is not None for n in names):
            rows.append([label] + [fmt(models[n].get(key)) for n in names])
    # the membership attacks' AUCs, one row each (an evaluation of the mia suite alone printed no row)
    aucs = {n: models[n].get("mia_auc") if isinstance(models[n].get("mia_auc"), dict) else {} for n in names}
    for attack in sorted({a for d in aucs.values() for a in d}):
        source = next((models[n].get("mia_source") for n in names if attack in aucs[n]), None)
        rows.append([f"MIA AUC, {attack} ({source}: members vs holdout, 0.5 = chance)"]
                    + [fmt(aucs[n].get(attack)) for n in names])
    return rows


def verdict_rows(verdict: dict) -> list[tuple[str, str, str]]:
    """(aspect, PASS | FAIL | CANNOT DECIDE, why) for each aspect of an evaluation's verdict."""
    return [(aspect, v.get("status", "pass" if v.get("pass") else "cannot decide" if v.get("pass") is None
                           else "fail").upper(), v.get("why", ""))
            for aspect, v in verdict.items() if isinstance(v, dict)]


def write_report(metrics: dict, path: str | Path, source: str = "`metrics.json` beside this file",
                 rerun: str | None = "unlearn demo") -> Path:
    """The Markdown report of `metrics` at `path`; its last line names where the numbers come from
    (`source`) and the command that makes them again (`rerun`, where known)."""
    models = metrics["models"]
    names = list(models)
    lines = ["# unlearnkit report", ""]
    cfg = metrics.get("config", {})
    if cfg:  # what the run's config holds ("run directory `None`" where it named none)
        said = [f"Method `{cfg['method']}`" if cfg.get("method") else None,
                f"seed {cfg['seed']}" if cfg.get("seed") is not None else None,
                f"run directory `{cfg['out']}`" if cfg.get("out") else None]
        lines += [", ".join(x for x in said if x) + ".", ""] if any(said) else []
    lines += ["| metric | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    lines += ["| " + " | ".join(r) + " |" for r in headline_table(models)]
    for name in names:
        verdict = models[name].get("verdict")
        if not verdict:
            continue
        lines += ["", f"## Verdict: {name}", ""]
        lines += [f"- **{aspect}**: {mark} — {why}" for aspect, mark, why in verdict_rows(verdict)]
    if attacks := metrics.get("attacks"):
        lines += ["", "## Attacks on the unlearned model", "",
                  "Recovery: share of the subject-to-unlearned gap the attack closes (0 = nothing comes back); "
                  "the oracle under the same attack is the baseline of what the attack itself teaches.", "",
                  "| attack | strongest variant | recovery | oracle recovery | forget ROUGE before → after |",
                  "|---|---|---|---|---|"]
        lines += [f"| {k} | {a.get('recovery_variant') or '–'} | {fmt(a.get('recovery'))} | {fmt(a.get('oracle_recovery'))} "
                  f"| {fmt(a.get('plain_forget_rouge'))} → {fmt(a.get('attacked_forget_rouge'))} |" for k, a in attacks.items()]
    if "seconds" in metrics:
        lines += ["", "## Wall time (s)", ""] + [f"- {k}: {v:.1f}" for k, v in metrics["seconds"].items()]
    lines += ["", f"Numbers come from {source}" + (f"; rerun with `{rerun}`." if rerun else "."), ""]
    return runinfo.write_text(path, "\n".join(lines))
