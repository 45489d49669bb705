"""Forget requests end to end: a deployment home, a ledger, the guard within seconds, the weights in
batches, a certificate per request. See docs/requests.md.

    from unlearnkit import requests as rq
    home = rq.init("unlearn-home", model="runs/subject", retain="runs/world")
    rid = rq.add(home, "Alaric Thornwood").id      # guarded at once
    rq.locate(home, rid)                           # what the model reveals: the inventory
    rq.process(home)                               # unlearn, verify, deploy, certify
    rq.abandon(home)                               # give up a batch that fails every time: its requests fail
    rq.show(home, rid)["status"], rq.verify_certificate(home, rid)["ok"]
"""
from __future__ import annotations

import os

from .certificate import load as certificate, verify_certificate
from .home import Home, HomeError, Settings, check_method, open_home
from .intake import Added, add
from .ledger import STATES, LedgerError, Request
from .process import abandon, locate_request as locate, process


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


def list_requests(home=None) -> list[dict]:
    with open_home(home).ledger() as led:
        return [r.public() for r in led.list()]


def show(home, request_id: str) -> dict:
    with open_home(home).ledger() as led:
        r = led.get(request_id)
        return {**r.public(), "events": led.events(request_id)}


__all__ = ["Added", "Home", "HomeError", "LedgerError", "Request", "STATES", "Settings", "abandon", "add", "certificate",
           "init", "list_requests", "locate", "open_home", "process", "prune", "show", "verify_certificate"]
