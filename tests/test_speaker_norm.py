"""Per-speaker normalisation: the statistics, the serving history, and the head and stage using them
(a stub encoder: the head's arithmetic is under test, not Whisper)."""

import numpy as np

from emotivoice.analysis.emotion.head import EmotionHead, HeadModel
from emotivoice.analysis.emotion.speaker_norm import NormStats, SpeakerHistory, sample_histories
from emotivoice.analysis.stages.emotion import EmotionStage
from emotivoice.config import load_settings


def _speakers(rng, offsets=(-3.0, 0.0, 3.0), per=40):
    """Rows whose first feature is a speaker offset plus an emotion signal (+-1), the second noise."""
    x, spk, emo = [], [], []
    for s, off in enumerate(offsets):
        signal = rng.choice([-1.0, 1.0], per)
        x.append(np.c_[off + signal + rng.normal(0, 0.1, per), rng.normal(0, 1, per)])
        spk += [f"s{s}"] * per
        emo += ["anger" if v > 0 else "neutral" for v in signal]
    return np.concatenate(x), np.array(spk), np.array(emo)


def test_empty_history_leaves_the_row_and_history_removes_the_speaker_offset():
    rng = np.random.default_rng(0)
    x, spk, _ = _speakers(rng)
    stats = NormStats.fit(x, spk)
    assert stats.k0[0] < 0.5 < stats.k0[1]  # the offset feature trusts a short history, the noise one does not
    row = np.array([4.0, 0.3])  # speaker at +3, angry
    np.testing.assert_allclose(stats.normalise(row, np.empty((0, 2))), row)
    own = x[spk == "s2"][:5]
    moved = stats.normalise(row, own)
    assert abs(moved[0] - stats.mean[0]) < 2.0 < abs(row[0] - stats.mean[0])  # the +3 offset is mostly gone
    # one utterance of history moves the row less than five (shrinkage toward the global statistics)
    one = stats.normalise(row, own[:1])
    assert abs(one[0] - row[0]) < abs(moved[0] - row[0]) + 1.0


def test_sampled_histories_are_the_speakers_own_other_clips_of_the_kind_asked():
    rng = np.random.default_rng(1)
    _, spk, emo = _speakers(rng)
    idx = np.arange(len(spk))
    for kind in ("random", "neutral", "one_emotion"):
        hist = sample_histories(spk, emo, idx, (kind,), 5, rng)
        for i, h in zip(idx, hist):
            assert i not in h and len(h) <= 5 and set(spk[h]) <= {spk[i]}
            if kind == "neutral":
                assert set(emo[h]) <= {"neutral"}
            if kind == "one_emotion":
                assert len(set(emo[h])) <= 1
    assert all(len(h) == 0 for h in sample_histories(spk, emo, idx, ("none",), 5, rng))  # a first utterance


def test_serving_history_keeps_finished_utterances_only_within_its_window_and_forgets_the_call():
    stats = NormStats(np.zeros(2), np.ones(2), np.ones(2), with_std=False)
    history = SpeakerHistory(stats, window=2, max_speakers=2)
    row = np.array([1.0, 1.0])
    np.testing.assert_allclose(history.apply(("c1", "a"), row), row)  # first: global statistics
    history.apply(("c1", "a"), np.array([9.0, 9.0]), remember=False)  # a rolling update: not remembered
    got = history.apply(("c1", "a"), row)  # one remembered row (itself): w = 1/2
    np.testing.assert_allclose(got, row - 0.5 * row)
    for v in (3.0, 5.0):
        history.apply(("c1", "a"), np.array([v, v]))
    np.testing.assert_allclose(history.apply(("c1", "a"), np.zeros(2), remember=False), -np.full(2, 8 / 3))
    history.apply(("c2", "a"), row)
    history.forget("c1")
    assert len(history) == 1
    history.apply(("c3", "a"), row)
    history.apply(("c4", "a"), row)  # past max_speakers the least recently heard goes
    assert len(history) == 2
    np.testing.assert_allclose(history.apply(("c2", "a"), row), row)  # c2 was dropped: warm-up again


class OffsetEncoder:
    """Frames whose value is the clip's dominant frequency in kHz: a speaker's 'voice'."""

    name = "stub"

    def encode(self, clip):
        f = np.abs(np.fft.rfft(clip)).argmax() * 16000 / len(clip) / 1000
        return np.full((10, 1), f, np.float32)


def _tone(hz):
    return (0.1 * np.sin(np.arange(16000) * 2 * np.pi * hz / 16000)).astype(np.float32)


def _norm_head():
    # anger when the pooled mean is above 0.3 kHz (std is 0: second feature)
    head = EmotionHead(("anger", "neutral"), np.zeros(2), np.ones(2), np.array([[5.0, 0], [-5.0, 0]]),
                       np.array([-1.5, 1.5]), card={"prosody": None, "name": "n"})
    head.norm = NormStats(np.array([0.3, 0.0]), np.ones(2), np.zeros(2) + 1e-6, with_std=False)
    return head


def test_head_scores_a_clip_against_its_speakers_earlier_ones_and_round_trips(tmp_path):
    model = HeadModel(_norm_head(), OffsetEncoder(), norm_window=5)
    high = _tone(400)  # a high voice: anger on the global statistics
    alone = model.predict([high])[0]
    assert alone["anger"] > 0.5
    assert model.predict([high], [("c", "agent")])[0] == alone  # first utterance: global statistics
    # the same voice after its own speech: relative to itself it is no longer above the mean
    after = model.predict([high], [("c", "agent")])[0]
    assert after["anger"] < alone["anger"] - 0.2
    assert model.predict([high], [("c", "other")])[0] == alone  # another leg has its own history
    model.forget("c")
    assert model.predict([high], [("c", "agent")])[0] == alone
    off = HeadModel(_norm_head(), OffsetEncoder(), norm_window=0)  # the setting at 0: never normalised
    off.predict([high], [("c", "agent")])
    assert off.predict([high], [("c", "agent")])[0] == alone
    path = tmp_path / "h.npz"
    _norm_head().save(path)
    loaded = EmotionHead.load(path)
    np.testing.assert_allclose(loaded.norm.mean, [0.3, 0.0])
    assert loaded.norm.with_std is False


class PlainModel:
    """A model without speaker histories (a stub, HuBERT's classifier): the stage calls it as before."""

    name, labels, provisional = "plain", ("neutral",), False

    def predict(self, clips):
        return [{"neutral": 1.0} for _ in clips]


def test_stage_hands_speakers_to_a_per_speaker_model_and_not_to_others(tmp_path):
    settings = load_settings(env={"EMOTIVOICE_DATA_DIR": str(tmp_path)})
    assert settings.emotion.speaker_norm_window == 5
    plain = EmotionStage(settings, PlainModel())
    assert plain.predict([_tone(400)], [("c", 0)], [True]) == [{"neutral": 1.0}]
    plain.forget("c")
    stage = EmotionStage(settings, HeadModel(_norm_head(), OffsetEncoder(), settings.emotion.speaker_norm_window))
    first = stage.predict([_tone(400)], [("c", 0)], [False])[0]  # a rolling update: not remembered
    assert stage.predict([_tone(400)], [("c", 0)], [True])[0] == first
    assert stage.predict([_tone(400)], [("c", 0)], [True])[0]["anger"] < first["anger"]
    stage.forget("c")
    assert stage.predict([_tone(400)], [("c", 0)])[0] == first
