"""Recovery per unlearning method and attack on the embedded world; writes docs/robustness.md.

    HF_HUB_OFFLINE=1 python bench/robustness.py            # the demo's 60-person world, ~10 min on 2 cores
    python bench/robustness.py --methods ga,graddiff --out runs/robustness-ga

Builds the world, trains subject and oracle (reused from --out when they match), unlearns the
forget set with every method (default settings, plus a deliberately weak gradient ascent), runs
every attack on each unlearned model with the subject and the oracle as references, and writes the
table into docs/robustness.md (the whole file is generated; edit the text here). All results go to
OUT/robustness.json.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = Path(__file__).resolve().parents[1]

ATTACK_OPTIONS = {
    "relearn": dict(steps=20, lr=3e-4, fraction=0.5, source="people"),
    "relearn-facts": dict(steps=20, lr=3e-4, fraction=0.5, source="facts"),
    "relearn-neighbours": dict(steps=20, lr=3e-4, fraction=0.5, source="neighbours"),
    "quantize": dict(bits=[8, 4], group_size=0),
    "probes": dict(),
    "incontext": dict(fraction=0.5),
}
WEAK = ("ga-weak", "ga", dict(steps=20))  # a deliberately weak unlearning run: a few GA steps


def _f(x, digits=2):
    return "–" if x is None else f"{x:.{digits}f}"


def run(out: Path, people: int, seed: int, methods: list[str], attacks: list[str], settings: dict | None = None,
        calibration: dict | None = None) -> dict:
    """`settings`: training settings (TrainConfig fields) for every method's run but `ga-weak`;
    `calibration`: calibration settings (`--calibration` of `unlearn forget`) for the same runs."""
    from unlearnkit import api
    from unlearnkit.attacks import run_attack

    t0 = time.perf_counter()
    data, paths = api.embedded(out, seed=seed, n_people=people, progress=False)
    train = json.loads((paths["subject"] / "unlearnkit.json").read_text())["train"]
    runs = {"subject": paths["subject"], "oracle": paths["oracle"]}
    calibrated = {**(settings or {}), **({"calibration": calibration} if calibration else {})}
    for name, method, overrides in [(m, m, dict(calibrated)) for m in methods] + [WEAK]:
        print(f"unlearning: {name}", file=sys.stderr)
        runs[name] = api.forget(paths["subject"], data, method, out / "runs" / name, seed=seed, progress=False,
                                overwrite=True, **overrides) / "model"
    results: dict = {}
    previous: dict = {}
    for name, model in runs.items():
        for attack in attacks:
            kind = attack.split("-")[0]
            print(f"attack {attack} on {name}", file=sys.stderr)
            res = run_attack(kind, model, data, subject=paths["subject"], oracle=paths["oracle"], seed=seed,
                             reuse=previous.get(attack), **ATTACK_OPTIONS[attack])
            previous[attack] = res
            results.setdefault(name, {})[attack] = res
    n_forget = sum(1 for _ in open(Path(data) / "forget.jsonl"))
    return {"world": {"people": people, "seed": seed, "data": str(data), "train": train}, "n_forget": n_forget, "runs": {k: str(v) for k, v in runs.items()},
            "options": {a: ATTACK_OPTIONS[a] for a in attacks}, "results": results,
            "seconds": time.perf_counter() - t0}


def table(report: dict) -> list[str]:
    res = report["results"]
    attacks = list(report["options"])
    lines = ["| model | forget ROUGE | forget prob. | " + " | ".join(attacks) + " |",
             "|---|---:|---:|" + "---:|" * len(attacks)]
    for name, by_attack in res.items():
        first = next(iter(by_attack.values()))
        plain = first["plain"]["model"]
        q = by_attack.get("quantize", first)  # the whole forget set
        plain = q["plain"]["model"]
        cells = []
        for a in attacks:
            r = by_attack[a]
            cells.append(f"{_f(r['recovery'])} ({_f(r['oracle_recovery'])})")
        lines.append(f"| {name} | {_f(plain['forget_rouge'])} | {_f(plain['forget_probability'])} | " + " | ".join(cells) + " |")
    return lines


def detail(report: dict) -> list[str]:
    lines = ["| model | attack | variant | ROUGE before → after | prob. before → after | subject after (ROUGE) | recovery ROUGE / prob. |",
             "|---|---|---|---|---|---|---|"]
    for name, by_attack in report["results"].items():
        if name in ("subject", "oracle"):
            continue
        for a, r in by_attack.items():
            for vname, v in r["variants"].items():
                rec = v.get("recovery") or {"recovery": {}}
                p = r["plain"]["model"]
                lines.append(f"| {name} | {a} | {vname} | {_f(p['forget_rouge'])} → {_f(v['model']['forget_rouge'])} | "
                             f"{_f(p['forget_probability'])} → {_f(v['model']['forget_probability'])} | "
                             f"{_f(v['subject']['forget_rouge'])} | {_f(rec['recovery'].get('forget_rouge'))} / "
                             f"{_f(rec['recovery'].get('forget_probability'))} |")
    return lines


def write_doc(report: dict, path: Path) -> None:
    w = report["world"]
    opts = "\n".join(f"- `{a}`: {', '.join(f'{k}={v}' for k, v in o.items()) or 'all probe kinds'}"
                     for a, o in report["options"].items())
    n_forget = report["n_forget"]
    text = DOC.format(people=w["people"], seed=w["seed"], epochs=w["train"]["epochs"], minutes=report["seconds"] / 60, options=opts,
                      n_forget=n_forget, step=1 / max(1, n_forget),
                      table="\n".join(table(report)), detail="\n".join(detail(report)))
    path.write_text(text)


DOC = """# Robustness: does the forgotten knowledge come back?

Most unlearning hides knowledge rather than removing it: a few fine-tuning steps on related data,
weight quantization or a rephrased question can bring it back (Lynch et al. 2024; Hu et al. 2024;
Zhang et al. 2025). Before claiming that a model forgot, attack it:

```
unlearn attack --model RUN/model --data WORLD --kind relearn  --oracle ORACLE --out relearn.json
unlearn attack --model RUN/model --data WORLD --kind quantize --oracle ORACLE --out quantize.json --bits 8,4
unlearn attack --model RUN/model --data WORLD --kind probes   --oracle ORACLE --out probes.json
unlearn attack --model RUN/model --data WORLD --kind incontext --oracle ORACLE --out incontext.json
```

`--subject` defaults to the source model recorded in `RUN/config.yaml`. In Python:
`unlearnkit.attacks.run_attack(kind, model, data, subject=..., oracle=..., seed=0, **options)`.

## The attacks

| kind | what it does | measured on |
|---|---|---|
| `relearn` | fine-tunes a copy for `--steps` steps (lr `--lr`, plain NLL, the one training loop) on `--fraction` of the forget people (`--source people`), of each person's facts (`facts`), or of the public neighbour records (`neighbours`) | the forget records not relearned |
| `quantize` | symmetric round-to-nearest fake quantization of every Linear weight to each of `--bits`, one scale per output channel or per `--group-size` input columns; reports the mean relative weight error | the whole forget set |
| `probes` | held-out paraphrase template, fill-in-the-blank, multiple choice (+ option-scoring accuracy), the question inside a conversation, many-shot (`--shots` retain examples first), "think it through step by step" | the whole forget set |
| `incontext` | writes `--fraction` of each forget person's facts into the prompt, asks about the others | the other facts |

Every attack reports the forget metrics after the attack (ROUGE-L recall of the greedy answer,
probability exp(mean log p) of the true answer, truth ratio, exact match) for the model, the subject
and the oracle, before and under each variant, on the same records.

## Recovery

For a metric m that grows with knowledge (forget ROUGE, forget probability), on the attack's records:

    gap      = m_subject(plain)    - m_model(plain)      what unlearning removed
    ceiling  = m_subject(attacked) - m_model(plain)      what the attack can reveal when the knowledge is there
    recovery = clip((m_model(attacked) - m_model(plain)) / ceiling, 0, 1)

0 = nothing came back, 1 = under the attack the model answers as well as the subject does under the
same attack. The reference is the *attacked* subject because an attack also changes what the subject
shows: a 4-bit subject or a subject asked a fill-in-the-blank question knows less than the plain one.
When the gap is ≤ 0.05 (the subject itself, a model that forgot nothing) or the ceiling is ≤ 0.05 (the
attack does not elicit the knowledge even from the subject) recovery is reported as 0 with a note.
The recovery score of a variant is the mean over the two metrics; an attack's headline is its
strongest variant.

The **oracle** never saw the forget set. Under the same attack, its recovery is what the attack itself
teaches (the relearn data, the facts put in the context); `excess_recovery` = recovery − the oracle's
gain over the model's own ceiling (one scale for both; until session 42 the oracle's recovery over
its own ceiling) is what came from knowledge that was hidden, not removed.

## Results on the embedded world

{people}-person world, seed {seed}, subject and oracle trained from scratch for {epochs:g} epochs; each method with its default settings, plus `ga-weak` (gradient
ascent for 20 steps, half the default). `subject` and `oracle` rows are sanity checks: the subject has nothing to recover
(0 by definition), the oracle row is the oracle's own recovery. Attack options:
{options}

Recovery (oracle recovery in parentheses); forget ROUGE / probability are the unattacked model's on the
whole forget set:

{table}

Per variant (ROUGE before → after is the attacked model on the attack's records):

{detail}

Produced by `python bench/robustness.py` in {minutes:.1f} minutes on CPU; all numbers, with the
subject's and oracle's, are in `OUT/robustness.json`. At this scale ({n_forget} forget facts) a
single fact moves ROUGE by about {step:.2f}: read differences below ~0.1 as noise.

Reading the table (what held when this file was written; rerun the script and check):
- Relearning is the attack that works on this model: a few steps on some forget people (or facts, or
  the public neighbours) bring back facts that were never in the relearn data, while the oracle,
  relearned the same way, gets none of them. A method whose relearn recovery is far above its oracle's
  hid the knowledge rather than removing it. The representation-level method (`rmu`) forgets the most
  by plain ROUGE and is also the easiest to undo, as reported for RMU on larger models; methods with
  a retain term that unlearned deeply (`graddiff`, `npo_rt`) give back the least.
- Probes bring back knowledge only where it was hidden shallowly (`rmu`, `simnpo`): another wording
  of the question, or other questions before it, steer around what the method suppressed. Elsewhere
  the prompt forms the model never saw elicit less even from the subject than the bare question does
  from the unlearned model; the ceiling is then ≤ 0 and recovery 0 with a note. The per-variant rows
  keep the raw numbers (e.g. `mc_accuracy` against `mc_chance` in the JSON).
- Quantization: the tiny model is trained from scratch in float32 with a large learning rate, and
  unlearning moves its weights by more than a 4-bit step, so rounding brings little back here. The
  effect reported for 7B models unlearned with small learning rates needs that regime to show.
- In-context facts: the tiny model does not use facts given in its prompt to answer (it was never
  trained to), so this attack recovers nothing here; it is meant for instruction-tuned models.
- Rows whose unattacked forget ROUGE is within ~0.1 of the subject's (methods that barely unlearned
  with their budget) have almost no gap; their recovery jumps between 0 and 1.

## Quantization on a GPU

The CPU attack simulates quantization (quantize, then dequantize to float32), which is what the
low-bit kernels compute up to accumulation order. To attack with the real kernels on a GPU, load the
model quantized and evaluate it as any LM:

```python
from transformers import AutoModelForCausalLM, AutoTokenizer, BitsAndBytesConfig
from unlearnkit.scoring import LM
from unlearnkit.attacks import run_attack

q = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype="bfloat16")
net = AutoModelForCausalLM.from_pretrained("RUN/model", quantization_config=q, device_map="cuda")
tok = AutoTokenizer.from_pretrained("RUN/model")
res = run_attack("probes", LM(net, tok), "WORLD", subject=LM(subject_4bit, tok), kinds=["paraphrase"])
```

(`load_in_8bit=True` for LLM.int8(); a GPTQ or AWQ export loads the same way with its own config.)
The `probes` attack with `kinds=["paraphrase"]` or `incontext` accepts any LM object, so quantized
models from any backend can be compared with the subject quantized the same way.
"""


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=ROOT / "runs" / "bench", help="world, models and runs (shared with bench/methods.py)")
    ap.add_argument("--people", type=int, default=60)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--methods", default=None, help="comma-separated (default: every registered method)")
    ap.add_argument("--attacks", default=",".join(ATTACK_OPTIONS))
    ap.add_argument("--doc", type=Path, default=ROOT / "docs" / "robustness.md")
    ap.add_argument("--train", action="append", default=[], metavar="KEY=VALUE",
                    help="a training setting (saliency, sam, lr, ...) for every method's run (repeatable)")
    ap.add_argument("--calibration", action="append", default=[], metavar="KEY=VALUE",
                    help="a calibration setting (repair_rounds, floor, ...) for every method's run (repeatable)")
    args = ap.parse_args(argv)
    from unlearnkit.shell import assignments
    from unlearnkit.methods import list_methods

    methods = args.methods.split(",") if args.methods else [m.name for m in list_methods() if m.name != "finetune"]
    attacks = [a for a in args.attacks.split(",") if a]
    bad = [a for a in attacks if a not in ATTACK_OPTIONS]
    if bad:
        ap.error(f"unknown attack {bad[0]!r}; valid: {', '.join(ATTACK_OPTIONS)}")
    train = assignments(args.train, "--train")
    report = run(args.out, args.people, args.seed, methods, attacks, train,
                 assignments(args.calibration, "--calibration") or None)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "robustness.json").write_text(json.dumps(report, indent=2))
    write_doc(report, args.doc)
    print("\n".join(table(report)))
    print(f"wrote {args.doc} and {args.out / 'robustness.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
