"""`emotivoice analyze` end to end: real recordings, real models, a real DuckDB file."""

import json

import duckdb
import numpy as np
import pytest

from emotivoice.analysis.audio import load_audio
from emotivoice.analysis.synth import write_audio
from conftest import DEMO, DEMO_TRUTH, run_cli, word_error_rate

pytestmark = pytest.mark.slow


def test_demo_call_transcripts_match_known_text_per_channel(demo_analysis):
    db, doc = demo_analysis
    call = doc["calls"][0]
    assert {s["label"]: s["role"] for s in call["speakers"]} == {"agent": "agent", "customer": "customer"}
    con = duckdb.connect(str(db), read_only=True)
    for speaker in ("agent", "customer"):
        stored = " ".join(r[0] for r in con.execute(
            "SELECT text FROM utterances WHERE call_id = ? AND speaker = ? ORDER BY start_s",
            [call["call_id"], speaker]).fetchall())
        truth = " ".join(t["text"] for t in DEMO_TRUTH["turns"] if t["speaker"] == speaker)
        assert word_error_rate(truth, stored) < 0.2, (speaker, stored)
    assert con.execute("SELECT status FROM calls").fetchone()[0] == "complete"


def test_each_utterance_sits_on_its_own_turn_with_words_and_tiers(demo_analysis):
    _, doc = demo_analysis
    call = doc["calls"][0]
    turns = DEMO_TRUTH["turns"]
    assert len(call["utterances"]) == len(turns)
    for utt, turn in zip(call["utterances"], turns):
        assert utt["speaker"] == turn["speaker"]
        # turn times span the whole clip, leading and trailing silence included
        assert turn["start"] - 0.3 <= utt["start"] < utt["end"] <= turn["end"] + 0.3
        assert utt["end"] - utt["start"] > 0.4 * (turn["end"] - turn["start"])
        assert utt["words"] and all(utt["start"] - 0.01 <= w["start"] <= w["end"] <= utt["end"] + 0.01
                                    for w in utt["words"])
        assert abs(sum(utt["emotions"].values()) - 1.0) < 1e-3
        top = max(utt["emotions"], key=utt["emotions"].get)
        assert utt["granular"][0]["emotion"] == top
    from emotivoice.analysis.emotion.head import EmotionHead
    from emotivoice.analysis.emotion.model import DEFAULT_HEAD

    assert call["models"]["emotion_provisional"] is EmotionHead.load(DEFAULT_HEAD).card["provisional"]


def test_json_document_has_the_documented_shape(demo_analysis):
    _, doc = demo_analysis
    call = doc["calls"][0]
    assert set(call) >= {"call_id", "duration_s", "speakers", "utterances"}
    assert abs(call["duration_s"] - 44.7) < 0.3
    assert {"label", "role", "talk_time_s"} <= set(call["speakers"][0])
    assert {"speaker", "start", "end", "text", "transcript_note", "emotions", "granular", "complex"} <= set(
        call["utterances"][0])
    # every turn of the demo has words, and nothing was invented: the guards had nothing to drop
    assert all(u["transcript_note"] == "" and u["text"] for u in call["utterances"])
    assert call["metrics"]["asr"]["no_words"] == 0 and call["metrics"]["asr"]["hallucinated_words_dropped"] == 0
    for speaker in call["speakers"]:  # acted sentences at a natural pace, turns that never overlap
        assert 80 < speaker["metrics"]["words_per_minute"] < 300
        assert speaker["metrics"]["interruptions_made"] == 0
    assert call["metrics"]["overlap_s"] == 0.0 and call["metrics"]["non_talk_s"] < 15


def test_stored_rows_match_the_json(demo_analysis):
    db, doc = demo_analysis
    call = doc["calls"][0]
    con = duckdb.connect(str(db), read_only=True)
    n_utts, n_scores = con.execute(
        "SELECT (SELECT count(*) FROM utterances), (SELECT count(*) FROM emotion_scores)").fetchone()
    assert n_utts == len(call["utterances"])
    assert n_scores == sum(len(u["emotions"]) for u in call["utterances"])
    talk = dict(con.execute("SELECT speaker, talk_time_s FROM speakers").fetchall())
    wpm = con.execute("SELECT metrics->>'$.words_per_minute' FROM speakers WHERE speaker = 'agent'").fetchone()[0]
    assert float(wpm) == call["speakers"][0]["metrics"]["words_per_minute"]
    assert talk == pytest.approx({s["label"]: s["talk_time_s"] for s in call["speakers"]}, abs=0.01)


@pytest.fixture(scope="module")
def telephony_batch(tmp_path_factory):
    """The demo as 8 kHz mu-law with swapped channels, a mono mixdown, and two broken files."""
    work = tmp_path_factory.mktemp("batch")
    stereo = load_audio(DEMO)
    swapped = write_audio(stereo[::-1], work / "swapped_ulaw.wav", ["-ar", "8000", "-c:a", "pcm_mulaw"])
    mono = write_audio(stereo.mean(axis=0, keepdims=True), work / "mono.mp3")
    corrupt = work / "corrupt.wav"
    corrupt.write_bytes(b"RIFF" + bytes(range(256)) * 20)
    missing = work / "missing.flac"
    db, js = work / "calls.duckdb", work / "out.json"
    proc = run_cli("analyze", str(swapped), str(corrupt), str(mono), str(missing), "--db", str(db),
                   "--json", str(js), "--channels", "customer,agent", "--model", "tiny.en", "--quiet")
    return proc, db, json.loads(js.read_text())


def test_bad_files_fail_alone_and_the_exit_code_says_so(telephony_batch):
    proc, db, doc = telephony_batch
    assert proc.returncode == 1
    errors = {e["path"].rsplit("/", 1)[-1]: e["error"] for e in doc["errors"]}
    assert set(errors) == {"corrupt.wav", "missing.flac"}
    assert "corrupt or unreadable" in errors["corrupt.wav"] and "no such file" in errors["missing.flac"]
    assert proc.stderr.count("error:") == 2
    assert duckdb.connect(str(db), read_only=True).execute("SELECT count(*) FROM calls").fetchone()[0] == 2


def test_channels_option_swaps_roles_on_telephony_audio(telephony_batch):
    _, _, doc = telephony_batch
    call = next(c for c in doc["calls"] if "swapped" in c["source"])
    assert [s["label"] for s in call["speakers"]] == ["customer", "agent"]  # left channel first
    for speaker in ("agent", "customer"):
        text = " ".join(u["text"] for u in call["utterances"] if u["speaker"] == speaker)
        truth = " ".join(t["text"] for t in DEMO_TRUTH["turns"] if t["speaker"] == speaker)
        assert word_error_rate(truth, text) < 0.35, (speaker, text)


def test_mono_is_diarized_into_the_two_speakers_with_roles(telephony_batch):
    """The demo mixed down to mono: diarization must recover who spoke when, and the agent."""
    _, _, doc = telephony_batch
    call = next(c for c in doc["calls"] if "mono" in c["source"])
    assert call["diarization"].startswith("pyannote segmentation-3.0")
    assert [s["label"] for s in call["speakers"]] == ["speaker_1", "speaker_2"]
    truth = DEMO_TRUTH["turns"]
    overlap = {}  # (hypothesis speaker, true speaker) -> seconds
    for u in call["utterances"]:
        for t in truth:
            shared = min(u["end"], t["end"]) - max(u["start"], t["start"])
            if shared > 0:
                overlap[(u["speaker"], t["speaker"])] = overlap.get((u["speaker"], t["speaker"]), 0) + shared
    first = overlap.get(("speaker_1", "agent"), 0) + overlap.get(("speaker_2", "customer"), 0)
    second = overlap.get(("speaker_1", "customer"), 0) + overlap.get(("speaker_2", "agent"), 0)
    assert first / (first + second) > 0.9  # speaker_1 (first to speak) is the agent's voice
    roles = {s["label"]: s for s in call["speakers"]}
    assert roles["speaker_1"]["role"] == "agent" and roles["speaker_2"]["role"] == "customer"
    assert roles["speaker_1"]["role_source"] == "cues" and 0.5 < roles["speaker_1"]["role_confidence"] < 1
    text = " ".join(u["text"] for u in call["utterances"] if u["speaker"] == "speaker_2")
    reference = " ".join(t["text"] for t in truth if t["speaker"] == "customer")
    assert word_error_rate(reference, text) < 0.4, text


def test_silent_file_is_stored_with_a_warning(tmp_path):
    silent = write_audio(np.zeros((1, 16000 * 3), np.float32), tmp_path / "silent.wav")
    proc = run_cli("analyze", str(silent), "--db", str(tmp_path / "c.duckdb"), "--json", str(tmp_path / "o.json"),
                   "--model", "tiny.en", "--quiet")
    assert proc.returncode == 0, proc.stderr
    call = json.loads((tmp_path / "o.json").read_text())["calls"][0]
    assert call["utterances"] == [] and "no speech detected" in call["warnings"]
    assert "no speech detected" in proc.stderr


def test_block_edges_do_not_cut_utterances(settings, tmp_path):
    """Decoding in 7 s blocks (bounded memory) finds the same utterances as one block."""
    from dataclasses import replace

    from emotivoice.analysis.pipeline import CallAnalyzer

    small = replace(settings, block_s=7.0, transcription=replace(settings.transcription, model="tiny.en"))
    whole = replace(small, block_s=600.0)
    a = CallAnalyzer(small).analyze(DEMO)
    b = CallAnalyzer(whole).analyze(DEMO)
    assert len(a.utterances) == len(b.utterances) == len(DEMO_TRUTH["turns"])
    for x, y in zip(a.utterances, b.utterances):
        # silero's onset moves a little with the audio before it; a split utterance would not overlap
        iou = (min(x.end, y.end) - max(x.start, y.start)) / (max(x.end, y.end) - min(x.start, y.start))
        assert x.speaker == y.speaker and iou > 0.7, (x.start, x.end, y.start, y.end)


def test_skip_known_does_not_reanalyse(demo_analysis):
    db, _ = demo_analysis
    proc = run_cli("analyze", str(DEMO), "--db", str(db), "--skip-known")
    assert proc.returncode == 0 and "skipped (already stored)" in proc.stderr


@pytest.mark.parametrize("head", ["missing.npz", "corrupt.npz"])
def test_dead_emotion_model_is_a_clear_error_and_stores_nothing(tmp_path, head):
    (tmp_path / "corrupt.npz").write_bytes(b"not a numpy archive")
    db = tmp_path / "c.duckdb"
    proc = run_cli("analyze", str(DEMO), "--db", str(db), "--quiet",
                   env={"EMOTIVOICE_EMOTION_HEAD_PATH": str(tmp_path / head)})
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: cannot load models: emotion head")
    assert "Traceback" not in proc.stderr and not db.exists()
