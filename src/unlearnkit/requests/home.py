"""A deployment home: the directory that holds a deployed model's versions, its guard, the ledger of
forget requests and their certificates.

```
<home>/home.json            format, base model, settings, the per-home salt, the base utility
<home>/current              the deployed version's name (one line), replaced atomically (os.replace)
<home>/versions/v0000/      immutable checkpoint directories, each with MANIFEST.json (sha256 per file)
<home>/guard/               the guard (unlearnkit.guard.Guard) every request goes behind at once
<home>/retain/              the retain pool as a world directory (retain.jsonl)
<home>/ledger.sqlite        the ledger (ledger.py)
<home>/certificates/ID.json one certificate per verified request, signed with the home's key
<home>/signing.key          the home's Ed25519 private key (PEM, mode 0600: whoever reads it can sign)
<home>/signing.pub          its public key (PEM), what a third party checks certificates with
<home>/runs/BATCH/          working directories of `process` (batch world, unlearning run)
```

A version directory is built under a temporary name and renamed into place only once its manifest
is written, so a half-written version never carries a version name; a version whose files do not
match its manifest (a corrupted or truncated file) is refused by `check_version` and never served.
"""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import secrets
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from .. import DEFAULT_METHOD, runinfo
from ..runinfo import file_sha256

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

FORMAT = "unlearnkit-home"
MANIFEST = "MANIFEST.json"
VERSION_RE = re.compile(r"v\d{4}")
ENV_HOME = "UNLEARN_HOME"
DEFAULT_HOME = "unlearn-home"


class HomeError(ValueError):
    """A problem with a home directory or one of its versions (one line)."""


class Settings(BaseModel):
    """A home's settings (home.json "settings"); every threshold a verification uses is here, each
    validated where it enters (`Settings.parse`).

    Why these values: see docs/requests.md ("Process and its checks")."""
    model_config = ConfigDict(extra="forbid", frozen=True)

    method: str = Field(DEFAULT_METHOD, description="unlearning method of `request process`")
    sam: float = Field(0.003, ge=0, lt=1, description="sharpness-aware steps (train.TrainConfig.sam): versions "
                                                      "must resist relearning")
    guard_action: str = Field("pseudonymise", description="answers like a model that never saw the person "
                                                          "(docs/guard.md)")
    keep_guard_after_verified: bool = Field(True, description="names only (docs/requests.md, 'Data minimisation')")
    repair_rounds: int = Field(4, ge=0, description="repair rounds of a batch's calibrated run, per request, on "
                                                    "the facts it left reproduced (calibrate.surviving); a second "
                                                    "takes the facts a first brought back, a third a person a "
                                                    "second left past the MIA check, a fourth the facts a third "
                                                    "brought back (docs/requests.md)")
    lift_rounds: int = Field(1, ge=0, description="lift rounds after the repair rounds: a person the run left "
                                                 "below their strangers (the MIA check's AUC under 0.5 - "
                                                 "mia_tolerance) has the facts it disfavours trained back to the "
                                                 "strangers' level (docs/requests.md)")
    max_batch: int = Field(4, ge=0, description="most requests one `request process` takes as a batch (0: every "
                                               "waiting one); the rest wait for the next. Twelve at once cost "
                                               "more utility than the floor allows (docs/requests.md, 'Figures')")
    n_strangers: int = Field(8, ge=1, description="invented names probed beside the person")
    retain_sample: int = Field(200, ge=0, description="retain-pool records added to every batch's retain set")
    utility_records: int = Field(100, ge=1, description="fixed retain-pool slice that utility is measured on")
    utility_floor: float = Field(0.9, ge=0, le=1, description="x the base model's utility, for every deployed "
                                                              "version")
    answer_tolerance: float = Field(0.1, ge=0, le=1, description="person's answer rate - strangers' answer rate (also the repair rounds' tolerance)")
    mia_tolerance: float = Field(0.3, ge=0, le=0.5, description="|AUC(person vs strangers) - 0.5|")
    check_alpha: float = Field(0.05, ge=0, lt=1, description="how often a batch unlearned exactly may fail a "
                                                             "request's answers or MIA check by chance: beyond its "
                                                             "tolerance, a check still passes where its permutation test's "
                                                             "p-value is at least this / the batch's tests (0: the "
                                                             "tolerances alone)")
    relearn_max: float = Field(0.5, ge=0, description="recovery under relearning (attacks.relearn, source=facts)")
    quantize_max: float = Field(0.3, ge=0, description="recovery under 4-bit round-to-nearest quantization")
    relearn_steps: int = Field(20, ge=1, description="steps of the relearning check")
    seed: int = 0

    @field_validator("guard_action")
    @classmethod
    def _action(cls, v):  # a multi-line error from the guard's own settings until session 36
        from ..guard import ACTIONS

        if v not in ACTIONS:
            raise ValueError(f"choose one of {', '.join(ACTIONS)}")
        return v

    @classmethod
    def parse(cls, where: str = "home setting", **values) -> "Settings":
        """Validated settings, or a one-line ValueError naming the setting and what is valid."""
        from ..methods.registry import describe

        try:
            return cls(**values)
        except ValidationError as e:
            raise ValueError(describe(where, cls, e)) from None


def open_home(home: "str | os.PathLike | Home | None" = None) -> "Home":
    """`home` as a `Home`: one already open, or a path (None: `default_home`)."""
    return home if isinstance(home, Home) else Home(home)


def check_method(name: str, what: str = "method") -> str:
    """`name` if it is a registered method, else a one-line ValueError naming `what` (imports the
    methods, and torch, only when called: reading a home's settings must not)."""
    from ..methods import get_method

    try:
        get_method(name)
    except ValueError as e:
        raise ValueError(f"{what}: {e}") from None
    return name


def default_home() -> Path:
    return Path(os.environ.get(ENV_HOME) or DEFAULT_HOME)


def manifest_of(directory: Path) -> dict[str, str]:
    """{relative path: sha256} of every file under `directory` but the manifest itself."""
    return {str(p.relative_to(directory)): file_sha256(p) for p in sorted(directory.rglob("*"))
            if p.is_file() and p.name != MANIFEST}


def version_hash(files: dict[str, str]) -> str:
    """One sha256 for a version: over its sorted (path, sha256) pairs."""
    return hashlib.sha256(json.dumps(sorted(files.items())).encode()).hexdigest()


def weights_hash(files: dict[str, str]) -> str:
    """sha256 over the weight files only (*.safetensors, *.bin), so a tokenizer edit does not count."""
    w = {k: v for k, v in files.items() if k.endswith((".safetensors", ".bin"))}
    return hashlib.sha256(json.dumps(sorted(w.items())).encode()).hexdigest()


@dataclass
class Version:
    name: str
    path: Path
    files: dict[str, str] = field(default_factory=dict)
    parent: str | None = None
    pruned_at: float | None = None  # its files deleted (`Home.prune`); the manifest keeps their hashes
    created: float | None = None

    @property
    def hash(self) -> str:
        return version_hash(self.files)

    @property
    def weights(self) -> str:
        return weights_hash(self.files)

    def summary(self) -> dict:
        return {"name": self.name, "version_sha256": self.hash, "weights_sha256": self.weights, "parent": self.parent}


class Home:
    """A deployment home directory. `Home(path)` opens an existing one; `Home.init` creates one."""

    def __init__(self, path: str | os.PathLike | None = None):
        self.path = Path(path) if path is not None else default_home()
        meta = self.path / "home.json"
        if not meta.is_file():
            raise HomeError(f"{self.path}: not a deployment home (no home.json); create one with `unlearn home init`")
        try:
            self.meta = json.loads(meta.read_text())
        except ValueError as e:
            raise HomeError(f"{meta}: unreadable ({e})") from None
        if self.meta.get("format") != FORMAT:
            raise HomeError(f"{meta}: not an unlearnkit home (format {self.meta.get('format')!r})")
        try:
            self.settings = Settings.parse(f"{meta}: setting", **{k: v for k, v in self.meta.get("settings", {}).items()
                                                                    if k in Settings.model_fields})
        except ValueError as e:
            raise HomeError(str(e)) from None

    # -- layout ----------------------------------------------------------------------------------
    @property
    def versions_dir(self) -> Path:
        return self.path / "versions"

    @property
    def guard_dir(self) -> Path:
        return self.path / "guard"

    @property
    def retain_dir(self) -> Path:
        return self.path / "retain"

    @property
    def ledger_path(self) -> Path:
        return self.path / "ledger.sqlite"

    @property
    def certificates_dir(self) -> Path:
        return self.path / "certificates"

    @property
    def runs_dir(self) -> Path:
        return self.path / "runs"

    @property
    def signing_key_path(self) -> Path:
        from .signing import KEY_FILE

        return self.path / KEY_FILE

    @property
    def public_key_path(self) -> Path:
        from .signing import PUBLIC_FILE

        return self.path / PUBLIC_FILE

    @property
    def salt(self) -> bytes:
        return bytes.fromhex(self.meta["salt"])

    def ledger(self):
        from .ledger import Ledger

        return Ledger(self.ledger_path)

    def guard(self):
        from ..guard import Guard

        return Guard(self.guard_dir)

    def signing_key(self) -> Ed25519PrivateKey:
        """The home's Ed25519 private key. `Home.init` makes the pair; a home made before certificates
        were signed gets it here, the first time it signs (`process`, under `process_lock`; made
        atomically, and of two processes that race, both keep the first one's). Making it records
        the time in home.json (`signed_since`): a certificate of a request verified since then
        must be signed (`certificate.verify_certificate`)."""
        from . import signing

        try:
            if not self.signing_key_path.exists():
                key = signing.make_key_pair(self.signing_key_path, self.public_key_path)
                # from now on every certificate is signed: an unsigned one verified later is no certificate
                self.meta["signed_since"] = time.time()
                runinfo.write_json(self.path / "home.json", self.meta)
                return key
            key = signing.read_private_key(self.signing_key_path)
            if not self.public_key_path.exists():  # a pair made by a process stopped between the two files
                signing.write_public_key(key, self.public_key_path)
            return key
        except signing.SignatureError as e:
            raise HomeError(str(e)) from None

    def public_key(self) -> Ed25519PublicKey | None:
        """The home's public key (`signing.pub`), or None where the home has none yet (made before
        certificates were signed, and it has signed nothing since)."""
        from . import signing

        if not self.public_key_path.exists():
            return None
        try:
            return signing.read_public_key(self.public_key_path)
        except signing.SignatureError as e:
            raise HomeError(str(e)) from None

    def targets(self):
        """The guard's targets alone (`guard.TargetStore`): what putting a person behind the guard
        needs, without the model side or the embedder (`put_target` defers the vectors)."""
        from ..guard import TargetStore

        return TargetStore(self.guard_dir)

    # -- creation --------------------------------------------------------------------------------
    @classmethod
    def init(cls, path: str | os.PathLike | None, model: str | os.PathLike, retain: str | os.PathLike,
             settings: Settings | None = None, measure_utility: bool = True) -> "Home":
        """Create a home from a base model (checkpoint dir or hub id) and a retain pool (a world dir,
        a `datasets` dir or a JSONL file of QA records)."""
        from ..guard import Guard, GuardSettings
        from ..models.load import check_out
        from .pool import import_pool

        path = Path(path) if path is not None else default_home()
        if (path / "home.json").exists():
            raise HomeError(f"{path}: already a deployment home")
        try:  # a home inside the model's folder copied the model into itself until "File name too long"
            check_out(model, path, option="--home")
        except ValueError as e:
            raise HomeError(str(e)) from None
        settings = settings or Settings()
        existed = path.exists()
        empty = not existed or not any(path.iterdir())
        path.mkdir(parents=True, exist_ok=True)
        try:
            import_pool(retain, path / "retain", settings.utility_records)
            v0 = _import_model(model, path / "versions", "v0000")
            g = Guard(path / "guard", settings=GuardSettings(default_action=settings.guard_action))
            g.save_settings()
            meta = {"format": FORMAT, "created": time.time(), "base_model": runinfo.where(model), "retain_source": runinfo.where(retain),
                    "salt": secrets.token_hex(16), "settings": settings.model_dump(), "base_version": v0.name,
                    "versions": runinfo.versions()}
            runinfo.write_json(path / "home.json", meta)
            home = cls(path)
            home.signing_key()  # the key pair its certificates are signed with
            home.set_current(v0.name)
            home.ledger().close()  # creates the schema
            if measure_utility:
                from .verify import utility

                home.meta["base_utility"] = utility(home, v0.path)
                runinfo.write_json(path / "home.json", home.meta)
            return home
        except BaseException:  # a home half made is no home: what this call made goes (a bad retain pool left it)
            if empty:
                for p in path.iterdir():
                    shutil.rmtree(p) if p.is_dir() else p.unlink()
            if not existed:
                with contextlib.suppress(OSError):
                    path.rmdir()
            raise

    # -- versions ----------------------------------------------------------------------------------
    def current_name(self) -> str:
        p = self.path / "current"
        if not p.is_file():
            raise HomeError(f"{p}: no current version")
        name = p.read_text().strip()
        if not VERSION_RE.fullmatch(name):
            raise HomeError(f"{p}: malformed version name {name[:40]!r}")
        return name

    def set_current(self, name: str) -> None:
        """Point `current` at version `name` (checked first) with one os.replace."""
        self.check_version(name)
        runinfo.write_text(self.path / "current", name + "\n")

    def version(self, name: str) -> Version:
        d = self.versions_dir / name
        m = d / MANIFEST
        if not VERSION_RE.fullmatch(name) or not d.is_dir():
            raise HomeError(f"{d}: no such version")
        if not m.is_file():
            raise HomeError(f"{d}: partial version (no {MANIFEST})")
        try:
            meta = json.loads(m.read_text())
        except ValueError:
            raise HomeError(f"{m}: unreadable manifest") from None
        files = meta.get("files") if isinstance(meta, dict) else None
        if not isinstance(files, dict) or not all(isinstance(h, str) for h in files.values()):
            raise HomeError(f"{m}: unreadable manifest (field 'files' must map each file to its sha256)")
        return Version(name, d, files, meta.get("parent"), meta.get("pruned_at"), meta.get("created"))

    def check_version(self, name: str) -> Version:
        """The version, after checking every file against its manifest (HomeError on any mismatch)."""
        v = self.version(name)
        if v.pruned_at is not None:
            raise HomeError(f"{v.path}: pruned (`unlearn home prune`): its model was deleted, its manifest kept")
        have = manifest_of(v.path)
        for f, h in v.files.items():
            if f not in have:
                raise HomeError(f"{v.path / f}: missing (listed in {MANIFEST})")
            if have[f] != h:
                raise HomeError(f"{v.path / f}: sha256 does not match {MANIFEST} (corrupted)")
        extra = sorted(set(have) - set(v.files))
        if extra:
            raise HomeError(f"{v.path / extra[0]}: not in {MANIFEST}")
        return v

    def current(self) -> Version:
        """The deployed version, checked against its manifest."""
        return self.check_version(self.current_name())

    @property
    def base_name(self) -> str:
        """The name of the version every other was unlearned from (home.json's `base_version`)."""
        return self.meta.get("base_version", "v0000")

    def base(self) -> Version:
        """The base version (`base_name`), as its manifest says (`pruned_at` set where `prune` deleted
        its files; `check_version` checks the files): locate's confidence test scores on it."""
        return self.version(self.base_name)

    def prune(self) -> list[str]:
        """Delete the files of every version but `current`, keeping each one's manifest (its sha256s,
        so the certificates naming it still verify against it) marked `pruned_at`; returns the
        versions pruned. A version from before a deletion still holds what was deleted: kept (as it
        was, with no way to drop it, until session 36), it undid the deletion for whoever reads the
        home. Refused while a batch is open: its source or candidate may be needed."""
        cur = self.current_name()
        with self.ledger() as led:
            if led.open_batches():
                raise HomeError("a batch is open: `unlearn request process` finishes it; prune after it")
        pruned = []
        for name in self.list_versions():
            v = self.version(name)
            if name == cur or v.pruned_at is not None:
                continue
            meta = json.loads((v.path / MANIFEST).read_text())
            # marked first: a prune cut short leaves a version that says it is pruned, never one served half
            runinfo.write_json(v.path / MANIFEST, {**meta, "pruned_at": time.time()})
            for p in sorted(v.path.iterdir()):
                if p.name != MANIFEST:
                    shutil.rmtree(p) if p.is_dir() else p.unlink()
            pruned.append(name)
        return pruned

    def list_versions(self) -> list[str]:
        return sorted(p.name for p in self.versions_dir.iterdir() if VERSION_RE.fullmatch(p.name))

    def next_version_name(self) -> str:
        names = [int(n[1:]) for n in self.list_versions()]
        return f"v{(max(names) + 1) if names else 0:04d}"

    def add_version(self, model_dir: str | os.PathLike, name: str, parent: str | None) -> Version:
        """Copy a saved model into versions/NAME with its manifest (atomically: built under a
        temporary name, renamed into place once complete)."""
        return _import_model(model_dir, self.versions_dir, name, parent=parent)

    # -- locking -----------------------------------------------------------------------------------
    @contextlib.contextmanager
    def process_lock(self):
        """One `process` at a time per home (fcntl lock, released by the kernel if the process dies)."""
        self.path.mkdir(parents=True, exist_ok=True)
        f = open(self.path / ".process.lock", "a+")
        try:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise HomeError(f"{self.path}: another `request process` is running on this home") from None
            yield
        finally:
            f.close()


def _import_model(model, versions_dir: Path, name: str, parent: str | None = None) -> Version:
    src = Path(model)
    final = versions_dir / name
    if final.exists():
        raise HomeError(f"{final}: version already exists")
    tmp = versions_dir / f".{name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.parent.mkdir(parents=True, exist_ok=True)
    if src.is_dir():
        if not (src / "config.json").is_file():
            raise HomeError(f"{src}: not a saved model (no config.json)")
        shutil.copytree(src, tmp)
    else:
        from ..models.load import load_model, save_model

        net, tok = load_model(str(model))
        save_model(net, tok, tmp)
    files = manifest_of(tmp)
    runinfo.write_json(tmp / MANIFEST, {"name": name, "parent": parent, "created": time.time(), "files": files})
    os.replace(tmp, final)
    return Version(name, final, files, parent)
