"""Load any causal LM (local checkpoint or hub id), optionally with LoRA; save atomically.

Only causal LMs are accepted (a masked LM such as BERT would load into a randomly initialised
LM head and be "unlearned" all the same). Damaged checkpoints fail with one line naming the path.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import warnings
from contextlib import contextmanager, nullcontext
from pathlib import Path

import torch

from .. import runinfo

# peft reads transformers' deprecated `is_gradient_checkpointing` when it wraps a model: a warning on
# every `--lora` run that only peft can act on
warnings.filterwarnings("ignore", r"`is_gradient_checkpointing` is deprecated", FutureWarning)


class ModelLoadError(RuntimeError):
    """A model could not be loaded; the message is one line that says why."""


DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
# Any one of these makes a directory loadable by AutoTokenizer (fast tokenizer, its config, or slow
# tokenizers' vocabularies).
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json", "vocab.txt",
                   "spiece.model")


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


@contextmanager
def whole_weights():
    """Models built inside come out whole. While a ZeRO-3 DeepSpeed config is registered with
    transformers (accelerate registers the launcher's when it starts), `from_pretrained` and
    `from_config` build each model partitioned across the processes (`deepspeed.zero.Init`), whatever
    the launcher's `zero3_init_flag`; this project loads whole models and shards them only where the
    training loop prepares them (a repair round's model must generate first)."""
    try:
        from transformers.integrations import deepspeed as hf_ds
    except ImportError:  # pragma: no cover - transformers without its DeepSpeed integration
        yield
        return
    ref = hf_ds._hf_deepspeed_config_weak_ref  # transformers keeps no other handle on it
    hf_ds.unset_hf_deepspeed_config()
    try:
        yield
    finally:
        hf_ds._hf_deepspeed_config_weak_ref = ref


def load_model(path_or_id: str | os.PathLike, dtype: str | None = None, device: str | None = None):
    """Return `(model, tokenizer)` from a local checkpoint directory or a Hugging Face hub id.

    A local directory must contain a `config.json` and tokenizer files; anything else is treated as
    a hub id. The checkpoint must be a causal LM. Offline (HF_HUB_OFFLINE=1) or unreachable hubs,
    damaged weight files and missing tokenizers fail with a one-line message instead of a stack trace.
    """
    from safetensors import SafetensorError
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    src = str(path_or_id)
    local = Path(src)
    if (local / "adapter_config.json").is_file():
        return _load_adapter(local, dtype, device)
    if local.exists():
        _check_checkpoint_dir(local)
    elif src.startswith((".", "/", "~")) or src.count("/") > 1:
        raise ModelLoadError(f"{src}: no such model directory")
    kwargs = {}
    if dtype:
        if dtype not in DTYPES:
            raise ModelLoadError(f"dtype {dtype!r} unknown; choose one of {sorted(DTYPES)}")
        kwargs["dtype"] = DTYPES[dtype]
    where = "local checkpoint" if local.exists() else "hub id (the Hugging Face hub is not reachable from here, or the id does not exist)"
    try:
        config = AutoConfig.from_pretrained(src)
    except (OSError, ValueError) as e:
        raise ModelLoadError(f"{src}: could not load {where}: {_first_line(e)}") from None
    check_causal_lm(config, src)
    try:
        tokenizer = AutoTokenizer.from_pretrained(src)
    except (OSError, ValueError) as e:
        raise ModelLoadError(f"{src}: could not load the tokenizer of the {where}: {_first_line(e)}") from None
    if tokenizer.eos_token_id is None:  # a TypeError deep in the batching until session 36
        raise ModelLoadError(f"{src}: the tokenizer has no eos_token; every answer ends with it here: set one "
                             f"(tokenizer.eos_token = ...) and save the tokenizer again")
    positions = getattr(config, "max_position_embeddings", None)
    if isinstance(positions, int) and positions > 0 and tokenizer.model_max_length > positions:
        # what the model takes: texts are cut there when encoded (`encode_pairs`), where a longer one
        # made training fail with "index out of range" (GPT-2's 1024 positions, or fewer) until session 36
        tokenizer.model_max_length = positions
    try:
        with whole_weights(), _no_loading_bar() if local.exists() else nullcontext():
            model = AutoModelForCausalLM.from_pretrained(src, config=config, **kwargs)
    except (OSError, SafetensorError) as e:
        raise ModelLoadError(f"{src}: could not load {where}: {_first_line(e)}") from None
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if device:
        model.to(device)
    model.eval()
    return model, tokenizer


@contextmanager
def _no_loading_bar():
    """Without transformers' "Loading weights" and "Writing model shards" bars, which it draws for
    every local checkpoint, even behind `progress=False` (session 36); a hub id keeps them, with its
    download bars."""
    from transformers.utils import logging as hf_logging

    was = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was:
            hf_logging.enable_progress_bar()


def check_causal_lm(config, src: str) -> None:
    """Refuse a config whose architecture is not a causal LM, naming it.

    `model_type` alone does not tell: "bert" has a causal-LM class (BertLMHeadModel), yet a
    BertForMaskedLM checkpoint is no LM to unlearn. So the saved `architectures` decide, and
    `model_type` only when a config has none."""
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES as CAUSAL

    causal = {name for v in CAUSAL.values() for name in ((v,) if isinstance(v, str) else v)}
    archs = list(getattr(config, "architectures", None) or [])
    if archs and not causal.intersection(archs):
        raise ModelLoadError(f"{src}: architecture {', '.join(archs)} (model type {config.model_type!r}) is not a "
                             f"causal LM; unlearnkit unlearns causal LMs (e.g. LlamaForCausalLM, GPT2LMHeadModel)")
    if not archs and config.model_type not in CAUSAL:
        raise ModelLoadError(f"{src}: model type {config.model_type!r} is not a causal LM; unlearnkit unlearns "
                             f"causal LMs (e.g. llama, gpt2)")


def _check_checkpoint_dir(local: Path) -> None:
    """A local checkpoint has a config, tokenizer files and whole safetensors files."""
    if not local.is_dir():
        raise ModelLoadError(f"{local}: not a model checkpoint (a file, not a directory)")
    if not (local / "config.json").is_file():
        raise ModelLoadError(f"{local}: not a model checkpoint (no config.json in the directory)")
    if not any((local / name).is_file() for name in TOKENIZER_FILES):
        raise ModelLoadError(f"{local}: no tokenizer in the checkpoint (none of {', '.join(TOKENIZER_FILES[:2])}, ...); "
                             f"save the tokenizer beside the model")
    _check_safetensors(local)


def _check_safetensors(local: Path) -> None:
    """Read each safetensors header: a truncated file fails here, naming it (transformers would
    only say "incomplete metadata", without the file)."""
    from safetensors import SafetensorError, safe_open

    for f in sorted(local.glob("*.safetensors")):
        try:
            with safe_open(str(f), framework="pt"):
                pass
        except (SafetensorError, OSError) as e:
            raise ModelLoadError(f"{f}: damaged safetensors file ({_first_line(e)}); save or copy it again") from None


def _load_adapter(path: Path, dtype, device):
    """A LoRA adapter directory saved by `save_model`: load its base model, then the adapter."""
    from peft import PeftModel
    from safetensors import SafetensorError

    cfg_path = path / "adapter_config.json"
    try:
        cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
    except ValueError as e:
        raise ModelLoadError(f"{cfg_path}: not a valid adapter config ({_first_line(e)})") from None
    base = cfg.get("base_model_name_or_path") if isinstance(cfg, dict) else None
    if not base:
        raise ModelLoadError(f"{cfg_path}: field 'base_model_name_or_path' is empty")
    base = resolve_base(path, base)
    if Path(base).is_absolute() and not Path(base).exists():
        raise ModelLoadError(f"{cfg_path}: base model {base} not found (field 'base_model_name_or_path')")
    _check_safetensors(path)
    model, tokenizer = load_model(base, dtype=dtype, device=device)
    try:
        model = PeftModel.from_pretrained(model, str(path))
    except (OSError, ValueError, SafetensorError) as e:
        raise ModelLoadError(f"{path}: could not load the adapter: {_first_line(e)}") from None
    model.eval()
    return model, tokenizer


def resolve_base(adapter_dir: Path, base: str) -> str:
    """The base model an adapter names, as a path that works from any working directory.

    `save_model` records local bases as absolute paths. A relative one is looked for beside the
    adapter first (a base copied along with it), then in the working directory (adapters saved
    before bases were recorded absolute); otherwise it is a hub id."""
    p = Path(base).expanduser()
    if p.is_absolute():
        return str(p)
    for candidate in (Path(adapter_dir) / p, p):
        if candidate.exists():
            return str(candidate.resolve())
    return base


def apply_lora(model, r: int = 8, alpha: int = 16, dropout: float = 0.0, target_modules=None):
    """Wrap `model` in a LoRA adapter (peft); only the adapter's weights train."""
    from peft import LoraConfig, get_peft_model

    cfg = LoraConfig(
        r=r, lora_alpha=alpha, lora_dropout=dropout, task_type="CAUSAL_LM",
        target_modules=target_modules or "all-linear",
    )
    return get_peft_model(model, cfg)


def check_out(model, out: str | os.PathLike, what: str = "source model", option: str = "--out") -> None:
    """Refuse an output folder that is, holds or lies inside the source model's folder (or, with
    `what="data"`, the data's: outputs written among a world's files changed its data hash, and every
    earlier result was refused as "evaluated on other data", until session 36)."""
    src, out = Path(model).expanduser(), Path(out)
    if not src.exists() or (what == "data" and not src.is_dir()):
        return
    src, dst = src.resolve(), out.expanduser().resolve()
    holds = src.is_relative_to(dst) and what != "data"  # a run beside the data, in its parent, changes none of it
    if dst == src or holds or dst.is_relative_to(src):
        raise ValueError(f"{option} {out}: it {'is' if dst == src else 'contains' if src.is_relative_to(dst) else 'lies inside'} "
                         f"the {what}'s folder {model}; the {what} is never written to: choose another folder")


def check_results_out(out: str | os.PathLike, **read) -> None:
    """Refuse a results file that lies inside a folder the command reads (`read`: role -> path, e.g.
    model=, oracle=, data=): `eval --out` and `attack --out` wrote into a model's folder, a request
    home's version among them (which then failed its manifest check), until session 37."""
    for what, x in read.items():
        if isinstance(x, (str, os.PathLike)) and Path(x).expanduser().is_dir():
            check_out(x, out, what=what)


INFO = "unlearnkit.json"  # what `unlearn finetune` records beside a checkpoint's weights (`save_model(info=)`)
# the files of a saved checkpoint: weights, configs, tokenizer (any `save_pretrained` writes), and INFO
CHECKPOINT_FILES = {"config.json", "generation_config.json", "special_tokens_map.json", "added_tokens.json",
                    "merges.txt", "chat_template.jinja", "chat_template.json", INFO, *TOKENIZER_FILES}


def _checkpoint_file(p: Path) -> bool:
    return p.is_file() and (p.name in CHECKPOINT_FILES or p.name.endswith((".safetensors", ".safetensors.index.json")))


def check_replaceable(out: str | os.PathLike, overwrite: bool = False) -> None:
    """Refuse an output folder that a checkpoint would replace whole (`save_model`) where it holds
    anything but a checkpoint this tool wrote (INFO and a checkpoint's own files, `CHECKPOINT_FILES`:
    until session 37 INFO alone let `finetune --out` delete a `forget` run kept in that folder), and
    one of its checkpoints without `overwrite`, as `forget` refuses an earlier run."""
    out = Path(out)
    if out.is_file():
        raise ValueError(f"--out {out}: is a file; the checkpoint is a folder")
    if not out.is_dir() or not any(out.iterdir()):
        return
    if other := sorted(p.name for p in out.iterdir() if not _checkpoint_file(p)):
        raise ValueError(f"--out {out}: holds other files ({', '.join(other[:3])}{', ...' * (len(other) > 3)}), and "
                         f"the checkpoint replaces the whole folder: choose a new or empty folder")
    if not (out / INFO).is_file():
        raise ValueError(f"--out {out}: holds a checkpoint that unlearnkit did not write (no {INFO}), and the "
                         f"checkpoint replaces the whole folder: choose a new or empty folder")
    if not overwrite:
        raise ValueError(f"--out {out}: holds a checkpoint ({INFO}): --overwrite it, or choose another folder")


def atomic_dir(out: str | os.PathLike):
    """Context manager: yields a temp dir beside `out`, renamed to `out` on success only."""
    return _AtomicDir(Path(out))


class _AtomicDir:
    def __init__(self, out: Path):
        self.out = out

    def __enter__(self) -> Path:
        self.out.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = runinfo.temp_dir(self.out)
        return self.tmp

    def __exit__(self, exc_type, exc, tb):
        if exc_type is not None:
            shutil.rmtree(self.tmp, ignore_errors=True)
            return False
        for f in self.tmp.rglob("*"):  # safetensors writes its files through a private temp file
            if f.is_file():
                f.chmod(0o666 & ~runinfo.umask())
        old = None
        if self.out.exists():
            old = self.out.with_name(f".{self.out.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(self.out, old)
        os.replace(self.tmp, self.out)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
        return False


def save_model(model, tokenizer, out: str | os.PathLike, merge: bool = False, state_dict: dict | None = None,
               info: dict | None = None) -> Path:
    """Save as an ordinary Hugging Face checkpoint (safetensors), atomically, with `info` (what
    `finetune` records) as INFO in the same folder: written after the weights until session 37, a
    kill in between left a checkpoint that loaded in the wrong prompt format.

    A peft model saves its adapter; with `merge=True` it saves the merged full model instead.
    `state_dict`: the full weights gathered from sharded training (FSDP, ZeRO-3), saved in place of
    the local shards `model` holds."""
    if merge and hasattr(model, "merge_and_unload"):
        if state_dict is not None:
            model, state_dict = whole_adapter_model(model, state_dict), None
        model = model.merge_and_unload()
    with atomic_dir(out) as tmp:
        with _no_loading_bar():  # nor its "Writing model shards" bar
            model.save_pretrained(tmp, safe_serialization=True, **({"state_dict": state_dict} if state_dict is not None else {}))
        tokenizer.save_pretrained(tmp)
        if (tmp / "adapter_config.json").is_file():
            _record_absolute_base(tmp / "adapter_config.json")
        if info is not None:
            runinfo.write_json(tmp / INFO, info)
    return Path(out)


def whole_adapter_model(model, state_dict: dict):
    """A fresh copy of the peft `model` holding `state_dict`, the weights gathered from sharded
    training, its adapter trainable: merging needs whole weights, and so does a repair round, which
    generates before it trains the adapter again; the sharded ones (FSDP2's DTensors, ZeRO-3's
    partitions) take no plain tensors."""
    from peft import get_peft_model
    from transformers import AutoModelForCausalLM

    base = model.get_base_model()
    with whole_weights():
        fresh = AutoModelForCausalLM.from_config(base.config, torch_dtype=next(iter(state_dict.values())).dtype)
    fresh = get_peft_model(fresh, model.peft_config[model.active_adapter])
    fresh.load_state_dict(state_dict)
    return fresh


def _record_absolute_base(cfg_path: Path) -> None:
    """peft records the base model as it was given (`runs/subject`), which breaks as soon as the
    adapter is loaded from another working directory: record a local base as an absolute path."""
    cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
    base = cfg.get("base_model_name_or_path")
    if base and Path(base).expanduser().exists():
        cfg["base_model_name_or_path"] = str(Path(base).expanduser().resolve())
        runinfo.write_json(cfg_path, cfg)


def fingerprint(model) -> str:
    """sha256 over the model's parameters (names, shapes and bytes): identifies the weights evaluated."""
    h = hashlib.sha256()
    for name, p in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(str(tuple(p.shape)).encode())
        h.update(p.detach().to("cpu").contiguous().view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:16]
