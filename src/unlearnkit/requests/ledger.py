"""The ledger: every forget request and every state change, in SQLite.

WAL mode (readers never block the writer, so `request add` and `request list` work while `process`
runs) with a busy timeout; every state change is one transaction that also appends to `events`, so
a process killed at any point leaves either the old state or the new one.

States: received → guarded → located → processing → verified | failed; withdrawn, from any state
but processing and verified (`Ledger.withdraw`). A batch that dies while its
requests are `processing` is rolled back (its requests return to `located`) or finished by the next
`process` (batches.stage says how far it got).
"""
from __future__ import annotations

import contextlib
import json
import sqlite3
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from .person import new_names

STATES = ("received", "guarded", "located", "processing", "verified", "failed", "withdrawn")
TRANSITIONS = {
    "received": {"guarded", "failed", "withdrawn"},
    "guarded": {"located", "processing", "failed", "withdrawn"},
    "located": {"located", "processing", "failed", "withdrawn"},
    "processing": {"verified", "failed", "located", "guarded"},  # guarded: it gained names or facts mid-batch
    "failed": {"guarded", "withdrawn"},  # a repeated request reopens a failed one
    "verified": set(),
    "withdrawn": set(),  # its clear text is gone: the person filed again is a new request
}
WAITING = ("guarded", "located")  # the states a batch takes a request from
CLEAR_TEXT = ("name", "aliases", "facts", "reason", "inventory")  # the columns that hold the person in clear
BUSY_MS = 30000

SCHEMA = """
CREATE TABLE IF NOT EXISTS requests (
    id TEXT PRIMARY KEY,
    person_hash TEXT NOT NULL,
    name TEXT, aliases TEXT, facts TEXT, reason TEXT, inventory TEXT,
    status TEXT NOT NULL,
    received_at REAL NOT NULL, guarded_at REAL, located_at REAL, verified_at REAL, failed_at REAL,
    failure TEXT, batch TEXT, counts TEXT NOT NULL DEFAULT '{}', metrics TEXT,
    certificate TEXT, certificate_sha256 TEXT, updated_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS keys (key_hash TEXT PRIMARY KEY, request_id TEXT NOT NULL REFERENCES requests(id));
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, request_id TEXT, batch TEXT, at REAL NOT NULL,
    from_status TEXT, to_status TEXT, detail TEXT
);
CREATE TABLE IF NOT EXISTS batches (
    id TEXT PRIMARY KEY, stage TEXT NOT NULL, source_version TEXT NOT NULL, new_version TEXT,
    request_ids TEXT NOT NULL, method TEXT, results TEXT, started_at REAL NOT NULL, finished_at REAL
);
"""
BATCH_STAGES = ("started", "trained", "versioned", "deploying", "deployed", "rejected", "abandoned")


class LedgerError(ValueError):
    """An unknown request id or a state change the ledger does not allow (one line)."""


class UnknownRequest(LedgerError):
    """No request has this id."""


@dataclass
class Request:
    id: str
    person_hash: str
    status: str
    name: str | None
    aliases: list[str]
    facts: list[dict]
    reason: str | None
    inventory: list[dict] | None
    received_at: float
    guarded_at: float | None
    located_at: float | None
    verified_at: float | None
    failed_at: float | None
    failure: str | None
    batch: str | None
    counts: dict
    metrics: dict | None
    certificate: str | None
    certificate_sha256: str | None

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> "Request":
        j = lambda x, d: json.loads(x) if x else d  # noqa: E731
        return cls(id=row["id"], person_hash=row["person_hash"], status=row["status"], name=row["name"],
                   aliases=j(row["aliases"], []), facts=j(row["facts"], []), reason=row["reason"],
                   inventory=j(row["inventory"], None), received_at=row["received_at"], guarded_at=row["guarded_at"],
                   located_at=row["located_at"], verified_at=row["verified_at"], failed_at=row["failed_at"],
                   failure=row["failure"], batch=row["batch"], counts=j(row["counts"], {}),
                   metrics=j(row["metrics"], None), certificate=row["certificate"],
                   certificate_sha256=row["certificate_sha256"])

    def public(self) -> dict:
        """What `show --json` and the server print."""
        return {k: getattr(self, k) for k in ("id", "status", "person_hash", "name", "aliases", "reason", "received_at",
                                              "guarded_at", "located_at", "verified_at", "failed_at", "failure",
                                              "batch", "counts", "metrics", "certificate")}


CHECKPOINT_S = 30.0  # how long a checkpoint waits for readers to let go of the WAL


class Ledger:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.db = sqlite3.connect(self.path, timeout=BUSY_MS / 1000, isolation_level=None)
        self.db.row_factory = sqlite3.Row
        self.db.execute(f"PRAGMA busy_timeout={BUSY_MS}")
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=FULL")
        self.db.execute("PRAGMA secure_delete=ON")  # dropped clear text is zeroed, not left in free pages
        with self.tx() as c:
            for statement in SCHEMA.split(";"):
                if statement.strip():
                    c.execute(statement)

    def close(self) -> None:
        self.db.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    @contextlib.contextmanager
    def tx(self):
        """One write transaction (BEGIN IMMEDIATE: the write lock is taken up front, so two writers
        queue on the busy timeout instead of failing on upgrade)."""
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield self.db
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")

    # -- reads -------------------------------------------------------------------------------------
    def get(self, request_id: str) -> Request:
        return _get(self.db, request_id)

    def list(self, status: str | tuple[str, ...] | None = None) -> list[Request]:
        if status is None:
            rows = self.db.execute("SELECT * FROM requests ORDER BY received_at, id").fetchall()
        else:
            st = (status,) if isinstance(status, str) else tuple(status)
            rows = self.db.execute(f"SELECT * FROM requests WHERE status IN ({','.join('?' * len(st))}) "
                                   "ORDER BY received_at, id", st).fetchall()
        return [Request.from_row(r) for r in rows]

    def events(self, request_id: str) -> list[dict]:
        rows = self.db.execute("SELECT * FROM events WHERE request_id=? ORDER BY seq", (request_id,)).fetchall()
        return [dict(r) for r in rows]

    def batch(self, batch_id: str) -> dict | None:
        row = self.db.execute("SELECT * FROM batches WHERE id=?", (batch_id,)).fetchone()
        return _batch(row) if row else None

    def batches(self) -> list[dict]:
        rows = self.db.execute("SELECT * FROM batches ORDER BY started_at").fetchall()
        return [_batch(r) for r in rows]

    def open_batches(self) -> list[dict]:
        rows = self.db.execute("SELECT * FROM batches WHERE stage NOT IN ('deployed','rejected','abandoned') "
                               "ORDER BY started_at").fetchall()
        return [_batch(r) for r in rows]

    # -- writes --------------------------------------------------------------------------------------
    def file(self, key_hashes: list[str], name: str, aliases: list[str], facts: list[dict],
             reason: str | None) -> tuple[Request, bool, str | None]:
        """File a request for a person (`key_hashes`: the salted hashes of their names, the first the
        person's): merged into the request any of them already names, adding aliases and facts, else
        created `received`. A verified request keeps no clear text: filed again with facts, a new
        request follows it, which the person's names name from then on (until session 40 the facts
        were dropped, and nothing was done with them); filed again without, it takes the names' keys
        alone. The look-up and the write are one transaction: two processes filing the same person at
        once get one request (they could get two until session 40). Returns (request, merged, the
        verified request a new one follows or None)."""
        with self.tx() as c:
            rid = next((row[0] for k in key_hashes
                        if (row := c.execute("SELECT request_id FROM keys WHERE key_hash=?", (k,)).fetchone())), None)
            follows = None
            if rid is not None and facts and c.execute("SELECT status FROM requests WHERE id=?",
                                                       (rid,)).fetchone()[0] == "verified":
                follows, rid = rid, None
            merged = rid is not None
            if merged:
                r = Request.from_row(c.execute("SELECT * FROM requests WHERE id=?", (rid,)).fetchone())
                if r.status != "verified":
                    al = r.aliases + new_names([name, *aliases], [r.name, *r.aliases])  # one name, however written
                    fa = r.facts + [f for f in facts if f not in r.facts]
                    counts = {**r.counts, "aliases": len(al), "facts": len(fa), "merged": r.counts.get("merged", 0) + 1}
                    c.execute("UPDATE requests SET aliases=?, facts=?, counts=?, updated_at=? WHERE id=?",
                              (json.dumps(al), json.dumps(fa), json.dumps(counts), time.time(), rid))
                _event(c, rid, None, r.status, r.status, {"merged": True, "aliases": 1 + len(aliases), "facts": len(facts)})
            else:
                rid, now = "r-" + uuid.uuid4().hex[:12], time.time()
                c.execute("INSERT INTO requests (id, person_hash, name, aliases, facts, reason, status, received_at, "
                          "counts, updated_at) VALUES (?,?,?,?,?,?,?,?,?,?)",
                          (rid, key_hashes[0], name, json.dumps(aliases), json.dumps(facts), reason, "received", now,
                           json.dumps({"aliases": len(aliases), "facts": len(facts)}), now))
                _event(c, rid, None, None, "received", {"reason_given": reason is not None,
                                                        **({"follows": follows} if follows else {})})
            if follows:  # the person's names name the new request from now on
                c.execute("UPDATE keys SET request_id=? WHERE request_id=?", (rid, follows))
            for k in key_hashes:
                c.execute("INSERT OR IGNORE INTO keys VALUES (?,?)", (k, rid))
        return self.get(rid), merged, follows

    def transition(self, request_id: str, to: str, only_from: tuple[str, ...] | None = None, **fields) -> bool:
        """Move a request to state `to` (checked against TRANSITIONS), setting `fields` in the same
        transaction; the time column of the new state is set too. With `only_from`, a request in
        another state is left as it is (another process moved it first): False."""
        with self.tx() as c:
            if only_from is not None:
                row = c.execute("SELECT status FROM requests WHERE id=?", (request_id,)).fetchone()
                if row is not None and row[0] not in only_from:
                    return False
            _transition(c, request_id, to, fields)
        return True

    def transition_many(self, changes: list[tuple[str, str, dict]], batch_update: tuple[str, dict] | None = None,
                        recheck=None) -> None:
        """Several state changes (and a batch update) as one transaction. With `recheck`, each
        request is read again inside the transaction and `recheck(request, to, fields)` returns the
        change to make: another process may have changed the request since the caller read it."""
        with self.tx() as c:
            for rid, to, fields in changes:
                if recheck is not None:
                    row = c.execute("SELECT * FROM requests WHERE id=?", (rid,)).fetchone()
                    if row is not None:
                        to, fields = recheck(Request.from_row(row), to, fields)
                _transition(c, rid, to, fields)
            if batch_update is not None:
                _update_batch(c, *batch_update)

    def withdraw(self, request_id: str, note: str | None = None) -> tuple[Request, str | None]:
        """Withdraw a request that no batch holds (`unlearn request withdraw`): the person asked to
        stop, or the request is unfounded. One transaction: the clear text (name, aliases, facts,
        reason, inventory) is set to NULL, as a verified request's is; the person's name keys go back
        to the verified request it follows (`file`), or are deleted, so that the person filed again
        is a new request; `failure` says "withdrawn" (with `note`). A request being processed is
        refused (its batch ends it), and so is a verified one (the weights have forgotten; nothing is
        left to withdraw). Returns (the request, the verified request it followed or None); a request
        already withdrawn is returned as it is."""
        with self.tx() as c:
            r = _get(c, request_id)
            if r.status == "withdrawn":
                return r, None
            if r.status == "processing":
                raise LedgerError(f"request {request_id}: in batch {r.batch}, being processed: withdraw it once "
                                  f"the batch has ended (`unlearn request process` finishes it)")
            if r.status == "verified":
                raise LedgerError(f"request {request_id}: verified, its person already forgotten in the weights: "
                                  f"nothing is left to withdraw")
            follows = next((json.loads(e[0]).get("follows") for e in c.execute(
                "SELECT detail FROM events WHERE request_id=? AND to_status='received' ORDER BY seq LIMIT 1",
                (request_id,))), None)
            if follows is not None:
                c.execute("UPDATE keys SET request_id=? WHERE request_id=?", (follows, request_id))
            else:
                c.execute("DELETE FROM keys WHERE request_id=?", (request_id,))
            _transition(c, request_id, "withdrawn", {
                **dict.fromkeys(CLEAR_TEXT), "batch": None,
                "failure": "withdrawn" + (f": {note}" if note else "")})
            return _get(c, request_id), follows

    def start_batch(self, batch_id: str, source_version: str, new_version: str, request_ids: list[str],
                    method: str, results: dict | None = None) -> list[str]:
        """A new batch (its `results`: what it was started with) and its requests -> processing, as
        one transaction. A request that left the waiting states since the caller read it (withdrawn
        meanwhile by another process) is left out; returns the ids taken. With none left, no batch
        is made."""
        with self.tx() as c:
            ids = [rid for rid in request_ids if _get(c, rid).status in WAITING]
            if not ids:
                return []
            c.execute("INSERT INTO batches (id, stage, source_version, new_version, request_ids, method, results, "
                      "started_at) VALUES (?,?,?,?,?,?,?,?)",
                      (batch_id, "started", source_version, new_version, json.dumps(ids), method,
                       json.dumps(results) if results is not None else None, time.time()))
            for rid in ids:
                _transition(c, rid, "processing", {"batch": batch_id})
        return ids

    def checkpoint(self, timeout: float = CHECKPOINT_S) -> bool:
        """Fold the WAL into the database and truncate it, so no old page (with clear text dropped
        since) stays in the -wal file. A reader holding the ledger open keeps the pages it may read:
        the checkpoint is tried again until `timeout` seconds have passed; False if it never went
        through (its busy result was ignored, and the clear text stayed in the -wal file without a
        word, until session 36). SQLite waits for the readers itself, up to the busy timeout, which
        is `timeout` here (it was the ledger's 30 s whatever `timeout` said, until session 39)."""
        deadline = time.monotonic() + timeout
        try:
            while True:
                left = max(0.0, deadline - time.monotonic())
                self.db.execute(f"PRAGMA busy_timeout={int(left * 1000)}")
                busy, *_ = self.db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
                if not busy:
                    return True
                if time.monotonic() >= deadline:
                    return False
                time.sleep(min(0.2, max(0.0, deadline - time.monotonic())))
        finally:
            self.db.execute(f"PRAGMA busy_timeout={BUSY_MS}")

    def update_batch(self, batch_id: str, **fields) -> None:
        with self.tx() as c:
            _update_batch(c, batch_id, fields)


COLUMNS = {"verified_at", "guarded_at", "name", "aliases", "facts", "reason", "inventory", "failure", "batch", "counts", "metrics", "certificate",
           "certificate_sha256"}
TIME_COLUMN = {"guarded": "guarded_at", "located": "located_at", "verified": "verified_at", "failed": "failed_at"}


def _get(c, request_id: str) -> Request:
    row = c.execute("SELECT * FROM requests WHERE id=?", (request_id,)).fetchone()
    if row is None:
        raise UnknownRequest(f"no request with id {request_id[:64]!r}")
    return Request.from_row(row)


def _event(c, rid, batch, frm, to, detail=None):
    c.execute("INSERT INTO events (request_id, batch, at, from_status, to_status, detail) VALUES (?,?,?,?,?,?)",
              (rid, batch, time.time(), frm, to, json.dumps(detail or {})))


def _transition(c, rid: str, to: str, fields: dict) -> None:
    row = c.execute("SELECT status, batch FROM requests WHERE id=?", (rid,)).fetchone()
    if row is None:
        raise LedgerError(f"no request with id {rid[:64]!r}")
    frm = row[0]
    if to not in TRANSITIONS[frm]:
        raise LedgerError(f"request {rid}: cannot go from {frm} to {to}")
    if to == "verified" and not fields.get("certificate"):
        raise LedgerError(f"request {rid}: verified needs its certificate")
    bad = set(fields) - COLUMNS
    if bad:
        raise LedgerError(f"ledger: no column {sorted(bad)[0]!r}")
    now = time.time()
    sets = {k: (json.dumps(v) if isinstance(v, (dict, list)) else v) for k, v in fields.items()}
    sets["status"], sets["updated_at"] = to, now
    if to in TIME_COLUMN:
        sets.setdefault(TIME_COLUMN[to], now)
    c.execute(f"UPDATE requests SET {', '.join(f'{k}=?' for k in sets)} WHERE id=?", (*sets.values(), rid))
    _event(c, rid, fields.get("batch", row[1]), frm, to, {"failure": fields["failure"]} if "failure" in fields else None)


def _update_batch(c, batch_id: str, fields: dict) -> None:
    if "stage" in fields and fields["stage"] not in BATCH_STAGES:
        raise LedgerError(f"batch stage {fields['stage']!r}")
    sets = {k: (json.dumps(v) if isinstance(v, (dict, list)) else v) for k, v in fields.items()}
    if fields.get("stage") in ("deployed", "rejected", "abandoned"):
        sets["finished_at"] = time.time()
    c.execute(f"UPDATE batches SET {', '.join(f'{k}=?' for k in sets)} WHERE id=?", (*sets.values(), batch_id))
    c.execute("INSERT INTO events (request_id, batch, at, from_status, to_status, detail) VALUES (NULL,?,?,?,?,?)",
              (batch_id, time.time(), None, fields.get("stage"), json.dumps({})))


def _batch(row) -> dict:
    d = dict(row)
    d["request_ids"] = json.loads(d["request_ids"])
    d["results"] = json.loads(d["results"]) if d.get("results") else None
    return d
