"""Prosody features: openSMILE's eGeMAPS v02 functionals (88 values: pitch, loudness, voice
quality, spectral balance and rhythm statistics) for one utterance.

They carry what Whisper's encoder, trained to ignore it for transcription, partly throws away:
how high, loud and varied the voice is. Fused with the encoder states they lift held-out UA.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from analysis.assets import ModelUnavailable

EGEMAPS_DIM = 88


@lru_cache(maxsize=1)
def _smile():
    try:
        import opensmile
    except ImportError as exc:
        raise ModelUnavailable("prosody features need the opensmile package") from exc
    return opensmile.Smile(feature_set=opensmile.FeatureSet.eGeMAPSv02,
                           feature_level=opensmile.FeatureLevel.Functionals)


def egemaps(samples: np.ndarray) -> np.ndarray:
    """88 eGeMAPS functionals of a 16 kHz clip (NaN-free: silence gives zeros, not NaN)."""
    if len(samples) < 1600:  # openSMILE needs a few frames; pad very short clips
        samples = np.pad(samples, (0, 1600 - len(samples)))
    values = _smile().process_signal(samples.astype(np.float32), 16_000).to_numpy()[0]
    return np.nan_to_num(values.astype(np.float32))
