"""`unlearn home ...`, `unlearn request ...` and `unlearn serve`: the shell over `unlearnkit.requests`."""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import List, Optional

import typer
from rich.console import Console
from rich.table import Table

from .. import DEFAULT_METHOD
from ..shell import assignments, friendly
from .home import Settings

home_app = typer.Typer(help="A deployment home: model versions, the guard, the ledger of forget requests.",
                       no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)
request_app = typer.Typer(help="Forget requests: add, withdraw, retry, locate, process, list, show, "
                               "certificate, certificate-check.",
                          no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)
console = Console(stderr=True)
out = Console()

HOME = typer.Option(None, "--home", help="Deployment home (default: $UNLEARN_HOME, else ./unlearn-home).")


def _when(t) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t)) if t else "–"


@home_app.command("init")
@friendly
def home_init(model: str = typer.Option(..., help="Base model: checkpoint dir or hub id (copied as version v0000)."),
              retain: Path = typer.Option(..., help="Retain pool: a world dir, a `datasets` dir or a JSONL file."),
              home: Optional[Path] = HOME,
              method: str = typer.Option(DEFAULT_METHOD, help="Default unlearning method of `request process`."),
              guard_action: str = typer.Option("pseudonymise", help="Guard action for requested people."),
              sam: float = typer.Option(Settings.model_fields["sam"].default,
                                        help="Sharpness-aware steps of `request process` (their radius, a fraction of "
                                             "the weights' norm; 0: plain steps): a version must resist relearning "
                                             "to be deployed."),
              repair_rounds: int = typer.Option(Settings.model_fields["repair_rounds"].default,
                                                help="Repair rounds of `request process`: the facts a batch's "
                                                     "calibrated run left reproduced, per request, unlearned again "
                                                     "(0: none)."),
              lift_rounds: int = typer.Option(Settings.model_fields["lift_rounds"].default,
                                              help="Lift rounds of `request process`: the facts of a person the "
                                                   "batch's run left below their strangers, trained back to their "
                                                   "level (0: none)."),
              max_batch: int = typer.Option(Settings.model_fields["max_batch"].default,
                                            help="Most requests one `request process` takes as a batch (0: every "
                                                 "waiting one).")):
    """Create a deployment home from a base model and a retain pool."""
    from ..guard import ACTIONS
    from ..methods import get_method
    from . import init

    get_method(method)
    if guard_action not in ACTIONS:
        raise ValueError(f"--guard-action {guard_action!r}: choose one of {', '.join(ACTIONS)}")
    for name, value in (("sam", sam), ("repair_rounds", repair_rounds), ("lift_rounds", lift_rounds),
                        ("max_batch", max_batch)):  # before any copy
        Settings.parse(f"--{name.replace('_', '-')}", **{name: value})
    h = init(home, model, retain, method=method, guard_action=guard_action, sam=sam, repair_rounds=repair_rounds,
             lift_rounds=lift_rounds, max_batch=max_batch)
    out.print(str(h.path))


@home_app.command("prune")
@friendly
def home_prune(home: Optional[Path] = HOME):
    """Delete every version but the deployed one (their manifests stay, so certificates still verify):
    a version from before a deletion still knows what was deleted."""
    from . import prune

    pruned = prune(home)
    console.print(f"pruned {len(pruned)} version(s): {', '.join(pruned)}" if pruned else "nothing to prune",
                  highlight=False)


@home_app.command("versions")
@friendly
def home_versions(home: Optional[Path] = HOME, as_json: bool = typer.Option(False, "--json")):
    """Every version, oldest first, with the utility measured on it (x the base model's): what the
    deletions have cost so far, and which version is deployed."""
    from . import versions

    rows = versions(home)
    if as_json:
        out.print_json(json.dumps(rows))
        return
    t = Table(title="versions (* current; utility: x the base model's, on the home's utility slice)")
    for col in ("version", "parent", "outcome", "utility", "requests", "batch", "created"):
        t.add_column(col, no_wrap=col in ("version", "outcome", "utility"))
    for v in rows:
        t.add_row(v["name"] + ("*" if v["current"] else ""), v["parent"] or "–",
                  (v["outcome"] or "–") + (", pruned" if v["pruned"] else ""), _fmt(v["utility"]), str(v["requests"]),
                  v["batch"] or "–", _when(v["created"]))
    out.print(t)


@home_app.command("key")
@friendly
def home_key(home: Optional[Path] = HOME):
    """Print the home's public key (64 hex digits; the PEM file is HOME/signing.pub): give it to whoever
    checks a certificate (`unlearn request certificate-check`). A home made before certificates were
    signed gets its key pair here."""
    from . import open_home, public_key

    h = open_home(home)
    out.print(public_key(h), highlight=False)
    console.print(f"PEM: {h.public_key_path}", highlight=False, markup=False, soft_wrap=True)


@request_app.command("add")
@friendly
def request_add(name: str = typer.Argument(..., help="The person's full name."),
                alias: Optional[List[str]] = typer.Option(None, "--alias", help="Another name (repeatable)."),
                facts: Optional[Path] = typer.Option(None, help="JSONL: {question, answer} or {fact} per line."),
                reason: Optional[str] = typer.Option(None, help="Why (kept until the request is verified)."),
                home: Optional[Path] = HOME):
    """File a forget request; prints its id. The person is behind the guard when this returns."""
    from . import add

    r = add(home, name, alias or [], facts, reason)
    out.print(r.id)
    console.print(f"{r.status}{' (merged into an existing request)' if r.merged else ''}")
    if r.follows:
        console.print(f"note: {r.follows}, the person's earlier request, is verified and keeps no clear text: "
                      f"this new request carries the facts given", highlight=False)


@request_app.command("withdraw")
@friendly
def request_withdraw(request_id: str = typer.Argument(...),
                     note: Optional[str] = typer.Option(None, help="Why, kept in the ledger (no personal data: "
                                                                   "the name and facts are dropped)."),
                     home: Optional[Path] = HOME):
    """Withdraw a request no batch holds (the person asked to stop, or it is unfounded): its name,
    facts and inventory leave the ledger, and the person leaves the guard. Filed again, the person
    is a new request."""
    from . import open_home, withdraw

    r = withdraw(home, request_id, note)
    out.print(r["status"])
    if r["followed"] and any(t.id == r["followed"] for t in open_home(home).targets().list()):
        console.print(f"note: the person's earlier request {r['followed']} is verified and stays so, "
                      f"behind the guard under its names", highlight=False)


@request_app.command("retry")
@friendly
def request_retry(request_id: str = typer.Argument(...), home: Optional[Path] = HOME):
    """Put a failed request back in the queue for the next `process` (as filing the person again does)."""
    from . import retry

    out.print(retry(home, request_id))


@request_app.command("locate")
@friendly
def request_locate(request_id: str = typer.Argument(...), home: Optional[Path] = HOME,
                   as_json: bool = typer.Option(False, "--json")):
    """What the current model reveals about the person: the inventory (the forget set)."""
    from . import locate

    res = locate(home, request_id)
    if as_json:
        out.print_json(json.dumps(res))
        return
    sure = res.get("confidence_threshold")
    t = Table(title=f"{request_id}: inventory ({res['counts']['inventory']} items, "
                    f"{res['counts']['probes']} probes, {len(res['strangers'])} strangers; "
                    + ("no confidence test: the base version was pruned)" if sure is None else
                       f"the base version's confidence above {sure:.3f})"))
    for c in ("attribute", "question", "answer", "source", "consistency", "strangers share", "confidence"):
        t.add_column(c)
    num = lambda x: "–" if x is None else f"{x:.2f}"  # noqa: E731
    for it in res["items"]:
        t.add_row(it["attribute"], it["question"], it["answer"], it["source"], num(it["consistency"]),
                  num(it["stranger_share"]), "–" if it.get("confidence") is None else f"{it['confidence']:.3f}")
    out.print(t)


@request_app.command("process")
@friendly
def request_process(home: Optional[Path] = HOME,
                    method: Optional[str] = typer.Option(None, help="Unlearning method (default: the home's)."),
                    max_batch: Optional[int] = typer.Option(None, help="At most N requests in this batch "
                                                                       "(default: the home's max_batch setting)."),
                    seed: Optional[int] = typer.Option(None),
                    steps: Optional[int] = typer.Option(None, help="Fixed step budget (default: the method's own)."),
                    sam: Optional[float] = typer.Option(None, help="Sharpness-aware steps' radius for this batch "
                                                                   "(default: the home's setting; 0: plain steps)."),
                    calibration: Optional[List[str]] = typer.Option(
                        None, "--calibration", "-c", help="Calibration setting key=value for this batch (repeatable; "
                                                          "`unlearn forget --help`), e.g. repair_rounds=2."),
                    progress: bool = typer.Option(False, "--progress"),
                    every: bool = typer.Option(False, "--all", help="Batch after batch until no request waits "
                                                                    "(each of at most max_batch, each from the "
                                                                    "version the one before left)."),
                    abandon: bool = typer.Option(False, "--abandon",
                                                 help="Give up the batch an earlier run left open (one that fails "
                                                      "every time): it is marked abandoned and its requests failed; "
                                                      "nothing else is processed.")):
    """Unlearn the guarded requests as one batch from `current` (at most the home's max_batch, 4
    unless set: the rest wait for the next run, or `--all` goes on), verify each, deploy if all pass.
    A batch an earlier run left open (killed) is finished first, and said. Exits 1 when a batch is
    not deployed (its requests failed: the table says why)."""
    from . import process, process_all

    if abandon:
        from . import abandon as give_up

        done = give_up(home)
        for b in done:
            out.print(f"batch {b['batch']}: abandoned at stage {b['stage']}, {len(b['requests'])} request(s) failed")
        if not done:
            out.print("no open batch to abandon")
        else:
            _list(home, ids=[i for b in done for i in b["requests"]])
        return
    if method is not None:
        from ..methods import get_method

        get_method(method)
    overrides = {k: v for k, v in (("steps", steps), ("sam", sam),
                                   ("calibration", assignments(calibration, "--calibration") or None)) if v is not None}
    if sam is not None:
        Settings.parse("--sam", sam=sam)  # refused at the door by the home setting's own bounds
    kw = dict(method=method, max_batch=max_batch, seed=seed, progress=progress, **overrides)
    if every:  # each batch said as it ends; how many wait, after the last only (none do)
        batches = process_all(home, on_batch=lambda res: _print_batch(home, res, max_batch, last=False), **kw)
    else:
        batches = [r for r in [process(home, **kw)] if r]
        for res in batches:
            _print_batch(home, res, max_batch)
    if not batches:
        out.print("nothing to process")
        return
    if any(res["stage"] != "deployed" for res in batches):
        raise typer.Exit(1)


def _print_batch(home, res: dict, max_batch: int | None, last: bool = True) -> None:
    """What `request process` prints of one batch (and of those it finished first); after the
    `last` (not one `--all` went on from), how many requests wait."""
    from . import open_home

    for b in res.get("resumed", []):  # a run killed earlier left it open: finished first (unsaid until session 35)
        out.print(f"batch {b['batch']} (left open by an earlier run): {b['stage']} ({b['source_version']} -> "
                  f"{b['new_version']}), {len(b['requests'])} request(s)")
        if b.get("note"):
            out.print(f"  {b['note']}", highlight=False)
    out.print(f"batch {res['batch']}: {res['stage']} ({res['source_version']} -> {res['new_version']})")
    if res.get("note"):  # the batch printed is one an earlier run left open, resumed with its own options
        out.print(f"  {res['note']}", highlight=False)
    for i, r in enumerate(res.get("rounds", [])):
        what = "unlearned" if i == 0 else f"{'lift' if r.get('lift') else 'repair'} round {i}:"
        # the run's own utility, on its retain sample; the check that may reject the batch measures the
        # home's utility slice against the base model (docs/requests.md): two numbers, said apart
        why = f", {r['reason']}, run utility {r['utility']:.3f}x its start" if r["reason"] else ""
        out.print(f"  {what} {r['records']} facts of {r['requests']} request(s){why}")
    _list(home, ids=res["requests"])
    if res.get("waiting") and last:
        out.print(f"{res['waiting']} request(s) wait for the next batch: run `unlearn request process` again "
                  f"(at most {max_batch or open_home(home).settings.max_batch} a batch; --all: until none waits)")


def _list(home, ids=None):
    from . import list_requests

    t = Table(title="forget requests", show_edge=False, pad_edge=False)  # within 80 columns, the ids whole
    t.add_column("id", no_wrap=True, min_width=14)  # whole on one line, to copy: the other columns fold
    for c in ("status", "received", "verified", "inventory", "failure"):  # a failure cut short says nothing;
        t.add_column(c, overflow="fold", min_width=10 if c in ("received", "verified") else None)  # a date whole
    for r in list_requests(home):
        if ids is not None and r["id"] not in ids:
            continue
        t.add_row(r["id"], r["status"], _when(r["received_at"]), _when(r["verified_at"]),
                  str(r["counts"].get("inventory", "–")), r["failure"] or "")
    out.print(t)


@request_app.command("list")
@friendly
def request_list(home: Optional[Path] = HOME, as_json: bool = typer.Option(False, "--json")):
    """All requests and their status."""
    from . import list_requests, open_home

    open_home(home)
    if as_json:
        out.print_json(json.dumps(list_requests(home)))
    else:
        _list(home)


@request_app.command("show")
@friendly
def request_show(request_id: str = typer.Argument(...), home: Optional[Path] = HOME,
                 as_json: bool = typer.Option(False, "--json")):
    """One request: its fields, checks and history."""
    from . import show

    r = show(home, request_id)
    if as_json:
        out.print_json(json.dumps(r))
        return
    t = Table(title=f"request {request_id}", show_header=False)
    for k in ("status", "person_hash", "name", "aliases", "reason", "received_at", "guarded_at", "located_at",
              "verified_at", "failure", "batch", "counts", "certificate"):
        v = r[k]
        t.add_row(k, _when(v) if k.endswith("_at") else (json.dumps(v) if isinstance(v, (dict, list)) else str(v)))
    out.print(t)
    checks = (r.get("metrics") or {}).get("checks") or []
    if checks:
        c = Table(title="checks")
        from .certificate import significance

        for col in ("check", "value", "threshold", "significance", "passed"):
            c.add_column(col)
        for ch in checks:
            c.add_row(ch["check"], _fmt(ch["value"]), _fmt(ch["threshold"]), significance(ch) or "–",
                      "yes" if ch["passed"] else "NO")
        out.print(c)
    h = Table(title="history")
    for col in ("at", "from", "to"):
        h.add_column(col)
    for e in r["events"]:
        h.add_row(_when(e["at"]), e["from_status"] or "–", e["to_status"] or "–")
    out.print(h)


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.3f}"
    if isinstance(v, list):
        return "[" + ", ".join(_fmt(x) for x in v) + "]"
    return "–" if v is None else str(v)


@request_app.command("certificate")
@friendly
def request_certificate(request_id: str = typer.Argument(...), home: Optional[Path] = HOME,
                        verify: bool = typer.Option(False, "--verify", help="Recompute the hashes against the stored "
                                                                            "versions and check the signature under "
                                                                            "the home's key.")):
    """Print a request's certificate, or (--verify) check it against the stored versions and the
    home's public key."""
    from . import certificate, open_home, verify_certificate

    h = open_home(home)
    if not verify:
        out.print_json(json.dumps(certificate(h, request_id)))
        return
    res = verify_certificate(h, request_id)
    t = Table(title=f"certificate {request_id}: {'OK' if res['ok'] else 'FAILED'}")
    for col in ("what", "ok", "detail"):
        t.add_column(col)
    for c in res["checks"]:
        t.add_row(c["what"], "yes" if c["ok"] else "NO", c["detail"])
    out.print(t)
    if not res["ok"]:
        raise typer.Exit(1)


@request_app.command("certificate-check")
@friendly
def request_certificate_check(path: Path = typer.Argument(..., metavar="FILE", help="A certificate file (JSON)."),
                              public_key: str = typer.Option(..., "--public-key",
                                                             help="The home's public key: its 64 hex digits "
                                                                  "(`unlearn home key`), or a file holding them "
                                                                  "or a PEM public key (HOME/signing.pub)."),
                              as_json: bool = typer.Option(False, "--json")):
    """Check a certificate's signature with the home's public key alone (no home needed). Exits 1 when
    it is not signed by that key as it stands (edited, signed by another key, or unsigned)."""
    from . import check_certificate_file

    res = check_certificate_file(path, public_key)
    if as_json:
        out.print_json(json.dumps(res))
    else:
        out.print(f"{path}: {'signature valid' if res['ok'] else 'INVALID'} (request {res['request_id']}): "
                  f"{res['detail']}", highlight=False, markup=False, soft_wrap=True)
    if not res["ok"]:
        raise typer.Exit(1)


@friendly
def serve(home: Optional[Path] = HOME, port: int = typer.Option(8000), host: str = typer.Option("127.0.0.1"),
          log_level: str = typer.Option("info")):
    """Serve the home's current version behind its guard (OpenAI-compatible); POST /v1/forget files a
    request (admin token: UNLEARN_GUARD_TOKEN), GET /v1/requests/{id} its status."""
    from .serve import serve as _serve

    _serve(home, port=port, host=host, log_level=log_level)
