"""Segmentation: the seed's energy rule, utterance shaping, silero on real speech, and fallback."""

import numpy as np
import pytest

import emotivoice.analysis.segmentation as segmentation
from emotivoice.analysis.audio import load_audio
from emotivoice.analysis.segmentation import (Region, StreamingSegmenter, energy_regions, shape_utterances,
                                              speech_regions, to_rate)
from emotivoice.analysis.synth import write_audio
from emotivoice.analysis.vad import WindowedStream, windowed_probabilities
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
    # speech from 0.5 to 2.8 s, kept with the lead before it and the pad after it
    assert regions[0].start == pytest.approx(0.5 - CFG.speech_lead_s, abs=0.05)
    assert regions[0].end == pytest.approx(2.8 + CFG.speech_pad_s, abs=0.05)


def test_energy_rule_ignores_quiet_noise():
    assert energy_regions(bursts([(3.0, 1)], level=0.001), CFG) == []


def test_short_regions_merge_toward_target_and_long_ones_split():
    shaped = shape_utterances([Region(0, 0.5), Region(1.0, 3.0), Region(10, 12), Region(20, 52)], CFG)
    assert shaped[0] == Region(0, 3.0)
    assert shaped[1] == Region(10, 12)  # long enough: not merged across 7 s
    assert len(shaped) == 2 + 4 and all(r.duration <= CFG.max_utterance_s for r in shaped)


@pytest.mark.slow
@pytest.mark.parametrize("rate", [16000, 8000])
def test_silero_finds_each_demo_turn_on_its_channel(rate, tmp_path):
    """At 16 kHz, and at 8 kHz on the demo as a G.711 line carries it (the VAD at the line's rate)."""
    audio = load_audio(DEMO)
    if rate == 8000:
        audio = load_audio(write_audio(audio, tmp_path / "line.wav", ["-ar", "8000", "-c:a", "pcm_mulaw"]))
    for leg, role in enumerate(("agent", "customer")):
        regions, method = speech_regions(audio[leg], CFG, rate)
        assert method == f"silero@{rate // 1000}k"
        turns = [t for t in DEMO_TRUTH["turns"] if t["speaker"] == role]
        shaped = shape_utterances(regions, CFG)
        assert len(shaped) == len(turns)
        for region, turn in zip(shaped, turns):
            assert turn["start"] - 0.3 <= region.start < region.end <= turn["end"] + 0.3
            assert all(region.start <= a < b <= region.end for a, b in region.speech)


@pytest.mark.slow
def test_onnx_vad_gives_the_torchscript_models_probabilities():
    """One VAD implementation (the ONNX export) for batch and live: it must be silero itself."""
    import torch
    from silero_vad import load_silero_vad

    x = to_rate(load_audio(DEMO)[1][: 16000 * 8], 8000)
    onnx = windowed_probabilities(x, 8000, window_s=1e6, warmup_s=0.0)  # one window: the plain model
    model = load_silero_vad()
    with torch.no_grad():
        torch_probs = [float(model(torch.from_numpy(c), 8000)) for c in x[: len(x) // 256 * 256].reshape(-1, 256)]
    assert np.max(np.abs(onnx[: len(torch_probs)] - np.array(torch_probs))) < 1e-4


def test_dead_silero_falls_back_to_the_energy_rule(monkeypatch):
    def broken():
        raise RuntimeError("model file is corrupt")

    monkeypatch.setattr(segmentation, "_silero", broken)
    audio = load_audio(DEMO)[1]
    segmenter = StreamingSegmenter(CFG)
    found = segmenter.push(audio, final=True)
    assert segmenter.methods == {"energy"}
    assert len(found) == sum(t["speaker"] == "customer" for t in DEMO_TRUTH["turns"])


@pytest.mark.slow
def test_live_windowed_stream_gives_the_batch_probabilities_chunk_for_chunk():
    x = to_rate(load_audio(DEMO)[1][: 16000 * 12], 8000)
    batch = windowed_probabilities(x, 8000, 2.0, 1.0)
    stream = WindowedStream(8000, 2.0, 1.0)
    live = [stream.probability(x[i:i + 256]) for i in range(0, len(x) // 256 * 256, 256)]
    assert np.max(np.abs(np.array(live) - batch[: len(live)])) < 1e-6


@pytest.mark.slow
def test_a_whisper_after_a_shout_is_found(emotion_data):
    """silero's state remembers a shout; in fresh-state windows the quiet turn after it is speech."""
    shout = load_audio(emotion_data / "cremad" / "cremad-1011" / "1011_IEO_ANG_HI.opus")[0]
    whisper = load_audio(emotion_data / "cremad" / "cremad-1034" / "1034_IWW_SAD_XX.opus")[0]
    leg = np.concatenate([shout, np.zeros(8000, np.float32), whisper * 0.5]).astype(np.float32)
    at = (len(shout) + 8000) / 16000
    for rate in (8000, 16000):
        regions, _ = speech_regions(leg, CFG, rate)
        assert any(r.end > at + 0.3 for r in regions), (rate, regions)


@pytest.mark.slow
def test_batch_segmenter_and_live_endpointer_agree_on_a_telephone_leg():
    """The live endpointer and the final pass cut a telephone leg alike (issue 13: same VAD, same
    windows, same thresholds), so a live transcript and the final one cover the same speech."""
    from emotivoice.analysis.audio import to_8k_pcm16
    from emotivoice.analysis.live.endpoint import Endpointer

    leg = load_audio(DEMO)[1]
    batch = [r for r, _ in StreamingSegmenter(CFG, 8000).push(leg, final=True)]
    endpointer = Endpointer(8000, endpoint_silence_s=CFG.min_silence_s, threshold=CFG.vad_threshold,
                            neg_threshold=CFG.vad_neg_threshold, window_s=CFG.vad_window_s,
                            warmup_s=CFG.vad_warmup_s)
    pcm = to_8k_pcm16(leg)
    live = [s for s in [s for i in range(0, len(pcm), 160) for s in endpointer.feed(pcm[i:i + 160])]
            + endpointer.flush() if s.final]
    assert len(batch) == len(live)
    for b, s in zip(batch, live):
        assert abs(b.start - s.start) < 0.35 and abs(b.end - s.end) < 0.35
