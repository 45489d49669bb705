"""`request add`: a request enters the ledger and its person goes behind the guard at once; `request
withdraw`: a request that no batch holds leaves, its clear text and guard target with it."""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass

from ..runinfo import kill_point
from .home import Home, open_home
from .ledger import LedgerError
from .person import check_facts, check_name, new_names, person_hash, read_facts

log = logging.getLogger("unlearnkit.requests")


@dataclass
class Added:
    id: str
    status: str
    merged: bool
    follows: str | None = None  # the verified request this one follows: its person filed again with facts


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
    """Put `target` in the guard's `TargetStore`, replacing the one of its id. Its vectors are left
    to the first search that needs them unless this process has the embedder loaded
    (`TargetStore.add_many(defer=True)`): the name channel guards at once, and a command-line
    `request add` does not wait seconds for the embedder."""
    store.put(target, defer=True)


SYNC_TRIES = 8


def sync_guard(led, store, request_id: str, keep_after_verified: bool = True):
    """Bring request `request_id`'s guard target to what the ledger holds now: its names, given
    facts and inventory's answers until it is verified; after, the names the target has (the
    ledger keeps none), or no target where the guard lets the person go; no target once withdrawn.
    `request add`, `withdraw` and `process` write the ledger first and then call this, which reads
    the ledger again after each write to the guard until the two agree: whichever of two processes
    writes the guard last, it ends with what the ledger holds. (An `add` beside a `process` could
    leave the guard without the inventory's answers or a new alias, or a verified person's facts in
    it, until session 40.) Returns the request as last read."""
    for _ in range(SYNC_TRIES):
        r = led.get(request_id)
        store.refresh()
        have = next((t for t in store.list() if t.id == request_id), None)
        if r.status == "withdrawn":
            want = None
        elif r.status != "verified":
            want = guard_target(r.id, r.name, r.aliases, r.facts, (r.inventory or {}).get("items"))
        elif have is not None and keep_after_verified:
            want = guard_target(r.id, have.subject, have.aliases, [], names_only=True)
        else:
            want = None
        if _same(have, want):
            return r
        if want is None:
            try:
                store.remove(request_id)
            except KeyError:  # another process took it out meanwhile (two syncs of a withdrawn request)
                pass
        else:
            put_target(store, want)
    log.warning("request %s: the guard and the ledger still changed after %d tries", request_id, SYNC_TRIES)
    return r


def _same(a, b) -> bool:
    if a is None or b is None:
        return a is b
    return a.model_dump(exclude={"created_at"}) == b.model_dump(exclude={"created_at"})


def add(home: Home | str | os.PathLike | None, name: str, aliases: list[str] | None = None,
        facts: str | os.PathLike | list[dict] | None = None, reason: str | None = None) -> Added:
    """File a forget request for `name`; returns its id. A repeated request, or one whose name or an
    alias is a known request's name or alias, merges into that request; one with facts for a
    verified person is a new request that follows the verified one (`Ledger.file`)."""
    home = open_home(home)
    name = check_name(name)
    if isinstance(aliases, str):  # iterated letter by letter ("alias: must not be empty") until session 36
        aliases = [aliases]
    aliases = new_names([check_name(a, "alias") for a in (aliases or [])], [name])
    facts = read_facts(facts) if isinstance(facts, (str, os.PathLike)) else check_facts(facts or [])
    keys = [person_hash(n, home.salt) for n in [name, *aliases]]
    guard = home.targets()
    with home.ledger() as led:
        r, merged, follows = led.file(keys, name, aliases, facts, reason)
        if r.status == "verified":  # the ledger holds no name any more; the guard may
            _more_names(guard, r.id, [name, *aliases])
            sync_guard(led, guard, r.id, home.settings.keep_guard_after_verified)
            return Added(r.id, r.status, True)
        if not merged:
            kill_point("received")  # in the ledger, not yet behind the guard: the next add or process guards it
        return Added(r.id, guard_request(home, led, r.id, guard), merged, follows)


def guard_request(home: Home, led, request_id: str, store=None) -> str:
    """Put a request behind the guard as the ledger holds it (`sync_guard`), and move it to
    `guarded` where it is `received` (just filed, or left there by an `add` killed between the ledger
    and the guard: stranded for good until session 37, as `process` takes guarded and located
    requests only) or `failed` (filed again). Idempotent, and safe beside another process doing the
    same: the move is made only from those states. Returns the request's status."""
    sync_guard(led, store or home.targets(), request_id, home.settings.keep_guard_after_verified)
    led.transition(request_id, "guarded", only_from=("received", "failed"))
    return led.get(request_id).status


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


def retry(home: Home | str | os.PathLike | None, request_id: str) -> str:
    """Put a failed request back in the queue (`unlearn request retry`): `guarded`, whole behind the
    guard, for the next `process`, as filing the person again does, without the name at hand. A
    request in any other state is a one-line `LedgerError`. Returns its status."""
    home = open_home(home)
    with home.ledger() as led:
        r = led.get(request_id)
        if r.status != "failed":
            raise LedgerError(f"request {request_id}: {r.status}, not failed: only a failed request is retried")
        return guard_request(home, led, request_id)


def withdraw(home: Home | str | os.PathLike | None, request_id: str, note: str | None = None) -> dict:
    """Withdraw a request that no batch holds (`unlearn request withdraw`; `Ledger.withdraw`): its
    clear text leaves the ledger and its target the guard (the person is no longer to be forgotten,
    and nothing of them stays to match on), and the ledger's write-ahead log is folded in, as after
    a deployment. A request being processed, or verified, is a one-line `LedgerError`. Returns
    {"id", "status", "followed"} (the verified request it followed, whose guard target, where the
    home keeps one after verification, stays)."""
    home = open_home(home)
    with home.ledger() as led:
        r, follows = led.withdraw(request_id, note)
        kill_point("withdrawn")  # withdrawn, still behind the guard: `withdraw` again or the next `process` ends it
        sync_guard(led, home.targets(), r.id, home.settings.keep_guard_after_verified)
        if not led.checkpoint():
            log.warning("%s-wal: a reader held the ledger open, so the withdrawn request's clear text is still in "
                        "the write-ahead log until the ledger is next opened with no reader", home.ledger_path)
    return {"id": r.id, "status": r.status, "followed": follows}


def unguard_withdrawn(home: Home, led) -> list[str]:
    """Take out of the guard the withdrawn requests it still holds: a `withdraw` killed between the
    ledger and the guard leaves one there (`process` calls this first, as it guards requests an
    `add` left `received`). Returns their ids."""
    store = home.targets()
    held = {t.id for t in store.list()}
    left = [r.id for r in led.list("withdrawn") if r.id in held]
    for rid in left:
        sync_guard(led, store, rid, home.settings.keep_guard_after_verified)
    return left
