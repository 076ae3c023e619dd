"""Speaker diarization: the DER metric on hand-made cases, and the real models on real speech.

The conversation is assembled from two CREMA-D actors of the shared manifest (clips trimmed,
levelled, laid out as turns with pauses and one cross-talk), so who spoke when is known exactly.
"""

from __future__ import annotations

import numpy as np
import pytest

from emotivoice.analysis.audio import load_audio
from emotivoice.analysis.diarization.metrics import diarization_error_rate
from emotivoice.analysis.diarization.mixing import mix, trim_speech
from emotivoice.analysis.diarization.pipeline import Diarizer, SpeakerTurn
from emotivoice.analysis.diarization.segmentation import iter_windows, load_segmentation


def test_der_perfect_and_relabelled_hypothesis_is_zero():
    ref = [(0.0, 5.0, "A"), (5.5, 9.0, "B")]
    assert diarization_error_rate(ref, [(0.0, 5.0, 7), (5.5, 9.0, 3)])["der"] == 0.0


def test_der_counts_missed_false_alarm_and_confusion_without_collar():
    ref = [(0.0, 4.0, "A"), (4.0, 8.0, "B")]
    hyp = [(0.0, 3.0, 1), (4.0, 6.0, 2), (6.0, 8.0, 1), (8.0, 9.0, 2)]
    der = diarization_error_rate(ref, hyp, collar=0.0)
    assert der["total"] == pytest.approx(8.0)
    assert der["missed"] == pytest.approx(1.0)  # A's 3-4 s
    assert der["false_alarm"] == pytest.approx(1.0)  # 8-9 s
    assert der["confusion"] == pytest.approx(2.0)  # B's 6-8 s labelled as A's speaker
    assert der["der"] == pytest.approx(0.5)


def test_der_scores_overlap_per_speaker_and_mapping_is_one_to_one():
    ref = [(0.0, 4.0, "A"), (2.0, 6.0, "B")]
    # one hypothesis speaker for everything: B cannot also map to it
    der = diarization_error_rate(ref, [(0.0, 6.0, 0)], collar=0.0)
    assert der["total"] == pytest.approx(8.0)
    assert der["missed"] == pytest.approx(2.0)  # the overlap holds two speakers, one was found
    assert der["confusion"] == pytest.approx(2.0)  # B's 4-6 s went to A's speaker
    assert der["der"] == pytest.approx(0.5)


def test_der_collar_forgives_boundary_slack():
    ref = [(1.0, 5.0, "A")]
    hyp = [(1.2, 4.8, "x")]
    assert diarization_error_rate(ref, hyp, collar=0.0)["missed"] == pytest.approx(0.4)
    forgiven = diarization_error_rate(ref, hyp, collar=0.25)
    assert forgiven["der"] == 0.0 and forgiven["total"] == pytest.approx(3.5)


def test_der_of_empty_reference():
    assert diarization_error_rate([], [])["der"] == 0.0
    assert diarization_error_rate([], [(0.0, 1.0, 0)])["der"] == float("inf")


def test_windows_cover_short_and_streamed_input_with_padding():
    assert list(iter_windows([np.zeros(0, np.float32)], 100, 25)) == []
    (start, chunk), = iter_windows([np.ones(40, np.float32)], 100, 25)  # shorter than a window: padded
    assert start == 0 and chunk[:40].all() and not chunk[40:].any()
    x = np.arange(260, dtype=np.float32)
    whole = [(s, c.copy()) for s, c in iter_windows([x], 100, 25)]
    streamed = [(s, c.copy()) for s, c in iter_windows(np.array_split(x, 7), 100, 25)]
    assert [s for s, _ in whole] == [s for s, _ in streamed] == [0, 25, 50, 75, 100, 125, 150, 175]
    assert all(np.array_equal(a, b) for (_, a), (_, b) in zip(whole, streamed))
    assert whole[-1][1][84] == 259 and whole[-1][1][85] == 0  # last window reaches the end, zero-padded


def test_pyannote_backend_is_optional():
    try:
        import pyannote.audio  # noqa: F401
    except ImportError:  # not installable beside this torch wheel: a clear error, not a crash
        with pytest.raises(ImportError, match="pyannote.audio"):
            load_segmentation("pyannote")
    else:
        assert load_segmentation("pyannote").model is not None
    with pytest.raises(ValueError):
        load_segmentation("nope")


@pytest.fixture(scope="module")
def conversation(manifest):
    """~30 s: two CREMA-D actors alternating 10 turns, pauses and cross-talk, each in two moods."""
    moods = {"cremad-1011": ("neutral", "anger"), "cremad-1015": ("neutral", "happiness")}
    clips = {a: [c for c in manifest if c.speaker == a and c.emotion in m] for a, m in moods.items()}
    actors = list(moods)
    rng = np.random.default_rng(7)
    turns = [(a, [trim_speech(load_audio(c.path, channels=1)[0]) for c in clips[a][i:i + 2]])
             for i in range(0, 10, 2) for a in actors]
    return mix(turns, rng, overlap_prob=0.15)


@pytest.fixture(scope="module")
def diarizer():
    return Diarizer()


def hyp(result) -> list[tuple[float, float, int]]:
    return [(t.start, t.end, t.speaker) for t in result.turns]


@pytest.mark.slow
def test_two_actors_are_found_and_told_apart(diarizer, conversation):
    result = diarizer(conversation.audio)
    assert result.num_speakers == 2
    assert result.turns[0].speaker == 0 and all(isinstance(t, SpeakerTurn) for t in result.turns)
    assert result.centroids.shape == (2, 192)
    der = diarization_error_rate(conversation.reference, hyp(result))
    assert der["der"] < 0.15, der


@pytest.mark.slow
def test_known_speaker_count_is_honoured_on_streamed_blocks(diarizer, conversation):
    """Long calls arrive as decoded blocks; the result must not depend on where blocks end."""
    progress = []
    blocks = np.array_split(conversation.audio, 7)
    result = diarizer(iter(blocks), num_speakers=2, on_progress=lambda done, total: progress.append(done))
    assert result.num_speakers == 2
    assert diarization_error_rate(conversation.reference, hyp(result))["der"] < 0.15
    assert progress[-1] == pytest.approx(conversation.duration_s)
    assert hyp(result) == hyp(diarizer(conversation.audio, num_speakers=2))


@pytest.mark.slow
def test_silence_and_tiny_inputs_give_no_turns(diarizer):
    rng = np.random.default_rng(0)
    assert diarizer(np.zeros(16000 * 12, np.float32)).turns == []
    quiet = (rng.standard_normal(16000 * 4) * 1e-4).astype(np.float32)  # 4 s of line hiss, under one window
    result = diarizer(quiet)
    assert result.turns == [] and result.num_speakers == 0
    assert diarizer(np.zeros(0, np.float32)).turns == []
