"""Load any causal LM (local checkpoint or hub id), optionally with LoRA; save atomically."""
from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from pathlib import Path

import torch


class ModelLoadError(RuntimeError):
    """A model could not be loaded; the message is one line that says why."""


DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def load_model(path_or_id: str | os.PathLike, dtype: str | None = None, device: str | None = None):
    """Return `(model, tokenizer)` from a local checkpoint directory or a Hugging Face hub id.

    A local directory must contain a `config.json`; anything else is treated as a hub id. Offline
    (HF_HUB_OFFLINE=1) or unreachable hubs fail with a one-line message instead of a stack trace.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    src = str(path_or_id)
    local = Path(src)
    if (local / "adapter_config.json").is_file():
        return _load_adapter(local, dtype, device)
    if local.exists():
        if not (local / "config.json").is_file():
            raise ModelLoadError(f"{src}: not a model checkpoint (no config.json in the directory)")
    elif src.startswith((".", "/", "~")) or src.count("/") > 1:
        raise ModelLoadError(f"{src}: no such model directory")
    kwargs = {}
    if dtype:
        if dtype not in DTYPES:
            raise ModelLoadError(f"dtype {dtype!r} unknown; choose one of {sorted(DTYPES)}")
        kwargs["dtype"] = DTYPES[dtype]
    try:
        tokenizer = AutoTokenizer.from_pretrained(src)
        model = AutoModelForCausalLM.from_pretrained(src, **kwargs)
    except OSError as e:
        where = "local checkpoint" if local.exists() else "hub id (the Hugging Face hub is not reachable from here, or the id does not exist)"
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ModelLoadError(f"{src}: could not load {where}: {first}") from None
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if device:
        model.to(device)
    model.eval()
    return model, tokenizer


def _load_adapter(path: Path, dtype, device):
    """A LoRA adapter directory saved by `save_model`: load its base model, then the adapter."""
    import json

    from peft import PeftModel

    base = json.loads((path / "adapter_config.json").read_text()).get("base_model_name_or_path")
    if not base:
        raise ModelLoadError(f"{path}/adapter_config.json: field 'base_model_name_or_path' is empty")
    model, tokenizer = load_model(base, dtype=dtype, device=device)
    model = PeftModel.from_pretrained(model, str(path))
    model.eval()
    return model, tokenizer


def apply_lora(model, r: int = 8, alpha: int = 16, dropout: float = 0.0, target_modules=None):
    """Wrap `model` in a LoRA adapter (peft); only the adapter's weights train."""
    from peft import LoraConfig, get_peft_model

    cfg = LoraConfig(
        r=r, lora_alpha=alpha, lora_dropout=dropout, task_type="CAUSAL_LM",
        target_modules=target_modules or "all-linear",
    )
    return get_peft_model(model, cfg)


def atomic_dir(out: str | os.PathLike):
    """Context manager: yields a temp dir beside `out`, renamed to `out` on success only."""
    return _AtomicDir(Path(out))


class _AtomicDir:
    def __init__(self, out: Path):
        self.out = out

    def __enter__(self) -> Path:
        self.out.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = Path(tempfile.mkdtemp(prefix=f".{self.out.name}.", dir=self.out.parent))
        return self.tmp

    def __exit__(self, exc_type, exc, tb):
        if exc_type is not None:
            shutil.rmtree(self.tmp, ignore_errors=True)
            return False
        old = None
        if self.out.exists():
            old = self.out.with_name(f".{self.out.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(self.out, old)
        os.replace(self.tmp, self.out)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
        return False


def save_model(model, tokenizer, out: str | os.PathLike, merge: bool = False, state_dict: dict | None = None) -> Path:
    """Save as an ordinary Hugging Face checkpoint (safetensors), atomically.

    A peft model saves its adapter; with `merge=True` it saves the merged full model instead.
    `state_dict`: the full weights gathered from sharded training (FSDP, ZeRO-3), saved in place of
    the local shards `model` holds."""
    if merge and hasattr(model, "merge_and_unload"):
        if state_dict is not None:
            model.load_state_dict(state_dict)
            state_dict = None
        model = model.merge_and_unload()
    with atomic_dir(out) as tmp:
        model.save_pretrained(tmp, safe_serialization=True, **({"state_dict": state_dict} if state_dict is not None else {}))
        tokenizer.save_pretrained(tmp)
    return Path(out)


def fingerprint(model) -> str:
    """sha256 over the model's parameters (names, shapes and bytes): identifies the weights evaluated."""
    h = hashlib.sha256()
    for name, p in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(str(tuple(p.shape)).encode())
        h.update(p.detach().to("cpu").contiguous().view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:16]
