"""The report's figures, drawn by matplotlib and inlined as SVG.

Why matplotlib SVG (and not Plotly or Vega-Lite): the page must work offline with everything
inline and stay under 3 MB. Plotly's JS bundle alone is over 3 MB; Vega-Lite needs vega,
vega-lite and vega-embed vendored and inlined. matplotlib draws each figure in tens of
milliseconds, and its SVG is plain DOM: every point, bar and line is an element that a browser
test can count. Interactivity is limited to the page's own few lines of JS (the table filter);
the figures are static (docs/report.md).

Every data mark gets a `gid` of the form ``<figure>-<kind>-<n>`` (kind: point, bar, line, stop,
threshold); matplotlib writes it as the id of the mark's SVG group, so marks are countable in the
DOM. Each figure function returns a `Plot` (inline SVG and the number of marks per kind it drew),
or None when the results lack its data.
"""
from __future__ import annotations

import io
import re
from dataclasses import dataclass, field

import numpy as np

COLORS = {"subject": "#d62728", "oracle": "#2ca02c"}
CYCLE = ["#1f77b4", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22", "#7f7f7f"]


@dataclass
class Entry:
    """One evaluated model in the report: its label, its role (subject, oracle or model) and results."""
    label: str
    role: str
    results: dict
    run: str = ""

    @property
    def per_sample(self) -> dict:
        return self.results.get("per_sample") or {}


@dataclass
class Plot:
    """A drawn figure: its name (the id prefix of its marks), inline SVG and marks per kind."""
    name: str
    svg: str
    marks: dict[str, int] = field(default_factory=dict)


def colors_for(entries: list[Entry]) -> dict[str, str]:
    out, i = {}, 0
    for e in entries:
        if e.role in COLORS:
            out[e.label] = COLORS[e.role]
        else:
            out[e.label] = CYCLE[i % len(CYCLE)]
            i += 1
    return out


_XML_PROLOGUE = re.compile(r"<\?xml[^>]*\?>\s*|<!DOCTYPE[^>]*>\s*", re.S)
_XMLNS = re.compile(r'\s+xmlns(:\w+)?="[^"]*"')


def inline_svg(fig, name: str) -> str:
    """The figure as an SVG element for inlining in HTML.

    The XML prologue, DOCTYPE and namespace declarations are dropped: the HTML parser puts an inline
    <svg> in the SVG namespace by itself, and they are the only URLs matplotlib writes (namespace
    names, never fetched, but the page promises to hold no URL at all). The metadata block
    (creator URL, date) is turned off. Text stays text (svg.fonttype none) in the browser's own
    sans-serif: no embedded font, a smaller file. The hash salt makes ids unique per figure."""
    import matplotlib as mpl

    buf = io.StringIO()
    with mpl.rc_context({"svg.fonttype": "none", "svg.hashsalt": name}):
        fig.savefig(buf, format="svg", metadata={"Date": None, "Creator": None, "Format": None, "Type": None})
    svg = _XMLNS.sub("", _XML_PROLOGUE.sub("", buf.getvalue()))
    # width/height in pt would fix the size; the page scales figures to its column instead
    svg = re.sub(r'<svg width="[^"]*" height="[^"]*"', '<svg class="plot" role="img"', svg, count=1)
    if "://" in svg:
        raise RuntimeError(f"figure {name}: the SVG still holds a URL")
    return svg


def _figure(w: float = 7.0, h: float = 3.6, bottom: float = 0.14):
    """A figure with fixed margins: a layout engine (constrained, tight) measures every text first,
    about 40% of the drawing time; these figures have one size and known labels."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(w, h))
    fig.subplots_adjust(left=0.8 / w, right=1 - 0.15 / w, bottom=bottom, top=0.95, wspace=0.25)
    return fig


def _done(fig, name: str, marks: dict[str, int]) -> Plot:
    return Plot(name, inline_svg(fig, name), {k: v for k, v in marks.items() if v})


def pareto(entries: list[Entry]) -> Plot | None:
    """Forget quality (log) against model utility, one point per model; the front of models no other
    beats on both axes as a line. Subject and oracle get their own markers."""
    pts = [(e, e.results.get("model_utility"), e.results.get("forget_quality")) for e in entries]
    pts = [(e, x, y) for e, x, y in pts if x is not None and y is not None and y > 0]
    if not pts:
        return None
    fig = _figure()
    ax = fig.add_subplot()
    col = colors_for(entries)
    marker = {"subject": "s", "oracle": "*"}
    for i, (e, x, y) in enumerate(pts):
        sc = ax.scatter([x], [y], s=160 if e.role == "oracle" else 70, marker=marker.get(e.role, "o"),
                        color=col[e.label], edgecolor="black", linewidth=0.6, zorder=3, label=e.label)
        sc.set_gid(f"pareto-point-{i}")
        ax.annotate(e.label, (x, y), textcoords="offset points", xytext=(7, 5), fontsize=8)
    front = sorted((x, y) for _, x, y in pts if not any(x2 >= x and y2 >= y and (x2, y2) != (x, y)
                                                         for _, x2, y2 in pts))
    n_lines = 0
    if len(front) > 1:
        (line,) = ax.plot([p[0] for p in front], [p[1] for p in front], color="#999", linestyle="--",
                          linewidth=1, zorder=1, label="Pareto front")
        line.set_gid("pareto-line-0")
        n_lines = 1
    ax.set_yscale("log")
    ax.margins(x=0.12, y=0.12)  # room for the labels of the outermost points
    ax.set_xlabel("model utility (higher = better)")
    ax.set_ylabel("forget quality, KS p vs oracle (log)")
    ax.axhline(0.05, color="#bbb", linewidth=0.8, linestyle=":")
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    return _done(fig, "pareto", {"point": len(pts), "line": n_lines})


def _ecdf(ax, values, gid: str, **style) -> None:
    r = np.sort(np.asarray([v for v in values if v is not None], float))
    (line,) = ax.step(np.r_[r[0], r], np.r_[0, np.arange(1, len(r) + 1) / len(r)], where="post", **style)
    line.set_gid(gid)


def truth_ratios(entries: list[Entry]) -> Plot | None:
    """Empirical CDFs of the forget truth ratios: forget quality is the KS test between a model's
    curve and the oracle's, whose statistic is the largest vertical gap between them. Each evaluated
    model (not the subject or the oracle) with twins also gets its twins' curve, dashed: forget
    quality against them is the KS test between its two curves, no oracle needed."""
    have = [e for e in entries if e.per_sample.get("forget_truth_ratios")]
    if not have:
        return None
    fig = _figure()
    ax = fig.add_subplot()
    col = colors_for(entries)
    twins = 0
    for i, e in enumerate(have):
        fq = e.results.get("forget_quality")
        label = e.label + ("" if e.role == "oracle" or fq is None else f" (KS p = {fq:.2g})")
        _ecdf(ax, e.per_sample["forget_truth_ratios"], f"truth-line-{i}", color=col[e.label], label=label,
              linewidth=2.2 if e.role == "oracle" else 1.5)
        if e.role == "model" and e.per_sample.get("twin_truth_ratios"):
            ft = e.results.get("forget_quality_twins")
            _ecdf(ax, e.per_sample["twin_truth_ratios"], f"truth-line-twins-{i}", color=col[e.label], linestyle="--",
                  linewidth=1.0, label=f"{e.label}: its twins" + ("" if ft is None else f" (KS p = {ft:.2g})"))
            twins += 1
    ax.set_xscale("log")
    ax.axvline(1.0, color="#bbb", linewidth=0.8, linestyle=":")
    ax.set_xlabel("truth ratio R = p(paraphrased) / p(perturbed) per forget question (log)")
    ax.set_ylabel("share of forget questions ≤ R")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    return _done(fig, "truth", {"line": len(have) + twins})


def _strip(ax, x0: float, values, color, gid: str, rng, marker="o", facecolor=None):
    v = np.asarray([x for x in values if x is not None], float)
    sc = ax.scatter(x0 + rng.uniform(-0.15, 0.15, len(v)), v, s=10, marker=marker, color=color,
                    facecolors=facecolor or color, alpha=0.7, linewidth=0.6)
    sc.set_gid(gid)
    return len(v)


def mia(entries: list[Entry]) -> Plot | None:
    """Per-sample Min-K% member-ness scores, forget (members) beside holdout (non-members), per model."""
    have = [e for e in entries if (e.per_sample.get("mia_scores") or {}).get("members")]
    if not have:
        return None
    fig = _figure(max(5.0, 1.6 * len(have) + 2), 3.6, bottom=0.18)
    ax = fig.add_subplot()
    rng = np.random.default_rng(0)
    n, ticks, labels = 0, [], []
    for i, e in enumerate(have):
        s = e.per_sample["mia_scores"]
        n += _strip(ax, 3 * i, s["members"], "#d62728", f"mia-point-{i}-forget", rng)
        n += _strip(ax, 3 * i + 1, s.get("nonmembers") or [], "#1f77b4", f"mia-point-{i}-holdout", rng)
        auc = (e.per_sample.get("mink_auc") or {}).get(s.get("source"))
        ticks.append(3 * i + 0.5)
        labels.append(e.label + (f"\nAUC {auc:.2f}" if auc is not None else ""))
    ax.set_xticks(ticks, labels, fontsize=8)
    src = have[0].per_sample["mia_scores"]
    ax.set_ylabel(f"Min-K% score (k = {src.get('k', 0.2)}), higher = member")
    ax.scatter([], [], color="#d62728", s=10, label="forget (members)")
    ax.scatter([], [], color="#1f77b4", s=10, label="holdout (non-members)")
    ax.legend(fontsize=8, loc="lower left", ncols=2, framealpha=0.9)
    ax.grid(True, axis="y", alpha=0.3)
    return _done(fig, "mia", {"point": n})


def attacks(groups: list[tuple[str, list[tuple[str, float | None]]]]) -> Plot | None:
    """Grouped bars: per attack, each model's recovery and the oracle's under the same attack.
    `groups` is [(attack, [(bar label, recovery or None)])]; a None draws no bar."""
    if not groups:
        return None
    fig = _figure()
    ax = fig.add_subplot()
    labels = list(dict.fromkeys(lbl for _, bars in groups for lbl, _ in bars))
    col = {lbl: (COLORS["oracle"] if lbl.startswith("oracle") else CYCLE[i % len(CYCLE)])
           for i, lbl in enumerate(labels)}
    width = 0.8 / max(1, len(labels))
    n = 0
    for gi, (_, bars) in enumerate(groups):
        for lbl, v in bars:
            x = gi + (labels.index(lbl) - (len(labels) - 1) / 2) * width
            if v is None:
                ax.text(x, 0.01, "n/a", ha="center", fontsize=7, color="#777")
                continue
            bars_ = ax.bar([x], [v], width=width * 0.95, color=col[lbl])
            bars_.patches[0].set_gid(f"attack-bar-{n}")
            ax.bar_label(bars_, fmt="{:.3g}", fontsize=8)
            n += 1
    for lbl in labels:
        ax.bar([0], [0], color=col[lbl], label=lbl)  # legend entries only (zero height, no gid)
    ax.set_xticks(range(len(groups)), [g for g, _ in groups])
    ax.axhline(0, color="black", linewidth=0.8)
    ax.set_ylabel("recovery (0 = nothing back, 1 = all)")
    ax.grid(True, axis="y", alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    return _done(fig, "attack", {"bar": n})


NOT_CURVES = {"step", "lr", "epoch", "check", "stopped", "target"}


def _stop_of(log: list[dict]) -> tuple[int | None, str]:
    for rec in log:
        if "stopped" in rec:
            s = rec["stopped"]
            if isinstance(s, dict):  # calibrate.StopInfo: where it stopped, why, which step it kept
                at = s.get("stopped_at", s.get("step", rec.get("step")))
                kept = s.get("kept_step")
                why = str(s.get("reason", "")) + (f", kept step {kept}" if kept is not None and kept != at else "")
                return at, why
            return rec.get("step"), str(s)
    return None, ""


def _checks(log: list[dict]) -> dict[str, list[tuple[float, float]]]:
    """The calibrated statistic at check steps: {series: [(step, value)]}. A calibration check
    (`calibrate.Check`) gives the AUC against the reference, the documents' AUC when there is one,
    and the utility; another dict-valued check gives one series per numeric field."""
    out: dict[str, list] = {}
    for rec in log:
        c = rec.get("check")
        step = c.get("step", rec.get("step")) if isinstance(c, dict) else rec.get("step")
        if c is None or step is None or "stopped" in rec:
            continue
        if isinstance(c, dict) and "auc" in c:
            c = {"AUC forget vs reference (target 0.5)": c["auc"], "AUC documents vs holdout": c.get("docs_auc"),
                 "utility (x start)": c.get("utility")}
        items = c.items() if isinstance(c, dict) else [("statistic", c)]
        for k, v in items:
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                out.setdefault(k, []).append((step, v))
    return out


def training(logs: list[tuple[str, list[dict]]]) -> Plot | None:
    """Training curves per run: every numeric loss field of the step records, and (when the log has
    calibration checks) the target statistic, with a vertical line where the run stopped."""
    logs = [(name, log) for name, log in logs if log]
    if not logs:
        return None
    has_checks = any(_checks(log) for _, log in logs)
    fig = _figure(9.0 if has_checks else 7.0, 3.6)
    axes = fig.subplots(1, 2) if has_checks else [fig.add_subplot()]
    n_line = n_stop = 0
    styles = ["-", "--", ":", "-."]
    for ri, (name, log) in enumerate(logs):
        steps_recs = [r for r in log if "step" in r and "check" not in r and "stopped" not in r]
        keys = [k for k in dict.fromkeys(k for r in steps_recs for k in r)
                if k not in NOT_CURVES and all(isinstance(r.get(k), (int, float)) or r.get(k) is None
                                               for r in steps_recs)]
        for ki, k in enumerate(keys):
            pts = [(r["step"], r[k]) for r in steps_recs if r.get(k) is not None]
            prefix = f"{name}: " if len(logs) > 1 else ""
            (line,) = axes[0].plot([p[0] for p in pts], [p[1] for p in pts], linestyle=styles[ri % len(styles)],
                                   color=CYCLE[ki % len(CYCLE)], label=prefix + k, linewidth=1.3)
            line.set_gid(f"train-line-{n_line}")
            n_line += 1
        if has_checks:
            for ci, (k, pts) in enumerate(_checks(log).items()):
                (line,) = axes[1].plot([p[0] for p in pts], [p[1] for p in pts], marker="o", markersize=3,
                                       linestyle=styles[ri % len(styles)], color=CYCLE[(ci + 3) % len(CYCLE)],
                                       label=(f"{name}: " if len(logs) > 1 else "") + k)
                line.set_gid(f"train-line-{n_line}")
                n_line += 1
            targets = [r["target"] for r in log if isinstance(r.get("target"), (int, float))]
            tols = [r["check"]["tolerance"] for r in log if isinstance(r.get("check"), dict) and "tolerance" in r["check"]]
            if tols:  # the calibration target: AUC 0.5 within its tolerance
                axes[1].axhspan(0.5 - tols[-1], 0.5 + tols[-1], color="#2ca02c", alpha=0.15, label="target 0.5 ± tol.")
            elif targets:
                axes[1].axhline(targets[-1], color="#2ca02c", linestyle="--", linewidth=1, label="target")
        stop_step, reason = _stop_of(log)
        if stop_step is not None:
            for ax in axes:
                ln = ax.axvline(stop_step, color="black", linestyle=":", linewidth=1.2,
                                label=f"stopped at step {stop_step}" + (f": {reason}" if reason else "")
                                if ax is axes[0] else None)
                ln.set_gid(f"train-stop-{n_stop}")
                n_stop += 1
    axes[0].set_xlabel("step")
    axes[0].set_ylabel("loss")
    axes[0].grid(True, alpha=0.3)
    axes[0].legend(fontsize=7, loc="best")
    if has_checks:
        axes[1].set_xlabel("step")
        axes[1].set_ylabel("calibrated statistic at checks")
        axes[1].grid(True, alpha=0.3)
        axes[1].legend(fontsize=7, loc="best")
    return _done(fig, "train", {"line": n_line, "stop": n_stop})


def guard(scores: dict) -> Plot | None:
    """Detection scores of forget, retain and neighbour prompts against the calibrated threshold;
    filled = the guard acts on the prompt (by a name or above the threshold), hollow = it lets it by."""
    groups = {k: v for k, v in (scores.get("groups") or {}).items() if v.get("score")}
    if not groups:
        return None
    fig = _figure(bottom=0.18)
    ax = fig.add_subplot()
    rng = np.random.default_rng(0)
    n = 0
    for i, (g, d) in enumerate(groups.items()):
        sc = np.asarray(d["score"], float)
        hit = np.asarray(d.get("hit") or [False] * len(sc), bool)
        color = CYCLE[i % len(CYCLE)]
        for mask, kind, face in ((hit, "hit", color), (~hit, "pass", "none")):
            if mask.any():
                n += _strip(ax, i, sc[mask], color, f"guard-point-{g}-{kind}", rng, facecolor=face)
    thr = scores.get("threshold")
    marks = {"point": n}
    if thr is not None:
        ln = ax.axhline(thr, color="black", linestyle="--", linewidth=1, label=f"threshold {thr:.3f}")
        ln.set_gid("guard-threshold-0")
        marks["threshold"] = 1
    ax.set_xticks(range(len(groups)),
                  [f"{g}\n{int(np.sum(d.get('hit') or []))}/{len(d['score'])} acted on" for g, d in groups.items()])
    ax.set_ylabel("detection score (max of name, embedding)")
    ax.grid(True, axis="y", alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    return _done(fig, "guard", marks)
