"""Prosody features: openSMILE's eGeMAPS v02 functionals (88 values: pitch, loudness, voice
quality, spectral balance and rhythm statistics) for one utterance.

They carry what Whisper's encoder, trained to ignore it for transcription, partly throws away:
how high, loud and varied the voice is. Fused with the encoder states they lift held-out UA.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from functools import lru_cache

import numpy as np

from emotivoice.analysis.assets import ModelUnavailable

EGEMAPS_DIM = 88
PITCH_MEAN, PITCH_RANGE, LOUDNESS = 0, 5, 10  # semitone mean, 20-80th pctl range (semitones), loudness
# the emotion head and the insight stage share a clip's features
_recent: OrderedDict[bytes, np.ndarray] = OrderedDict()


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
    samples = np.ascontiguousarray(samples, dtype=np.float32)
    key = hashlib.blake2b(samples.tobytes(), digest_size=16).digest()
    if key in _recent:
        _recent.move_to_end(key)
        return _recent[key]
    padded = np.pad(samples, (0, 1600 - len(samples))) if len(samples) < 1600 else samples  # openSMILE needs frames
    values = np.nan_to_num(_smile().process_signal(padded, 16_000).to_numpy()[0].astype(np.float32))
    _recent[key] = values
    if len(_recent) > 512:
        _recent.popitem(last=False)
    return values
