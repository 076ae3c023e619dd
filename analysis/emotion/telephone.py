"""Telephone-channel simulation: what a 16 kHz studio clip sounds like over a G.711 call.

Used to augment training data and to score the model on call-like audio, since contact-center
legs arrive as 8 kHz mu-law.
"""

from __future__ import annotations

import numpy as np
from scipy.signal import resample_poly

MU = 255.0


def mulaw_roundtrip(samples: np.ndarray) -> np.ndarray:
    """Encode to 8-bit G.711 mu-law and back, keeping its quantisation noise."""
    x = np.clip(samples, -1.0, 1.0)
    encoded = np.sign(x) * np.log1p(MU * np.abs(x)) / np.log1p(MU)
    quantised = np.round((encoded + 1.0) * 127.5) / 127.5 - 1.0
    return (np.sign(quantised) * np.expm1(np.abs(quantised) * np.log1p(MU)) / MU).astype(np.float32)


def telephone(samples: np.ndarray, rng: np.random.Generator | None = None,
              noise_dbfs: float | None = None, gain_db: float = 0.0) -> np.ndarray:
    """16 kHz in, 16 kHz out: band-limit to 8 kHz sampling, optional noise and gain, mu-law."""
    narrow = resample_poly(samples.astype(np.float64), 1, 2)
    narrow *= 10 ** (gain_db / 20.0)
    if noise_dbfs is not None:
        rng = rng or np.random.default_rng(0)
        narrow += rng.normal(0.0, 10 ** (noise_dbfs / 20.0), size=narrow.shape)
    coded = mulaw_roundtrip(narrow.astype(np.float32))
    return resample_poly(coded.astype(np.float64), 2, 1).astype(np.float32)
