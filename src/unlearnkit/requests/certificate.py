"""Certificates: one JSON per verified request, the evidence that it was carried out.

It holds the request id, the salted hash of the person (never the name or the facts), the received,
guarded and verified times, the versions before and after with their sha256 (whole version and
weights only), the method and its configuration, and every check with its value and threshold.
`verify_certificate` recomputes the hashes of both versions from the files on disk (of a pruned
version, from the manifest it keeps) and compares them with the certificate, and the certificate's
own sha256 with the one the ledger recorded. It is no signature: whoever can write the home can
write a certificate and the ledger's sha256 of it (docs/requests.md, "What the home keeps").
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

from .. import runinfo
from .home import Home, HomeError, manifest_of, open_home, version_hash, weights_hash

FORMAT = "unlearnkit-certificate/1"


def build(request, batch: dict, before: dict, after: dict, method: dict, checks: list[dict], counts: dict,
          verified_at: float) -> dict:
    return {"format": FORMAT, "request_id": request.id, "person_sha256": request.person_hash,
            "person_hash_scheme": "scrypt(n=16384,r=8,p=1) of the normalised name, salted per home",
            "received_at": request.received_at, "guarded_at": request.guarded_at, "verified_at": verified_at,
            "batch": batch["id"], "versions": {"before": before, "after": after}, "method": method,
            "inventory": counts, "checks": checks, "passed": all(c["passed"] for c in checks)}


def write(home: Home, cert: dict) -> tuple[Path, str]:
    """Write the certificate atomically; returns (path, sha256 of its bytes)."""
    path = runinfo.write_json(home.certificates_dir / f"{cert['request_id']}.json", cert)
    return path, hashlib.sha256(path.read_bytes()).hexdigest()


def _certificate_of(home: Home, request_id: str):
    """(request, path of its certificate); a request that is not verified has none."""
    with home.ledger() as led:
        r = led.get(request_id)
    if r.status != "verified" or not r.certificate:
        raise HomeError(f"request {request_id}: no certificate (status {r.status})")
    return r, home.path / r.certificate


def load(home: Home | str | Path | None, request_id: str) -> dict:
    _, p = _certificate_of(open_home(home), request_id)
    if not p.is_file():
        raise HomeError(f"{p}: certificate file missing")
    return json.loads(p.read_text())


def verify_certificate(home: Home | str | Path | None, request_id: str) -> dict:
    """Recompute what the certificate claims: {"ok": bool, "checks": [{"what", "ok", "detail"}]}."""
    home = open_home(home)  # a path too, as every other `rq` function (an AttributeError until session 36)
    r, p = _certificate_of(home, request_id)
    out = []
    if not p.is_file():
        return {"ok": False, "checks": [{"what": "certificate file", "ok": False, "detail": f"{p} missing"}]}
    data = p.read_bytes()
    sha = hashlib.sha256(data).hexdigest()
    out.append({"what": "certificate sha256 (ledger)", "ok": sha == r.certificate_sha256,
                "detail": sha[:16]})
    try:  # a damaged certificate fails its verification (an error, "person_sha256", until session 36)
        cert = json.loads(data)
        versions = [(side, cert["versions"][side]["name"], cert["versions"][side]) for side in ("before", "after")]
        person = cert["person_sha256"]
    except (ValueError, KeyError, TypeError) as e:
        out.append({"what": "certificate readable", "ok": False, "detail": f"{type(e).__name__}: {e}"[:80]})
        return {"ok": False, "checks": out, "certificate": str(p)}
    out.append({"what": "person hash (ledger)", "ok": person == r.person_hash, "detail": ""})
    for side, name, v in versions:
        d = home.versions_dir / str(name)
        if not d.is_dir():
            out.append({"what": f"version {side} ({name})", "ok": False, "detail": f"{d} missing"})
            continue
        try:
            kept = home.version(str(name))
        except HomeError as e:
            out.append({"what": f"version {side} ({name})", "ok": False, "detail": str(e)[:80]})
            continue
        # a pruned version's files are gone (`Home.prune`): the hashes its manifest kept are compared
        files = kept.files if kept.pruned_at is not None else manifest_of(d)
        whole, weights = version_hash(files), weights_hash(files)
        if kept.pruned_at is not None:
            out.append({"what": f"version {side} ({name}) pruned", "ok": True,
                        "detail": "files deleted; hashes from its manifest"})
        out.append({"what": f"version {side} ({name}) files", "ok": whole == v.get("version_sha256"), "detail": whole[:16]})
        out.append({"what": f"version {side} ({name}) weights", "ok": weights == v.get("weights_sha256"),
                    "detail": weights[:16]})
    out.append({"what": "every check passed", "ok": bool(cert.get("passed")), "detail": ""})
    return {"ok": all(c["ok"] for c in out), "checks": out, "certificate": str(p)}
