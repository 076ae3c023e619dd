"""Whisper's encoder in PyTorch, read straight from CTranslate2's `model.bin`, for its middle layers.

CTranslate2 only hands out the last encoder layer, but emotion lives better in the middle ones
(layers 2-4 of Whisper base: issue 14). So the same weights file that transcription loads is read
here a second time into a small PyTorch encoder that stops after the deepest layer asked for.

Every utterance is encoded at its own length: no padding to 30 s (transformers' Whisper pads,
and padding changes layers 4-6), so training and serving see exactly the same states.

`model.bin` layout (ctranslate2/specs/model_spec.py `_serialize`, binary version 6): u32 version,
string name, u32 revision, u32 variable count, then per variable: string name, u8 rank, u32 dims,
u8 dtype id, u32 byte count, raw little-endian bytes; then u32 alias count and (alias, target)
string pairs. A string is a u16 length (counting a trailing NUL), its UTF-8 bytes and the NUL.
"""

from __future__ import annotations

import json
import logging
import math
import re
import struct
import threading
from collections.abc import Sequence
from contextlib import nullcontext
from functools import lru_cache
from pathlib import Path
from typing import BinaryIO

import numpy as np

from emotivoice.analysis.assets import ModelUnavailable

log = logging.getLogger(__name__)

SUPPORTED_BINARY_VERSIONS = (5, 6)
# the order of ctranslate2's DataType enum (model_spec._dtype_to_type_id)
CT2_DTYPES = (np.float32, np.int8, np.int16, np.int32, np.float16, None)  # None: bfloat16, not handled
MAX_FRAMES = 3000  # Whisper's 30 s window in 10 ms mel frames (1500 positions after the stride-2 conv)


def _read(f: BinaryIO, fmt: str):
    size = struct.calcsize(fmt)
    data = f.read(size)
    if len(data) != size:
        raise ModelUnavailable("model.bin ends early")
    return struct.unpack("<" + fmt, data)[0]


def _string(f: BinaryIO) -> str:
    return f.read(_read(f, "H"))[:-1].decode("utf-8")


def read_ct2_variables(path: Path, prefix: str = "encoder/") -> dict[str, np.ndarray]:
    """The variables of a CTranslate2 model.bin whose names start with `prefix` (others are
    skipped unread, so the decoder's weights cost nothing)."""
    out: dict[str, np.ndarray] = {}
    with Path(path).open("rb") as f:
        version = _read(f, "I")
        if version not in SUPPORTED_BINARY_VERSIONS:
            raise ModelUnavailable(f"{path}: CTranslate2 binary version {version} is not one this reader knows")
        _string(f)  # spec name
        _read(f, "I")  # revision
        for _ in range(_read(f, "I")):
            name = _string(f)
            shape = tuple(_read(f, "I") for _ in range(_read(f, "B")))
            type_id, nbytes = _read(f, "B"), _read(f, "I")
            if not name.startswith(prefix):
                f.seek(nbytes, 1)
                continue
            dtype = CT2_DTYPES[type_id] if type_id < len(CT2_DTYPES) else None
            if dtype is None:
                raise ModelUnavailable(f"{path}: variable {name} has dtype id {type_id}, not readable here")
            out[name] = np.frombuffer(f.read(nbytes), dtype=dtype).reshape(shape).copy()
    return out


class _Encoder:
    """Whisper's pre-LayerNorm encoder as torch modules, float32, inference only."""

    def __init__(self, variables: dict[str, np.ndarray], n_layers: int):
        import torch

        def t(name: str) -> torch.Tensor:
            return torch.from_numpy(variables[f"encoder/{name}"].astype(np.float32))

        self.n_heads = int(variables["encoder/num_heads"])
        blocks = {m.group(1) for k in variables if (m := re.match(r"encoder/layer_(\d+)/", k))}
        self.total_layers = len(blocks)
        self.n_layers = n_layers
        self.conv = [(t("conv1/weight"), t("conv1/bias")), (t("conv2/weight"), t("conv2/bias"))]
        self.positions = t("position_encodings/encodings")
        self.final_norm = (t("layer_norm/gamma"), t("layer_norm/beta"))
        self.layers = []
        for i in range(n_layers):
            p = f"layer_{i}/"
            qkv_w, qkv_b = t(p + "self_attention/linear_0/weight"), t(p + "self_attention/linear_0/bias")
            self.layers.append({
                "ln1": (t(p + "self_attention/layer_norm/gamma"), t(p + "self_attention/layer_norm/beta")),
                "qkv": (qkv_w, qkv_b),  # fused (3 * d, d): query, key, value rows; the key bias is zero
                "out": (t(p + "self_attention/linear_1/weight"), t(p + "self_attention/linear_1/bias")),
                "ln2": (t(p + "ffn/layer_norm/gamma"), t(p + "ffn/layer_norm/beta")),
                "fc1": (t(p + "ffn/linear_0/weight"), t(p + "ffn/linear_0/bias")),
                "fc2": (t(p + "ffn/linear_1/weight"), t(p + "ffn/linear_1/bias")),
            })

    def forward(self, mel, wanted: Sequence[int]) -> dict[int, object]:
        """{layer: (frames, d)} for mel (n_mels, frames); layer k is the output of block k (1-based),
        and the last block of the model also gets the final LayerNorm (what CTranslate2 returns)."""
        import torch
        import torch.nn.functional as F

        x = F.gelu(F.conv1d(mel[None], *self.conv[0], padding=1))
        x = F.gelu(F.conv1d(x, *self.conv[1], stride=2, padding=1))[0].T  # (T, d)
        x = x + self.positions[: x.shape[0]]
        d = x.shape[1]
        hd = d // self.n_heads
        out: dict[int, torch.Tensor] = {}
        if 0 in wanted:
            out[0] = x
        for k, layer in enumerate(self.layers, start=1):
            h = F.layer_norm(x, (d,), *layer["ln1"])
            q, key, v = F.linear(h, *layer["qkv"]).split(d, dim=1)
            q, key, v = (z.reshape(-1, self.n_heads, hd).transpose(0, 1) for z in (q, key, v))
            att = torch.softmax(q @ key.transpose(1, 2) / math.sqrt(hd), dim=-1) @ v
            x = x + F.linear(att.transpose(0, 1).reshape(-1, d), *layer["out"])
            h = F.layer_norm(x, (d,), *layer["ln2"])
            x = x + F.linear(F.gelu(F.linear(h, *layer["fc1"])), *layer["fc2"])
            if k in wanted:
                out[k] = F.layer_norm(x, (d,), *self.final_norm) if k == self.total_layers else x
        return out


class MidLayerEncoder:
    """Whisper encoder states of chosen layers for one 16 kHz clip, unpadded, in PyTorch.

    `encode` gives the chosen layers side by side, (frames, d * len(layers)), so mean+std pooling
    of it is each layer's mean+std: it drops into HeadModel where CTranslate2's encoder did.
    `threads` > 0 runs each call on that many torch threads (the previous count is restored).
    """

    def __init__(self, model_dir: Path, layers: Sequence[int] = (2, 3, 4), threads: int = 0):
        from faster_whisper.feature_extractor import FeatureExtractor

        model_dir = Path(model_dir)
        if not (model_dir / "model.bin").is_file():
            raise ModelUnavailable(f"{model_dir} has no model.bin")
        self.layers = tuple(sorted({int(k) for k in layers}))
        if not self.layers or self.layers[0] < 0:
            raise ValueError(f"encoder layers must be >= 0, got {layers}")
        variables = read_ct2_variables(model_dir / "model.bin")
        self._net = _Encoder(variables, self.layers[-1])
        if self.layers[-1] > self._net.total_layers:
            raise ValueError(f"{model_dir.name} has {self._net.total_layers} encoder layers, not {self.layers[-1]}")
        n_mels = variables["encoder/conv1/weight"].shape[1]
        config = model_dir / "preprocessor_config.json"
        if config.is_file():  # a model dir may state its own mel settings (large-v3: 128 mels)
            n_mels = json.loads(config.read_text()).get("feature_size", n_mels)
        self._mel = FeatureExtractor(feature_size=n_mels)
        self.threads = threads
        self.model_dir = model_dir
        self.name = f"{model_dir.name}-l{''.join(map(str, self.layers))}"
        self._lock = threading.Lock()
        log.info("midlayer encoder loaded", extra={"model": model_dir.name, "layers": list(self.layers),
                                                  "blocks_run": self._net.n_layers, "of": self._net.total_layers})

    def mel(self, samples: np.ndarray) -> np.ndarray:
        """Log-mel frames (n_mels, even count, at most 3000) as faster-whisper computes them."""
        mel = self._mel(np.asarray(samples, dtype=np.float32))
        frames = min(mel.shape[-1] - mel.shape[-1] % 2, MAX_FRAMES)
        if frames < 2:
            return np.zeros((mel.shape[0], 2), dtype=np.float32)
        return np.ascontiguousarray(mel[:, :frames], dtype=np.float32)

    def hidden_states(self, samples: np.ndarray, layers: Sequence[int] | None = None) -> dict[int, np.ndarray]:
        """{layer: (frames at 50/s, d)} for a 16 kHz clip; layers default to the chosen ones and
        may not go deeper than them (the blocks past the deepest are never built)."""
        import torch

        wanted = tuple(layers) if layers is not None else self.layers
        if max(wanted) > self._net.n_layers:
            raise ValueError(f"layer {max(wanted)} is past the {self._net.n_layers} blocks this encoder runs")
        with self._lock, torch.inference_mode(), blas_threads(self.threads):
            mel = torch.from_numpy(self.mel(samples))  # its filterbank product is BLAS too
            previous = torch.get_num_threads()
            if self.threads > 0 and self.threads != previous:
                torch.set_num_threads(self.threads)
            try:
                states = self._net.forward(mel, wanted)
            finally:
                if self.threads > 0 and self.threads != previous:
                    torch.set_num_threads(previous)
        return {k: v.numpy() for k, v in states.items()}

    def encode(self, samples: np.ndarray) -> np.ndarray:
        """The chosen layers' states side by side: (frames, d * len(layers))."""
        states = self.hidden_states(samples)
        return np.concatenate([states[k] for k in self.layers], axis=1)


@lru_cache(maxsize=1)
def _blas_controller():
    """threadpoolctl's view of the loaded BLAS libraries (scikit-learn's dependency), or None."""
    try:
        from threadpoolctl import ThreadpoolController
    except ImportError:
        return None
    return ThreadpoolController()


def blas_threads(threads: int):
    """The BLAS pools held to `threads` while the block runs (a forward pass, or HeadModel's whole
    step; 0: left as they are). torch's linear layers here run on
    OpenBLAS, whose two threads ignore torch.set_num_threads: a 3 s clip took 127 ms of CPU for
    64 ms of wall time (the second thread spinning) and 61 ms of CPU held to one (Intel Xeon,
    2 cores; benchmarks/emotion_model.py's one_thread figures)."""
    controller = _blas_controller() if threads > 0 else None
    return controller.limit(limits=threads, user_api="blas") if controller is not None else nullcontext()


@lru_cache(maxsize=4)
def load_midlayer_encoder(model_dir: Path, layers: tuple[int, ...], threads: int = 0) -> MidLayerEncoder:
    """One encoder per (model, layers, threads) per process: batch, live and Ray workers share it."""
    return MidLayerEncoder(model_dir, layers, threads)
