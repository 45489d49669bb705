"""Ed25519 signatures: a home's key pair, and the check that needs the public key alone.

A signed document (a certificate) carries `"signature": {"alg": "ed25519", "public_key": HEX,
"value": HEX}`, computed over the document's canonical bytes without that field:
`json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()` (so the
file's indentation does not count). The signature proves that whoever held the private key wrote
the document as it stands; whoever can read that key can sign anything, so it is written readable
by its owner alone (mode 0600). Keys are PEM files (PKCS#8 private, SubjectPublicKeyInfo public),
which `openssl pkey` reads; a public key is also accepted as its 64 hex digits (raw Ed25519 bytes).

`cryptography` is imported inside the functions: `request add` opens a home and must stay quick.
"""
from __future__ import annotations

import json
import os
import re
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from .. import runinfo

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

ALG = "ed25519"
KEY_FILE = "signing.key"
PUBLIC_FILE = "signing.pub"
_HEX_KEY = re.compile(r"[0-9a-fA-F]{64}")


class SignatureError(ValueError):
    """A key or a signed file that cannot be read (one line naming the file)."""


def canonical(body: dict) -> bytes:
    """The bytes a signature covers (numpy numbers as the JSON a file would hold: `runinfo.json_default`)."""
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      default=runinfo.json_default).encode()


def public_hex(key: "Ed25519PrivateKey | Ed25519PublicKey") -> str:
    """A key's public half as 64 hex digits (what a signature names and `unlearn home key` prints)."""
    from cryptography.hazmat.primitives import serialization

    pub = key.public_key() if hasattr(key, "private_bytes") else key
    return pub.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw).hex()


def make_key_pair(key_path: Path, public_path: Path) -> "Ed25519PrivateKey":
    """A new key pair: the private key written in full with mode 0600, then linked into place only
    where no key is there yet (of two processes that race, both end with the first one's key), and
    the public key beside it."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    fd, tmp = tempfile.mkstemp(prefix=f".{key_path.name}.", suffix=".tmp", dir=key_path.parent)
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(pem)
            f.flush()
            os.fsync(f.fileno())
        try:
            os.link(tmp, key_path)
        except FileExistsError:
            key = read_private_key(key_path)
    finally:
        os.unlink(tmp)
    write_public_key(key, public_path)
    return key


def write_public_key(key: "Ed25519PrivateKey", path: Path) -> None:
    from cryptography.hazmat.primitives import serialization

    runinfo.write_bytes(path, key.public_key().public_bytes(serialization.Encoding.PEM,
                                                            serialization.PublicFormat.SubjectPublicKeyInfo))


def read_private_key(path: Path) -> "Ed25519PrivateKey":
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    try:
        key = serialization.load_pem_private_key(Path(path).read_bytes(), password=None)
    except OSError as e:
        raise SignatureError(f"{path}: unreadable ({e.strerror})") from None
    except (ValueError, TypeError):
        key = None
    if not isinstance(key, Ed25519PrivateKey):
        raise SignatureError(f"{path}: not an unencrypted Ed25519 private key (PEM)")
    return key


def read_public_key(spec: "str | os.PathLike | Ed25519PublicKey") -> "Ed25519PublicKey":
    """A public key from its 64 hex digits, or from a file holding them or a PEM public key; a key
    already read is returned as it is."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    if isinstance(spec, Ed25519PublicKey):
        return spec
    path = Path(spec)
    if isinstance(spec, str) and _HEX_KEY.fullmatch(spec.strip()) and not path.is_file():
        return Ed25519PublicKey.from_public_bytes(bytes.fromhex(spec.strip()))
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise SignatureError(f"{path}: no such key file (give a file, or the key's 64 hex digits)") from None
    except OSError as e:
        raise SignatureError(f"{path}: unreadable ({e.strerror})") from None
    text = data.strip()
    try:
        if text.startswith(b"-----BEGIN"):
            key = serialization.load_pem_public_key(text)
        elif _HEX_KEY.fullmatch(text.decode("ascii")):
            key = Ed25519PublicKey.from_public_bytes(bytes.fromhex(text.decode("ascii")))
        else:
            key = None
    except (ValueError, TypeError, UnicodeDecodeError):
        key = None
    if not isinstance(key, Ed25519PublicKey):
        raise SignatureError(f"{path}: not an Ed25519 public key (a PEM public key, or 64 hex digits)")
    return key


def sign(doc: dict, key: "Ed25519PrivateKey") -> dict:
    """`doc` with its "signature" field (one it had is replaced)."""
    body = {k: v for k, v in doc.items() if k != "signature"}
    return {**body, "signature": {"alg": ALG, "public_key": public_hex(key), "value": key.sign(canonical(body)).hex()}}


def check(doc: dict, key: "Ed25519PublicKey") -> tuple[bool, str]:
    """Whether `doc` is signed, as it stands, by `key`'s private half: (ok, why in a few words)."""
    from cryptography.exceptions import InvalidSignature

    sig = doc.get("signature")
    if not isinstance(sig, dict):
        return False, "no signature"
    if sig.get("alg") != ALG:
        return False, f"algorithm {str(sig.get('alg'))[:20]!r}, not {ALG}"
    want = public_hex(key)
    if sig.get("public_key") != want:
        return False, f"signed by another key ({str(sig.get('public_key'))[:16]}, not {want[:16]})"
    try:
        value = bytes.fromhex(sig.get("value") or "")
    except (TypeError, ValueError):
        return False, "malformed signature value"
    try:
        key.verify(value, canonical({k: v for k, v in doc.items() if k != "signature"}))
    except InvalidSignature:
        return False, "does not match the content (edited after signing)"
    return True, f"{ALG}, key {want[:16]}"
