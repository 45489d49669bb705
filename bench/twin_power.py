"""How much power the tests against the twins have on test-sized worlds, over seeds and sizes.

    python bench/twin_power.py                                  # the test world's shape, seeds 0-2
    python bench/twin_power.py --people 40 --forget 0.35 --seeds 0 1 --epochs 20 --out runs/twin-power

For each world (seed, people, forget fraction) it trains a subject and an oracle (cached under
`--out`) and prints, per model, what the calibrator's truth-ratio check (`Calibrator.truth_ratios`,
the evaluation's `forget_quality_twins` and `truth_gap_twins`) gives at the start: the two-sample
KS p of the forget facts' truth ratios against their twins', and the paired gap (mean of
log R(fact) - log R(twin)) with its p. A model's training differs with the CPU (its kernels
round differently), so seeds stand in for machines here: a test that asserts on one of these
figures holds on other machines only where every seed passes it with room.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path


def measure(root: Path) -> dict:
    """The start check of `Calibrator.truth_ratios` for the subject and the oracle in `root`."""
    import torch

    from unlearnkit.calibrate import Calibrator
    from unlearnkit.data.io import load_world
    from unlearnkit.models.load import load_model

    w = load_world(root / "world")
    out = {}
    for name in ("subject", "oracle"):
        net, tok = load_model(root / name)

        class Held:
            def score(self, fn, batch):
                with torch.no_grad():
                    return fn(net, batch)

        got = Calibrator(tok, w, seed=0).truth_ratios(Held())
        out[name] = {k: got[k] for k in ("ks_p", "twin_gap", "twin_gap_p", "forget_log_r", "reference_log_r", "n_forget")}
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--people", type=int, default=30, help="the test world's: 30")
    ap.add_argument("--forget", type=float, default=0.2, help="forget fraction (the test world's: 0.2)")
    ap.add_argument("--epochs", type=int, default=20, help="the training recipe's: 20")
    ap.add_argument("--out", default="runs/twin-power")
    a = ap.parse_args(argv)
    from unlearnkit import api

    rows = []
    for seed in a.seeds:
        root = Path(a.out) / f"s{seed}-p{a.people}-f{a.forget}-e{a.epochs}"
        t = time.time()
        if not (root / "built").is_file():
            data = api.world(root / "world", seed=seed, n_people=a.people, forget_fraction=a.forget)
            api.train_pair(data, {"subject": root / "subject", "oracle": root / "oracle"}, seed=seed, progress=False,
                           overwrite=True, epochs=a.epochs)
            (root / "built").touch()
        row = {"seed": seed, "people": a.people, "forget": a.forget, "epochs": a.epochs, "build_s": round(time.time() - t),
               **measure(root)}
        rows.append(row)
        print(json.dumps(row), flush=True)
    print(f"\n{'seed':>4} {'model':>8} {'n':>4} {'KS p':>8} {'gap':>7} {'gap p':>9}")
    for r in rows:
        for m in ("subject", "oracle"):
            x = r[m]
            print(f"{r['seed']:>4} {m:>8} {x['n_forget']:>4} {x['ks_p']:>8.3g} {x['twin_gap']:>+7.3f} {x['twin_gap_p']:>9.2g}")


if __name__ == "__main__":
    main()
