"""Forget requests end to end: a deployment home, a ledger, the guard within seconds, the weights in
batches, a certificate per request. See docs/requests.md.

    from unlearnkit import requests as rq
    home = rq.init("unlearn-home", model="runs/subject", retain="runs/world")
    rid = rq.add(home, "Alaric Thornwood").id      # guarded at once
    rq.locate(home, rid)                           # what the model reveals: the inventory
    rq.process(home)                               # unlearn, verify, deploy, certify
    rq.abandon(home)                               # give up a batch that fails every time: its requests fail
    rq.retry(home, rid)                            # if it failed: back in the queue (as filing it again)
    rq.withdraw(home, rq.add(home, "Bea Norcott").id)  # one no batch holds: its clear text and guard target go
    rq.show(home, rid)["status"], rq.verify_certificate(home, rid)["ok"]
    key = rq.public_key(home)                      # 64 hex digits, for whoever checks a certificate
    rq.check_certificate_file(f"{home.path}/certificates/{rid}.json", key)["ok"]   # no home needed
"""
from __future__ import annotations

import os

from .certificate import check_file as check_certificate_file, load as certificate, verify_certificate, verify_signature
from .home import Home, HomeError, Settings, check_method, open_home
from .intake import Added, add, retry, withdraw
from .ledger import STATES, LedgerError, Request
from .process import abandon, locate_request as locate, process, process_all
from .signing import SignatureError, public_hex


def init(home: str | os.PathLike | None, model: str | os.PathLike, retain: str | os.PathLike, *,
         measure_utility: bool = True, **settings) -> Home:
    """Create a deployment home (`unlearn home init`); `settings` override `Settings` fields.
    `measure_utility=False` skips measuring the base utility (a home that will never `process`)."""
    if "method" in settings:  # here, not in `Settings`: reading a home's settings imports no torch
        check_method(settings["method"])  # (unchecked until session 36: its first batch failed for good)
    return Home.init(home, model, retain, Settings.parse(**settings), measure_utility=measure_utility)


def prune(home=None) -> list[str]:
    """Delete the files of every version but the deployed one (`unlearn home prune`): a version from
    before a deletion still knows what was deleted. Their manifests stay, so certificates verify."""
    return open_home(home).prune()


def public_key(home=None) -> str:
    """The home's public key as 64 hex digits (`unlearn home key`): what a third party checks its
    certificates with. A home made before certificates were signed gets its key pair here."""
    h = open_home(home)
    key = h.public_key()
    return public_hex(key if key is not None else h.signing_key())


def versions(home=None) -> list[dict]:
    """Every version of the home, oldest first, with the utility measured on it: the sequence of
    deletions' cost (MUSE's sustainability). Each: name, parent, created, current, deployed (the
    base, or a batch's version that passed every check), pruned, the batch that made it and its stage,
    `outcome` ("base", the batch's stage, or None for a version no batch made), its requests, and `utility` (x the base model's, on the home's utility slice: the utility check
    of its batch, 1.0 for the base) with `utility_raw`. A version no batch names (made by hand) has
    no utility: None."""
    h = open_home(home)
    with h.ledger() as led:
        made = {b["new_version"]: b for b in led.batches()}  # a rejected batch's version stays, named by it
    base, cur, rows = h.base_name, h.current_name(), []
    for name in h.list_versions():
        try:
            v = h.version(name)
        except HomeError:  # a partial copy: not a version
            continue
        b = made.get(name)
        u = next((c for c in ((b or {}).get("results") or {}).get("batch_checks", []) if c["check"] == "utility"), None)
        if name == base:
            u = {"value": 1.0, "utility": h.meta.get("base_utility")}
        rows.append({"name": name, "parent": v.parent, "created": v.created, "current": name == cur,
                     "deployed": name == base or (b is not None and b["stage"] == "deployed"),
                     "pruned": v.pruned_at is not None, "batch": b and b["id"], "stage": b and b["stage"],
                     "outcome": "base" if name == base else b and b["stage"],
                     "requests": len(b["request_ids"]) if b else 0,
                     "utility": u and u["value"], "utility_raw": u and u.get("utility")})
    return rows


def list_requests(home=None) -> list[dict]:
    with open_home(home).ledger() as led:
        return [r.public() for r in led.list()]


def show(home, request_id: str) -> dict:
    with open_home(home).ledger() as led:
        r = led.get(request_id)
        return {**r.public(), "events": led.events(request_id)}


__all__ = ["Added", "Home", "HomeError", "LedgerError", "Request", "STATES", "Settings", "SignatureError", "abandon", "add",
           "certificate", "check_certificate_file", "init", "list_requests", "locate", "open_home", "process",
           "process_all", "prune", "public_key", "retry", "show", "verify_certificate", "verify_signature", "versions",
           "withdraw"]
