"""`request add`: a request enters the ledger and its person goes behind the guard at once."""
from __future__ import annotations

import os
from dataclasses import dataclass

from ..runinfo import kill_point
from .home import Home, open_home
from .person import check_facts, check_name, new_names, person_hash, read_facts


@dataclass
class Added:
    id: str
    status: str
    merged: bool
    facts_not_kept: int = 0  # facts given for a verified request, which keeps no clear text (said since session 35)


def guard_target(request_id: str, name: str, aliases: list[str], facts: list[dict], inventory: list[dict] | None = None,
                 names_only: bool = False):
    """The guard's target for a request: the names always; the given facts and the located
    inventory's items (the ledger's `inventory["items"]`: question-answer pairs, whose answers the
    guard forbids) until verified."""
    from ..guard import QAPair, Target

    qa, sentences = [], []
    if not names_only:
        sentences = [f["fact"] for f in facts if "fact" in f]
        qa = [QAPair(question=f["question"], answer=f["answer"]) for f in facts if "question" in f]
        qa += [QAPair(question=it["question"], answer=it["answer"]) for it in (inventory or [])
               if it.get("source") == "probe"]
    return Target(id=request_id, subject=name, aliases=aliases, facts=sentences, qa=qa[:256])


def put_target(store, target) -> None:
    """Replace the target of the same id in the guard's `TargetStore` (remove + add: the store has no
    update). Its vectors are left to the first search that needs them unless this process has the
    embedder loaded (`TargetStore.add_many(defer=True)`): the name channel guards at once, and a
    command-line `request add` does not wait seconds for the embedder."""
    if any(t.id == target.id for t in store.list()):
        store.remove(target.id)
    store.add_many([target], defer=True)


def add(home: Home | str | os.PathLike | None, name: str, aliases: list[str] | None = None,
        facts: str | os.PathLike | list[dict] | None = None, reason: str | None = None) -> Added:
    """File a forget request for `name`; returns its id. A repeated request, or one whose name or an
    alias is a known request's name or alias, merges into that request."""
    home = open_home(home)
    name = check_name(name)
    if isinstance(aliases, str):  # iterated letter by letter ("alias: must not be empty") until session 36
        aliases = [aliases]
    aliases = new_names([check_name(a, "alias") for a in (aliases or [])], [name])
    facts = read_facts(facts) if isinstance(facts, (str, os.PathLike)) else check_facts(facts or [])
    keys = [person_hash(n, home.salt) for n in [name, *aliases]]
    guard = home.targets()
    with home.ledger() as led:
        existing = led.find_key(keys)
        if existing is not None:
            r = led.merge(existing, keys, [name, *aliases], facts)
            if r.status == "verified":  # the ledger holds no name any more; the guard may
                _more_names(guard, r.id, [name, *aliases])
                return Added(r.id, r.status, True, facts_not_kept=len(facts))
            return Added(r.id, guard_request(led, guard, r), True)
        rid = led.create(keys[0], keys, name, aliases, facts, reason)
        kill_point("received")  # in the ledger, not yet behind the guard: the next add or process guards it
        return Added(rid, guard_request(led, guard, led.get(rid)), False)


def guard_request(led, store, r) -> str:
    """Put request `r` (not verified) behind the guard, its inventory's answers too, and move it to
    `guarded` where it is `received` (just filed, or left there by an `add` killed between the ledger
    and the guard: stranded for good until session 37, as `process` takes guarded and located
    requests only) or `failed` (filed again). Idempotent, and safe beside another process doing the
    same: the move is made only from those states. Returns the request's status."""
    put_target(store, guard_target(r.id, r.name, r.aliases, r.facts, (r.inventory or {}).get("items")))
    led.transition(r.id, "guarded", only_from=("received", "failed"))
    return led.get(r.id).status


def _more_names(store, request_id: str, names: list[str]) -> None:
    """A verified request filed again under a name its guard target lacks: the target, which keeps
    the names only (docs/requests.md), takes it. Nothing where the guard let the person go once
    verified (`keep_guard_after_verified` false)."""
    t = next((t for t in store.list() if t.id == request_id), None)
    if t is None:
        return
    new = new_names(names, [t.subject, *t.aliases])
    if new:
        put_target(store, guard_target(request_id, t.subject, [*t.aliases, *new], [], names_only=True))
