"""Segmentation: the seed's energy rule, utterance shaping, silero on real speech, and fallback."""

import numpy as np
import pytest

import analysis.segmentation as segmentation
from analysis.audio import load_audio
from analysis.segmentation import Region, StreamingSegmenter, energy_regions, shape_utterances, speech_regions
from conftest import DEMO, DEMO_TRUTH
from emotivoice.config import SegmentationConfig

CFG = SegmentationConfig()


def bursts(spec, level=0.3):
    """spec: [(seconds, on)], noise bursts at `level` between digital silence."""
    rng = np.random.default_rng(0)
    return np.concatenate([rng.normal(0, level, int(s * 16000)) if on else np.zeros(int(s * 16000))
                           for s, on in spec]).astype(np.float32)


def test_energy_rule_splits_on_pauses_over_500ms_only():
    audio = bursts([(0.5, 0), (1.0, 1), (0.3, 0), (1.0, 1), (0.8, 0), (1.5, 1), (0.5, 0)])
    regions = energy_regions(audio, CFG)
    assert len(regions) == 2  # the 0.3 s pause is bridged, the 0.8 s one splits
    assert regions[0].start == pytest.approx(0.4, abs=0.05) and regions[0].end == pytest.approx(2.9, abs=0.05)


def test_energy_rule_ignores_quiet_noise():
    assert energy_regions(bursts([(3.0, 1)], level=0.001), CFG) == []


def test_short_regions_merge_toward_target_and_long_ones_split():
    shaped = shape_utterances([Region(0, 0.5), Region(1.0, 3.0), Region(10, 12), Region(20, 52)], CFG)
    assert shaped[0] == Region(0, 3.0)
    assert shaped[1] == Region(10, 12)  # long enough: not merged across 7 s
    assert len(shaped) == 2 + 4 and all(r.duration <= CFG.max_utterance_s for r in shaped)


def test_silero_finds_each_demo_turn_on_its_channel():
    audio = load_audio(DEMO)
    for leg, role in enumerate(("agent", "customer")):
        regions, method = speech_regions(audio[leg], CFG)
        assert method == "silero"
        turns = [t for t in DEMO_TRUTH["turns"] if t["speaker"] == role]
        assert len(shape_utterances(regions, CFG)) == len(turns)


def test_dead_silero_falls_back_to_the_energy_rule(monkeypatch):
    def broken():
        raise RuntimeError("model file is corrupt")

    monkeypatch.setattr(segmentation, "_silero", broken)
    audio = load_audio(DEMO)[1]
    segmenter = StreamingSegmenter(CFG)
    found = segmenter.push(audio, final=True)
    assert segmenter.methods == {"energy"}
    assert len(found) == sum(t["speaker"] == "customer" for t in DEMO_TRUTH["turns"])
