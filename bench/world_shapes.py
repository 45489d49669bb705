"""Cost of the world shapes (data.world.SHAPES): world size, and the wall time of training the
subject from scratch on it with the default recipe (api.finetune, one thread).

    OMP_NUM_THREADS=1 python bench/world_shapes.py                      # every shape, seed 0
    OMP_NUM_THREADS=1 python bench/world_shapes.py --shapes large --seed 1

Prints, per shape: people, QA records and documents trained on, training pairs, steps and the
seconds of world generation and of api.finetune (tokenizer + training + saving), wall and CPU (on a
shared machine the CPU seconds are the figure to compare; with one thread they are the wall time an
idle core would take).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from unlearnkit import api  # noqa: E402
from unlearnkit.data.io import load_world  # noqa: E402
from unlearnkit.data.world import SHAPES  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shapes", default=",".join(SHAPES), help="comma-separated names of data.world.SHAPES")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--oracle", action="store_true", help="train the oracle (without the forget set) instead")
    args = ap.parse_args()
    import torch

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.shapes.split(","):
            t = time.perf_counter()
            data = api.world(Path(tmp) / name / "world", seed=args.seed, shape=name)
            t_world = time.perf_counter() - t
            w = load_world(data)
            t, cpu = time.perf_counter(), time.process_time()
            ckpt = api.finetune(data, Path(tmp) / name / "model", without_forget=args.oracle, seed=args.seed,
                                progress=False)
            t_train, cpu_train = time.perf_counter() - t, time.process_time() - cpu
            meta = json.loads((ckpt / "unlearnkit.json").read_text())
            people = {r.subject for r in w.forget + w.retain + w.neighbours + w.holdout}
            rows.append({"shape": name, "people": len(people),
                         "qa_records": len(w.training_records(args.oracle)), "docs": len(w.training_docs(args.oracle)),
                         "pairs": meta["examples"].get("train"), "steps": (meta.get("train_stats") or {}).get("steps"),
                         "world_s": round(t_world, 2), "finetune_s": round(t_train, 1),
                         "finetune_cpu_s": round(cpu_train, 1)})
            print(json.dumps(rows[-1]), flush=True)


if __name__ == "__main__":
    main()
