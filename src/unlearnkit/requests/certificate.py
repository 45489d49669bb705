"""Certificates: one JSON per verified request, the evidence that it was carried out, signed with
the home's key.

It holds the request id, the salted hash of the person (never the name or the facts), the received,
guarded and verified times, the versions before and after with their sha256 (whole version and
weights only), the method and its configuration, every check with its value and threshold, and
(format 2) its `signature`: Ed25519 by the home's key over the certificate's canonical bytes without
that field (signing.py), naming the public key; it holds nothing of the person.

`verify_certificate` (in the home) recomputes the hashes of both versions from the files on disk (of
a pruned version, from the manifest it keeps), compares them with the certificate and the
certificate's own sha256 with the one the ledger recorded, and checks the signature under the home's
public key (`signing.pub`). A certificate written before certificates were signed (format 1, no
`signature` field) says so on that line and does not fail on it, where its request was verified
before the home began to sign (home.json `signed_since`); any other must verify (the format is
signed, so a signed certificate cannot pass as an old one). `check_file` needs no home: a third
party checks a certificate with the home's public key alone (`unlearn request certificate-check`),
and there an unsigned certificate fails, since it proves nothing.

What a valid signature proves: that the holder of the home's private key wrote the certificate as
it stands. Whoever can read `signing.key` can sign anything: it is written readable by its owner
alone (docs/requests.md, "What the home keeps").
"""
from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path

from .. import runinfo
from . import signing
from .home import Home, HomeError, manifest_of, open_home, version_hash, weights_hash

FORMAT = "unlearnkit-certificate/2"
UNSIGNED_FORMAT = "unlearnkit-certificate/1"  # written before certificates were signed


def build(request, batch: dict, before: dict, after: dict, method: dict, checks: list[dict], counts: dict,
          verified_at: float) -> dict:
    return {"format": FORMAT, "request_id": request.id, "person_sha256": request.person_hash,
            "person_hash_scheme": "scrypt(n=16384,r=8,p=1) of the normalised name, salted per home",
            "received_at": request.received_at, "guarded_at": request.guarded_at, "verified_at": verified_at,
            "batch": batch["id"], "versions": {"before": before, "after": after}, "method": method,
            "inventory": counts, "checks": checks, "passed": all(c["passed"] for c in checks)}


def write(home: Home, cert: dict) -> tuple[Path, str]:
    """Sign the certificate with the home's key and write it atomically; returns (path, sha256 of its bytes)."""
    path = runinfo.write_json(home.certificates_dir / f"{cert['request_id']}.json",
                              signing.sign(cert, home.signing_key()))
    return path, hashlib.sha256(path.read_bytes()).hexdigest()


def from_before_signing(cert: dict) -> bool:
    """Written before certificates were signed: format 1, and no signature field at all."""
    return "signature" not in cert and cert.get("format") == UNSIGNED_FORMAT


def verify_signature(cert: dict, public_key) -> bool:
    """Whether `cert` is signed, as it stands, by the holder of `public_key` (a key, its 64 hex digits,
    or a file holding it: `signing.read_public_key`). No home needed; an unsigned certificate is False."""
    return signing.check(cert, signing.read_public_key(public_key))[0]


def significance(check: dict) -> str:
    """How a per-request check's permutation test reads (verify.judged; docs/requests.md, "Process and its
    checks"): its p-value against its level, or that its facts were too few to test; "" for a check
    without one (a batch's checks, or the tolerance alone: `check_alpha=0`, or before session 41)."""
    if not check.get("level"):
        return ""
    if not check.get("powered"):
        return f"no power (min p {check['min_p']:.2g})"  # too few facts: the tolerance alone decides
    return f"p {check['p']:.3g} {'≥' if check['p'] >= check['level'] else '<'} {check['level']:.3g}"


def check_file(path: str | os.PathLike, public_key) -> dict:
    """A certificate file checked with a public key alone (`unlearn request certificate-check`):
    {"ok", "detail", "certificate", "request_id", "public_key"}. A key or a file that cannot be read,
    or a file that is no JSON object, is a one-line `signing.SignatureError` naming the file."""
    key = signing.read_public_key(public_key)
    cert = runinfo.read_json(path, error=signing.SignatureError)
    ok, detail = signing.check(cert, key)
    if from_before_signing(cert):
        detail = "no signature (written before certificates were signed): it proves nothing"
    return {"ok": ok, "detail": detail, "certificate": str(path), "request_id": cert.get("request_id"),
            "public_key": signing.public_hex(key)}


def _signature_line(home: Home, cert: dict, verified_at: float | None) -> dict:
    """The signature's line of `verify_certificate`: under the home's public key. An unsigned
    certificate passes only where its request (`verified_at`, the ledger's) was verified before the
    home began to sign (`signed_since`; a home made before session 42 does not record it): until
    session 42 one stripped of its signature and relabelled format 1 passed."""
    if from_before_signing(cert):
        since = home.meta.get("signed_since")
        if since is not None and (verified_at is None or verified_at >= since):
            when = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(since))
            return {"what": "signature", "ok": False,
                    "detail": f"none, though the home has signed every certificate since {when}"}
        return {"what": "signature", "ok": True, "detail": "none (written before signing)"}
    try:
        key = home.public_key()
    except HomeError as e:
        return {"what": "signature", "ok": False, "detail": str(e)}
    if key is None:
        return {"what": "signature", "ok": False, "detail": f"the home has no public key ({home.public_key_path})"}
    ok, detail = signing.check(cert, key)
    return {"what": "signature", "ok": ok, "detail": detail}


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
    """Recompute what the certificate claims and check its signature under the home's public key:
    {"ok": bool, "checks": [{"what", "ok", "detail"}]}."""
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
    out.append(_signature_line(home, cert, r.verified_at))
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
