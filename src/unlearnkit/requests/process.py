"""`request process`: the guarded requests as one batch (at most the home's `max_batch`, oldest
first), from `current` to a verified new version.

Stages of a batch (ledger `batches.stage`), each entered in one transaction, so that the next
`process` after a crash knows how far the last one got:

    started    requests -> processing; the batch world is built and unlearning runs
    trained    the run directory holds the unlearned model
    versioned  the model is an immutable version with its manifest; the checks run
    deploying  every check passed, the certificates are written; `current` switches
    deployed   requests -> verified (clear text dropped); or
    rejected   a check failed: requests -> failed with the reasons, nothing deployed

Resuming: a `started` batch is trained again from scratch (its world is rebuilt from the ledger);
`trained` and `versioned` go on from there; `deploying` switches `current` (idempotent) and commits.
`UNLEARNKIT_KILL_AT=<point>` makes the process SIGKILL itself at that point (reliability tests).
"""
from __future__ import annotations

import json
import logging
import random
import shutil
import time
import uuid
from pathlib import Path

import yaml

from .. import runinfo
from ..runinfo import kill_point
from ..data.io import write_jsonl
from .certificate import build as build_certificate, write as write_certificate
from .home import Home, HomeError, check_method, open_home
from .intake import guard_request, guard_target, put_target, sync_guard, unguard_withdrawn
from .ledger import WAITING
from .locate import forget_records, load_probes, locate, twin_records
from .person import new_names
from .pool import load_pool, neighbours_of, utility_slice

log = logging.getLogger("unlearnkit.requests")


def _lm(model_dir):
    from ..models.load import load_model
    from ..scoring import LM

    return LM(*load_model(str(model_dir)))


def _base_lm(home, current_lm):
    """The home's base version as an LM, or None where it was pruned: what locate's confidence test
    scores on. Where current is the base, `current_lm` (its files were checked as current's: they
    were hashed twice, until the review of session 39); else the base, checked."""
    base = home.base()
    if base.pruned_at is not None:
        return None
    return current_lm if base.name == home.current_name() else _lm(home.check_version(base.name).path)


def locate_request(home, request_id: str, lm=None, base=False) -> dict:
    """Run locate for one request on `current`, store the inventory, move it to `located`, and put
    the inventory's answers behind the guard too. Locate's confidence test scores on the home's
    base version (`base`: its LM, None for none; loaded here when not given). Returns the locate
    result."""
    home = open_home(home)
    with home.ledger() as led:
        r = led.get(request_id)
        if r.status == "withdrawn":
            raise Withdrawn(f"request {request_id}: withdrawn, nothing to locate")
        if r.status not in WAITING:
            raise HomeError(f"request {request_id}: cannot locate in status {r.status}")
        lm = lm or _lm(home.current().path)
        base = _base_lm(home, lm) if base is False else base
        res = locate(lm, r.name, r.aliases, r.facts, load_probes(home), home.settings.n_strangers, home.settings.seed,
                     people=sorted({x.subject for x in load_pool(home)}), confident=base)
        guard = home.targets()
        put_target(guard, guard_target(r.id, r.name, r.aliases, r.facts, res["items"]))  # before the ledger says so
        moved = led.transition(r.id, "located", only_from=WAITING,
                               inventory={"items": res["items"], "strangers": res["strangers"], "names": res["names"],
                                          "facts": len(r.facts)}, counts={**r.counts, **res["counts"]})
        # an `add` may have come between; a `withdraw` too, and then the target just put goes again
        sync_guard(led, guard, r.id, home.settings.keep_guard_after_verified)
        if not moved:
            now = led.get(request_id).status
            raise (Withdrawn if now == "withdrawn" else HomeError)(f"request {request_id}: {now} while it was located")
    return res


class Withdrawn(HomeError):
    """A request withdrawn (`Ledger.withdraw`) before `process` or `locate` could take it."""


def batch_world(home: Home, requests, out: Path) -> tuple[Path, dict]:
    """forget = the inventories; holdout = their twins about strangers; retain = neighbours + a
    sample of the pool; world_facts = the home's utility slice (`pool.utility_slice`), which nothing
    trains on and the run's utility floor scores (`_unlearn`). Returns (world dir, {request id:
    (records, twins)})."""
    pool = load_pool(home)
    measured = utility_slice(pool, home.settings.utility_records, home.settings.seed)
    held = {r.id for r in measured}
    forget, twins, per = [], [], {}
    names, values = [], []
    for r in requests:
        inv = r.inventory or {"items": [], "strangers": []}
        recs = forget_records(r.id, r.name, inv["items"])
        tw = twin_records(r.id, r.name, inv["items"], inv["strangers"])
        per[r.id] = (recs, tw)
        forget += recs
        twins += tw
        names += [r.name, *r.aliases]
        values += [it["answer"] for it in inv["items"]]
    from ..attacks.recovery import normalise

    keys = {normalise(n) for n in names}
    pool = [p for p in pool if normalise(p.subject) not in keys]  # the people themselves are not retained
    measured = [p for p in measured if normalise(p.subject) not in keys]
    near = [p for p in neighbours_of(pool, names, values) if p.id not in held]
    rng = random.Random(home.settings.seed)
    rest = [p for p in pool if p not in near and p.id not in held]
    retain = near + rng.sample(rest, min(len(rest), home.settings.retain_sample))
    out.mkdir(parents=True, exist_ok=True)
    if forget:
        write_jsonl(out / "forget.jsonl", forget)
        write_jsonl(out / "holdout.jsonl", twins)
    write_jsonl(out / "retain.jsonl", retain)
    if measured:
        write_jsonl(out / "world_facts.jsonl", measured)
    return out, per


def process(home=None, method: str | None = None, max_batch: int | None = None, progress: bool = False,
            seed: int | None = None, **train_overrides) -> dict:
    """Finish any batch a crash left open, then take the guarded/located requests, oldest first, as
    one batch of at most `max_batch` (None: the home's `max_batch` setting, 4 unless set; the rest
    wait for the next call). Returns the batch summary (the resumed batch's when there was no new
    request; {} when there was nothing to do at all), with the summaries of the other batches it
    finished first under "resumed" (their requests count apart from `max_batch`) and "waiting": how
    many requests are left for the next batch.

    A batch left open goes on with the method, seed and training options it was started with (the
    ledger's record), whatever this call asks: they are its certificates' method. This call's
    `method`, `seed` and options apply to its new batch only; where they differ from a resumed
    batch's, its summary's "note" says so (it trained with this call's seed and budget until
    session 37)."""
    from ..calibrate import settings_from

    if max_batch is not None and max_batch < 1:
        raise ValueError("--max-batch: must be >= 1")
    home = open_home(home)
    settings_from(train_overrides.get("calibration"))  # at the door: a batch that starts must be able to run
    if method is not None:  # recorded with the batch unchecked, and every resume failed on it, until session 36
        check_method(method, "--method")
    with home.process_lock():
        for stale in home.versions_dir.glob(".v*.tmp-*"):  # half-copied versions of a killed run
            shutil.rmtree(stale, ignore_errors=True)
        with home.ledger() as led:
            for r in led.list("received"):  # an `add` killed before its guard step: guarded first
                guard_request(home, led, r.id)
            unguard_withdrawn(home, led)  # and a `withdraw` killed before its guard step: out of the guard
            resumed = [{**_run_or_say(home, b["id"], progress), **_differs(home, b, method, seed, train_overrides)}
                       for b in led.open_batches()]
            todo = led.list(WAITING)
        limit = home.settings.max_batch if max_batch is None else max_batch
        todo, waiting = (todo[:limit], len(todo[limit:])) if limit else (todo, 0)
        if not todo:
            return {**resumed[-1], "resumed": resumed[:-1], "waiting": 0} if resumed else {}
        load_pool(home, checked=True)  # before a batch opens that could never run
        source = home.current()
        lm = base = None
        for r in todo:
            if r.status == "guarded" or r.inventory is None or _grown(r):
                if lm is None:
                    lm = _lm(source.path)
                    base = _base_lm(home, lm)
                try:
                    locate_request(home, r.id, lm, base)
                except Withdrawn:  # by another process since the list above: `start_batch` leaves it out
                    continue
                kill_point("located")
        del lm, base
        batch_id = "b-" + time.strftime("%Y%m%d-%H%M%S") + "-" + uuid.uuid4().hex[:6]
        with home.ledger() as led:
            taken = led.start_batch(batch_id, source.name, home.next_version_name(), [r.id for r in todo],
                                    method or home.settings.method, {"train_overrides": train_overrides, "seed": seed})
        if not taken:  # every one withdrawn meanwhile
            return {**resumed[-1], "resumed": resumed[:-1], "waiting": waiting} if resumed else {}
        kill_point("started")
        return {**_run_or_say(home, batch_id, progress), "resumed": resumed, "waiting": waiting}


def process_all(home=None, on_batch=None, **kw) -> list[dict]:
    """`process` (with `kw`) again until no request waits: every guarded request carried through in
    batches of at most `max_batch`, each from the version the one before left (`request process
    --all`, which prints each batch as it ends through `on_batch(summary)`). Returns the batches'
    summaries in order; [] when there was nothing to do."""
    done = []
    while res := process(home, **kw):
        done.append(res)
        if on_batch is not None:
            on_batch(res)
        if not res.get("waiting"):
            break
    return done


def abandon(home=None) -> list[dict]:
    """Give up the batches left open (`unlearn request process --abandon`): a batch whose run fails
    every time (an error, not a check) held its requests `processing` and every later batch back for
    good until session 37. Each open batch is marked `abandoned` and its requests `failed` with the
    reason, in one transaction; the guard stays on for them, and filing one again retries it. A batch
    at `deploying` (every check passed; `current` may already be its version) is refused: `process`
    finishes it. Returns [{"batch", "stage" (the one it was abandoned at), "requests" (failed)}]."""
    home = open_home(home)
    done = []
    with home.process_lock(), home.ledger() as led:
        batches = led.open_batches()
        for b in batches:
            if b["stage"] == "deploying":
                raise HomeError(f"batch {b['id']}: deploying (every check passed, certificates written): "
                                f"`unlearn request process` finishes it; it is not abandoned")
        for b in batches:
            failure = (f"abandoned: batch {b['id']} given up at stage {b['stage']} (`request process --abandon`); "
                       f"file the request again to retry")
            ids = [rid for rid in b["request_ids"] if led.get(rid).status == "processing"]
            led.transition_many([(rid, "failed", {"failure": failure}) for rid in ids], (b["id"], {"stage": "abandoned"}))
            for d in (home.runs_dir / b["id"]).glob("world*"):  # names and facts in clear: gone with the batch
                shutil.rmtree(d, ignore_errors=True)
            done.append({"batch": b["id"], "stage": b["stage"], "requests": ids})
    return done


def _run_or_say(home: Home, batch_id: str, progress: bool) -> dict:
    """`_run`, with an error that stops the batch saying that it stays open and how to give it up."""
    try:
        return _run(home, batch_id, progress)
    except ValueError as e:  # expected failures (data, settings, paths); anything else raises as it is
        raise HomeError(f"{str(e).splitlines()[0] if str(e) else type(e).__name__} (batch {batch_id} stays open: "
                        f"`unlearn request process --abandon` gives it up, its requests failed)") from e


def _started_with(b: dict) -> dict:
    """The seed (None: the home's) and training options batch `b` was started with, as the ledger
    recorded them (a batch recorded none where it was given none, before session 37)."""
    rec = b.get("results") or {}
    return {"train_overrides": rec.get("train_overrides") or {}, "seed": rec.get("seed")}


def _differs(home: Home, b: dict, method: str | None, seed: int | None, overrides: dict) -> dict:
    """{"note": ...} where this call asked for a method, seed or option other than resumed batch `b`
    was started with (and goes on with), else {}."""
    own = _started_with(b)
    had = {"method": b["method"], "seed": home.settings.seed if own["seed"] is None else own["seed"],
           **own["train_overrides"]}
    asked = {"method": method, "seed": seed, **overrides}
    asked = {k: v for k, v in asked.items() if v is not None and had.get(k) != v}
    if not asked:
        return {}
    say = lambda d: ", ".join(f"{k}={json.dumps(v)}" for k, v in d.items())  # noqa: E731
    note = (f"resumed with what it was started with ({say({k: had.get(k) for k in asked})}); this call's "
            f"{say(asked)} apply to a new batch only")
    log.warning("batch %s: %s", b["id"], note)
    return {"note": note}


def _run(home: Home, batch_id: str, progress: bool) -> dict:
    """Carry batch `batch_id` from its recorded stage to deployed or rejected, with the seed and
    training options it was started with (`_started_with`)."""
    run_dir = home.runs_dir / batch_id
    with home.ledger() as led:
        b = led.batch(batch_id)
        reqs = [led.get(i) for i in b["request_ids"]]
    own = _started_with(b)
    seed, train_overrides = home.settings.seed if own["seed"] is None else own["seed"], own["train_overrides"]
    world, per = batch_world(home, reqs, run_dir / "world")
    has_forget = (world / "forget.jsonl").is_file()
    source = home.check_version(b["source_version"])
    if b["stage"] == "started":
        if has_forget:
            _unlearn(home, b, per, world, source, run_dir, seed, train_overrides, progress)
        kill_point("trained")
        _stage(home, batch_id, "trained")
        b["stage"] = "trained"
    if b["stage"] == "trained":
        if has_forget:
            try:
                home.check_version(b["new_version"])  # a killed run got as far as the rename
            except HomeError:
                if (home.versions_dir / b["new_version"]).exists():
                    shutil.rmtree(home.versions_dir / b["new_version"])
                home.add_version(run_dir / "unlearn" / "model", b["new_version"], parent=source.name)
        kill_point("versioned")
        _stage(home, batch_id, "versioned")
        b["stage"] = "versioned"
    after = _checked_new_version(home, b, run_dir, source) if has_forget else source
    if b["stage"] == "versioned":
        _verify(home, b, reqs, per, world, source, after, run_dir)
        with home.ledger() as led:
            b = led.batch(batch_id)
    if b["stage"] == "deploying":
        _deploy(home, b, reqs, after)
    for d in run_dir.glob("world*"):  # names and facts in clear: gone with the batch
        shutil.rmtree(d, ignore_errors=True)
    for d in run_dir.glob("*/model"):  # kept as a version
        shutil.rmtree(d, ignore_errors=True)
    with home.ledger() as led:
        b = led.batch(batch_id)
    rounds = run_dir / "rounds.json"
    return {"batch": batch_id, "stage": b["stage"], "source_version": b["source_version"],
            "new_version": b["new_version"] if has_forget else b["source_version"], "requests": b["request_ids"],
            "rounds": json.loads(rounds.read_text())["rounds"] if rounds.is_file() else [], "results": b["results"]}


def _unlearn(home: Home, b: dict, per, world: Path, source, run_dir: Path, seed: int, overrides: dict,
             progress: bool) -> None:
    """The calibrated run on the batch's inventories, with `repair_rounds` repair rounds
    (`unlearning._repair`) judged per request: a request whose facts the kept weights still
    reproduce beyond their twins' share (`answer_tolerance`, as its answers check) has those facts
    unlearned again, calibrated, from the kept weights. One run over the whole batch moves every
    fact at one learning rate and stops when the batch as a whole matches; a fact still near
    certainty has barely moved by then. Then `lift_rounds` lift rounds: a request whose facts the
    run left below their strangers' (its MIA check's AUC under 0.5 - `mia_tolerance`) has those it
    disfavours trained back to the strangers' level. The run's floor holds what the deployment's
    utility check measures (`utility=answers`). A fixed budget (`steps`) runs as given, without repair.
    Writes `rounds.json`: each round's directory, size, stop and kept utility, and a repair or lift
    round's inventory item ids (a lift round marked `lift`)."""
    from ..unlearning import BUDGET_KEYS, forget

    shutil.rmtree(run_dir / "unlearn", ignore_errors=True)
    train = {"sam": home.settings.sam, **overrides}
    if not any(k in train for k in BUDGET_KEYS):
        # the floor holds what the deployment's utility check measures, on the records it scores;
        # repair rounds judge each request (its person) as its answers check does, against the
        # same strangers (the batch world's holdout: `batch_world`); the forget mean at or below the
        # strangers' (`mean_se`): one standard error of a batch's twenty-odd facts left facts answered;
        # a person its MIA check would fail is repaired too (`repair_auc`, by the AUC's stop alone), and one
        # it would fail below the band is lifted back (`lift_rounds`); a round starts at its share of the
        # run's learning rate (`repair_lr`: its few facts' steps cost utility)
        given = overrides.get("calibration") or {}
        tol = home.settings.mia_tolerance
        cal = {"utility": "answers", "repair_rounds": home.settings.repair_rounds,
               "lift_rounds": home.settings.lift_rounds, "repair_by": "subject",
               "repair_tolerance": home.settings.answer_tolerance, "repair_twins": "holdout", "repair_stop": "auc",
               "repair_lr": "share", "mean_se": 0.0, **given}
        if "repair_auc" not in given:
            cal["repair_auc"] = tol if 0 < tol < 0.5 and cal["repair_stop"] == "auc" else None
        if cal["repair_auc"] is None and "lift_rounds" not in given:
            cal["lift_rounds"] = 0  # no band to lift into
        train["calibration"] = cal
    out = run_dir / "unlearn"
    forget(source.path, world, b["method"], out, seed=seed, progress=progress, overwrite=True,  # a batch trains again
           **train)
    cal = out / "calibration.json"
    info = json.loads(cal.read_text()) if cal.is_file() else {}
    n_req = lambda ids: len({i.rsplit("-", 1)[0] for i in ids})  # noqa: E731  (item ids: "<request id>-NN")
    rounds = [{"dir": "unlearn", "records": sum(len(recs) for recs, _ in per.values()), "requests": len(per),
               "reason": info.get("reason"), "utility": float((info.get("kept") or {}).get("utility", 1.0))}]
    rounds += [{"dir": r["dir"], "records": r["records"], "requests": n_req(r["ids"]), "reason": r["reason"],
                "utility": float(r["utility"]), "ids": sorted(r["ids"]), "lr": r.get("lr"),
                **({"lift": True} if r.get("lift") else {})}
               for r in info.get("repairs", [])]
    runinfo.write_json(run_dir / "rounds.json", {"rounds": rounds})


def _stage(home: Home, batch_id: str, stage: str, **fields) -> None:
    with home.ledger() as led:
        led.update_batch(batch_id, stage=stage, **fields)


def _method_info(run_dir: Path, method: str) -> dict:
    info = {"name": method}
    cfg = run_dir / "unlearn" / "config.yaml"
    if cfg.is_file():
        c = yaml.safe_load(cfg.read_text()) or {}
        info.update({"params": c.get("params"), "train": c.get("train"), "seed": c.get("seed"),
                     "versions": c.get("versions")})
    for name in ("calibration.json", "train.json"):  # why the run stopped, when the loop reports it
        p = run_dir / "unlearn" / name
        if p.is_file():
            info[name.removesuffix(".json")] = json.loads(p.read_text())
    rounds = run_dir / "rounds.json"
    if rounds.is_file():
        info["rounds"] = json.loads(rounds.read_text())["rounds"]
    return info


def run_checks(home: Home, reqs, per, world: Path, source_dir, model_dir) -> dict:
    """Every check of a batch (docs/requests.md, "Process and its checks") on the model in
    `model_dir` unlearned from `source_dir`: {"batch_checks", "request_checks" (by request id),
    "passed"}. `process` judges its candidate with it; any other model can be judged the same way
    (bench/requests.py runs it on the oracle, exact unlearning, to show the checks can be passed)."""
    from .verify import attack_checks, check_level, request_checks, utility_check  # the model side: torch, the metrics

    lm = _lm(model_dir)
    batch_checks = [utility_check(home, model_dir, lm)]
    if Path(model_dir).resolve() != Path(source_dir).resolve():
        batch_checks += attack_checks(model_dir, world, source_dir, home.settings)
    level = check_level(home.settings, len(reqs))
    per_checks = {r.id: request_checks(lm, *per[r.id], home.settings, level) for r in reqs}
    ok = all(c["passed"] for c in batch_checks) and all(c["passed"] for cs in per_checks.values() for c in cs)
    return {"batch_checks": batch_checks, "request_checks": per_checks, "passed": ok}


def _verify(home: Home, b: dict, reqs, per, world: Path, source, after, run_dir: Path) -> None:
    got = run_checks(home, reqs, per, world, source.path, after.path)
    kill_point("checked")
    ok, batch_checks, per_checks = got["passed"], got["batch_checks"], got["request_checks"]
    results = {**_started_with(b), "batch_checks": batch_checks, "request_checks": per_checks}
    if not ok:
        failures = {}
        for r in reqs:
            own = [c["check"] for c in per_checks[r.id] + batch_checks if not c["passed"]]
            failures[r.id] = ("failed: " + ", ".join(own)) if own else "not deployed: other requests of the batch failed"
        with home.ledger() as led:
            led.transition_many([(r.id, "failed", {"failure": failures[r.id],
                                                   "metrics": {"checks": per_checks[r.id] + batch_checks}})
                                 for r in reqs], (b["id"], {"stage": "rejected", "results": results}))
        return
    now = time.time()
    method = _method_info(run_dir, b["method"])
    certs = {}
    for r in reqs:
        cert = build_certificate(r, b, source.summary(), after.summary(), method, per_checks[r.id] + batch_checks,
                                 {"inventory": len(per[r.id][0]), "twins": len(per[r.id][1])}, now)
        path, sha = write_certificate(home, cert)
        certs[r.id] = {"path": str(path.relative_to(home.path)), "sha256": sha}
    kill_point("certified")
    _stage(home, b["id"], "deploying", results={**results, "certificates": certs, "verified_at": now})


def _grown(r) -> bool:
    """Whether request `r` gained names or facts since its inventory was located (`request add` of the
    person again, from another process): they were never probed, so the inventory must be made again.
    An inventory from before session 35 does not say what it was made from: taken as it is."""
    inv = r.inventory or {}
    if "names" not in inv:
        return False
    return bool(new_names([r.name, *r.aliases], inv["names"])) or len(r.facts) > inv.get("facts", 0)


def _checked_new_version(home: Home, b: dict, run_dir: Path, source):
    """The batch's new version, checked against its manifest; one found damaged before it was deployed
    is built again from the run's model where that is still there (a damaged candidate failed every
    later `process`, and no request could be processed again, until session 35)."""
    try:
        return home.check_version(b["new_version"])
    except HomeError:
        model = run_dir / "unlearn" / "model"
        if b["stage"] == "deployed" or not (model / "config.json").is_file():
            raise
        log.warning("version %s is damaged: building it again from %s", b["new_version"], model)
        shutil.rmtree(home.versions_dir / b["new_version"], ignore_errors=True)
        return home.add_version(model, b["new_version"], parent=source.name)


def _deploy(home: Home, b: dict, reqs, after) -> None:
    """Switch `current`, then trim the guard to what it needs, and commit: verified, clear text
    dropped. The switch comes first: a process stopped between the two leaves the unlearned model
    behind a guard that still holds the facts, where the other order left the model that knows
    them behind a trimmed guard (until session 38). A rerun of a deploying batch does both again.
    A request that gained names or facts while the batch ran (`request add` from another process)
    is not verified: its new names were never located or unlearned. It goes back to `guarded`, its
    guard target whole, for the next batch (until session 35 its new alias was dropped from the
    guard here, and the request verified)."""
    certs = b["results"]["certificates"]
    home.set_current(after.name)
    kill_point("switched")
    guard = home.targets()
    with home.ledger() as led:
        now = {r.id: led.get(r.id) for r in reqs}
    grown = {rid for rid, r in now.items() if r.status == "processing" and _grown(r)}
    for r in reqs:
        if r.id in grown:
            continue
        if home.settings.keep_guard_after_verified:
            if r.name is not None:
                put_target(guard, guard_target(r.id, r.name, r.aliases, [], names_only=True))
        elif any(t.id == r.id for t in guard.list()):
            guard.remove(r.id)
    checks = b["results"]["request_checks"]
    # back to guarded, its inventory kept (the guard keeps forbidding its answers; `_grown` has the next
    # `process` locate it again)
    back = lambda r: ("guarded", {"batch": None, "guarded_at": r.guarded_at})  # noqa: E731
    changes = [(rid, *back(now[rid])) for rid in sorted(grown)]
    for r in reqs:
        if r.id in grown:
            continue
        counts = {**r.counts, "inventory": len((r.inventory or {}).get("items", []))}
        changes.append((r.id, "verified", {
            "certificate": certs[r.id]["path"], "certificate_sha256": certs[r.id]["sha256"],
            "metrics": {"checks": checks[r.id] + b["results"]["batch_checks"]}, "counts": counts,
            "name": None, "aliases": None, "facts": None, "inventory": None, "reason": None,
            "verified_at": b["results"]["verified_at"]}))

    def unless_grown(r, to, fields):  # a request that grew after `now` was read goes back too
        return back(r) if to == "verified" and r.status == "processing" and _grown(r) else (to, fields)

    with home.ledger() as led:
        led.transition_many(changes, (b["id"], {"stage": "deployed"}), recheck=unless_grown)
        for r in reqs:  # the trim above may have crossed an `add`'s guard write: as the ledger now says
            sync_guard(led, guard, r.id, home.settings.keep_guard_after_verified)
        if not led.checkpoint():
            log.warning("%s-wal: a reader held the ledger open, so the clear text the verified requests "
                        "dropped is still in the write-ahead log; it is folded in and removed when the ledger "
                        "is next opened with no reader (e.g. `unlearn request list`)", home.ledger_path)
    runinfo.write_json(home.runs_dir / b["id"] / "deployed.json", {"version": after.name, "at": time.time()})
