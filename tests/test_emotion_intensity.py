"""The head's intensity output: saved and loaded with the head, handed from predict to the stage."""

from pathlib import Path

import numpy as np

from emotivoice.analysis.emotion.corpus import Clip
from emotivoice.analysis.emotion.head import EmotionHead, HeadModel
from emotivoice.analysis.emotion.training import fit_intensity, intensity_targets
from emotivoice.analysis.stages.emotion import EmotionStage
from emotivoice.config import load_settings


class FrameEncoder:
    """Frames whose mean is the clip's crest factor (peak / RMS): it survives the level
    normalisation before the encoder, and sets a spiky voice apart from an even one."""

    name = "stub"

    def encode(self, clip):
        crest = float(np.abs(clip).max() / max(np.sqrt(np.mean(np.square(clip))), 1e-9))
        return np.full((10, 2), crest, np.float32) + np.arange(10, dtype=np.float32)[:, None] * 0.01


def _head(dim=4):
    return EmotionHead(("anger", "neutral"), np.zeros(dim), np.ones(dim), np.array([[1.0] + [0] * (dim - 1),
                       [-1.0] + [0] * (dim - 1)]), np.zeros(2), card={"prosody": None})


def test_fitted_intensity_orders_levels_and_round_trips(tmp_path):
    rng = np.random.default_rng(0)
    level = np.repeat([0.0, 0.5, 1.0], 60)
    x = np.c_[level + rng.normal(0, 0.2, 180), rng.normal(0, 1, (180, 3))]
    head = _head()
    report = fit_intensity(head, x[::2], level[::2], x[1::2], level[1::2])
    assert report["val_spearman"] > 0.7
    path = tmp_path / "h.npz"
    head.save(path)
    loaded = EmotionHead.load(path)
    np.testing.assert_allclose(loaded.intensity(x), head.intensity(x), atol=1e-5)
    assert loaded.intensity(x).min() >= 0 and loaded.intensity(x).max() <= 1
    assert EmotionHead.load(path).intensity_weight is not None
    _head().save(path)  # an older head without intensity still loads, and says it has none
    assert EmotionHead.load(path).intensity(x) is None


def test_stage_reads_the_intensity_predict_found_for_the_same_clip(tmp_path):
    head = _head()
    head.intensity_weight, head.intensity_bias = np.array([0.5, 0, 0, 0]), -0.5  # crest 1.4 -> 0.2, crest 10 -> 1
    model = HeadModel(head, FrameEncoder())
    quiet = (0.1 * np.sin(np.arange(16000) * 2 * np.pi * 180 / 16000)).astype(np.float32)
    loud = np.where(np.arange(16000) % 100 == 0, 0.5, 0.0).astype(np.float32) + quiet * 1e-3
    assert model.intensity_of(loud) is None  # never predicted: nothing computed behind the caller's back
    model.predict([loud, quiet])
    assert model.intensity_of(loud) is not None and model.intensity_of(quiet) is not None
    assert model.intensity_of(loud + 0.001) is None
    stage = EmotionStage(load_settings(env={"EMOTIVOICE_DATA_DIR": str(tmp_path)}), model)
    for clip, band in ((loud, "high"), (quiet, "low")):  # anger is dominant in both: intensity sets the band
        probs = stage.predict([clip])[0]
        u = stage.utterance("c", 0, "customer", 0.0, 1.0, clip, probs)
        assert u.granular[0].emotion == "anger" and u.granular[0].band == band, u.granular


def test_targets_leave_neutral_and_unrated_clips_out():
    rows = [("anger", "low"), ("anger", "high"), ("neutral", "medium"), ("fear", ""), ("sadness", "medium")]
    clips = [Clip(Path(f"/x/{i}.wav"), "cremad", "s", e, lvl) for i, (e, lvl) in enumerate(rows)]
    t = intensity_targets(clips)
    assert t[0] == 0.0 and t[1] == 1.0 and t[4] == 0.5 and np.isnan(t[2]) and np.isnan(t[3])


def test_ray_emotion_worker_sends_the_intensity_back_with_the_probabilities(tmp_path):
    """The pool's process alone saw the head's intensity: it travels with the answer, and the call
    actor's stage (whose model is only a name) bands the utterance by it, as the embedded engine."""
    import asyncio

    from emotivoice.analysis.live.cluster.models import EmotionWorker

    head = _head()
    head.intensity_weight, head.intensity_bias = np.array([0.5, 0, 0, 0]), -0.5  # a pure tone: about 0.2
    quiet = (0.1 * np.sin(np.arange(16000) * 2 * np.pi * 180 / 16000)).astype(np.float32)
    settings = load_settings(env={"EMOTIVOICE_DATA_DIR": str(tmp_path)})
    worker = EmotionWorker(settings, HeadModel(head, FrameEncoder()))

    async def ask():
        return await worker.predict(quiet)
    probs, timing, intensity = asyncio.run(ask())
    assert intensity is not None and intensity < 0.3 and "batch_done_at" in timing
    remote_side = EmotionStage(settings, type("Named", (), {"name": "pool", "provisional": False})())
    by_probability = remote_side.utterance("c", 0, "customer", 0.0, 1.0, quiet, probs).granular[0]
    assert by_probability.emotion == "anger" and by_probability.band != "low"  # what Ray showed before
    u = remote_side.utterance("c", 0, "customer", 0.0, 1.0, quiet, probs, intensity=intensity)
    assert u.granular[0].emotion == "anger" and u.granular[0].band == "low", u.granular
