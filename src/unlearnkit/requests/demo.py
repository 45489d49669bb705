"""The requests stage of `unlearn demo --requests`: the forget people as requests without facts, on
a fresh home built from the demo's subject and world; locate, guard, then `process` in sequential
batches of `per_batch` (2, as docs/requests.md measures), each from the last deployed version;
certificates for the verified."""
from __future__ import annotations

import shutil
from pathlib import Path

from ..data.io import load_world


def demo_requests(out: Path, data: Path, subject: Path, say=None, seed: int = 0, per_batch: int = 2) -> dict:
    from . import add, init, process, show, verify_certificate

    say = say or (lambda *a, **k: None)
    home_dir = Path(out) / "home"
    shutil.rmtree(home_dir, ignore_errors=True)  # a rerun starts from the subject again
    home = init(home_dir, subject, data, seed=seed)
    people = sorted({r.subject for r in load_world(data).forget})
    ids = [add(home, p).id for p in people]
    say(f"[bold]requests[/]: {len(ids)} requests filed and guarded in {home_dir}; locating and processing "
        f"in batches of {per_batch}")
    batches = []
    for _ in range(0, len(ids), per_batch):
        b = process(home, max_batch=per_batch, seed=seed)
        batches.append({"batch": b.get("batch"), "stage": b.get("stage"), "version": b.get("new_version")})
        say(f"  batch {len(batches)}: {b.get('stage')} ({b.get('source_version')} -> {b.get('new_version')})")
    rows = []
    for rid in ids:
        r = show(home, rid)
        rows.append({"id": rid, "status": r["status"], "failure": r["failure"], "certificate": r["certificate"],
                     "certificate_ok": verify_certificate(home, rid)["ok"] if r["status"] == "verified" else None,
                     "inventory": r["counts"].get("inventory")})
    return {"home": str(home_dir), "batches": batches, "version": home.current_name(), "requests": rows}
