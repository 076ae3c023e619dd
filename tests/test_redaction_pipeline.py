"""Redaction in the product (issue 15): a customer reads out a card number, and nothing of it is
left in the database, the JSON, the webhook-bound alerts or the kept recording.

Real models throughout: espeak-ng says the PII turn (as benchmarks/redaction.py does), Whisper
transcribes it, Presidio/spaCy redact it, DuckDB stores it, and the kept WAV is read back.
"""

from __future__ import annotations

import json
import re
import shutil
import wave
from dataclasses import replace
from pathlib import Path

import duckdb
import numpy as np
import pytest

from emotivoice.analysis.audio import SAMPLE_RATE, to_8k_pcm16
from emotivoice.analysis.pipeline import CallAnalyzer
from emotivoice.analysis.redaction.stage import policy_of
from emotivoice.analysis.service import InboxWatcher
from emotivoice.analysis.sink import analyze_and_store
from emotivoice.analysis.synth import write_audio
from emotivoice.storage.store import FileStore

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng is not installed")]

CARD = "4532015112830366"  # Luhn-valid
SAID = "four five three two, zero one five one, one two eight three, zero three six six"
DIGIT_WORDS = {"zero": "0", "oh": "0", "o": "0", "one": "1", "two": "2", "three": "3", "four": "4", "five": "5",
               "six": "6", "seven": "7", "eight": "8", "nine": "9"}


def card_leaks(text: str) -> list[str]:
    """Runs of 4+ digits of the card in `text`, written as digits or as words (spaces, commas and
    dashes between them do not break a run)."""
    leaks, run = [], ""
    text = re.sub(r"\d+\.\d+(e-?\d+)?", " # ", text)  # decimals (scores, times) are not said digits
    for token in re.findall(r"[A-Za-z]+|\d+|[^\sA-Za-z\d,.-]", text.lower()):
        digits = token if token.isdigit() else DIGIT_WORDS.get(token)
        if digits is not None:
            run += digits
            continue
        if len(run) >= 4:
            leaks += [run[i:i + 4] for i in range(len(run) - 3) if run[i:i + 4] in CARD]
        run = ""
    if len(run) >= 4:
        leaks += [run[i:i + 4] for i in range(len(run) - 3) if run[i:i + 4] in CARD]
    return leaks


def test_the_leak_check_finds_what_it_must():
    assert card_leaks("it's 4532 0151 1283 0366") and card_leaks("four five three two, zero one")
    assert card_leaks("4532-0151") and not card_leaks("It's 11 o'clock, call me at 9 tomorrow")
    assert not card_leaks('{"probability": 0.0151, "t_s": 4532.25}')


def espeak(text: str, workdir: Path, deliberate: bool = False) -> np.ndarray:
    from benchmarks.redaction import espeak as say

    return say(text, "en-us", 165, 50, workdir, deliberate=deliberate)


@pytest.fixture(scope="module")
def card_call(tmp_path_factory):
    """A two-party stereo call (agent left): the agent asks for the card, the customer reads it
    out in groups. Returns (16 kHz (2, n) audio, (start, end) of the card's digits)."""
    work = tmp_path_factory.mktemp("tts")
    gap = np.zeros(int(0.8 * SAMPLE_RATE), np.float32)
    breath = np.zeros(int(0.25 * SAMPLE_RATE), np.float32)
    turns = [(0, [espeak("Thank you for calling First Bank, how can I help you today?", work)]),
             (1, [espeak("Hi, I would like to pay my bill please.", work)]),
             (0, [espeak("Of course. Can I have the card number, please?", work)]),
             (1, [espeak("Sure, my card number is", work), breath, espeak(SAID, work, deliberate=True)]),
             (0, [espeak("Thank you, the payment is done. Is there anything else?", work)]),
             (1, [espeak("No, that is all, thank you.", work)])]
    pieces, cursor, span = [], 0.5, None
    for leg, clips in turns:
        for k, clip in enumerate(clips):
            if len(clips) > 1 and k == len(clips) - 1:
                span = (cursor, cursor + len(clip) / SAMPLE_RATE)
            pieces.append((leg, cursor, clip))
            cursor += len(clip) / SAMPLE_RATE
        cursor += len(gap) / SAMPLE_RATE
    audio = np.zeros((2, int((cursor + 0.5) * SAMPLE_RATE)), np.float32)
    for leg, start, clip in pieces:
        i = int(start * SAMPLE_RATE)
        audio[leg, i:i + len(clip)] += clip
    return audio, span


def product_settings(settings, root: Path):
    return replace(settings, data_dir=root, db_path=root / "calls.duckdb", inbox_dir=root / "inbox",
                   live=replace(settings.live, audio_dir=root / "calls"))


def strings(value) -> list[str]:
    """Every text value inside `value` (rows, lists of words, structs), numbers left out."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        value = list(value.values())
    if isinstance(value, (list, tuple)):
        return [t for v in value for t in strings(v)]
    return []


def table_leaks(db: Path) -> dict[str, list[str]]:
    """Every value of every table in the DuckDB file, searched for the card."""
    con = duckdb.connect(str(db), read_only=True)
    found = {}
    try:
        tables = [r[0] for r in con.execute("SELECT table_name FROM information_schema.tables "
                                            "WHERE table_schema = 'main' AND table_type = 'BASE TABLE'").fetchall()]
        assert {"calls", "utterances", "alerts"} <= set(tables)
        for table in tables:
            blob = " | ".join(strings(con.execute(f'SELECT * FROM "{table}"').fetchall()))
            if card_leaks(blob):
                found[table] = card_leaks(blob)
    finally:
        con.close()
    return found


def wav_samples(path: Path) -> tuple[np.ndarray, int]:
    with wave.open(str(path)) as w:
        frames, rate, channels = w.readframes(w.getnframes()), w.getframerate(), w.getnchannels()
    return np.frombuffer(frames, "<i2").reshape(-1, channels).astype(np.float64) / 32768, rate


def rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(x ** 2))) if x.size else 0.0


def assert_card_silenced(path: Path, span: tuple[float, float]) -> None:
    """The card's digits are silent on every channel of the kept WAV; the rest of the call is not."""
    samples, rate = wav_samples(path)
    a, b = span
    over_card = samples[int((a + 0.1) * rate):int((b - 0.1) * rate)]
    assert rms(over_card) < 1e-4, f"card audible in {path.name}: RMS {rms(over_card):.4f}"
    assert rms(samples[: int(a * rate) - rate]) > 0.01  # the greeting and the rest are still there


def assert_policy(row, settings) -> dict:
    policy, version, summary = row
    assert policy == settings.redaction.policy_name and version == policy_of(settings.redaction)["version"]
    summary = json.loads(summary)
    assert summary["entities"].get("CREDIT_CARD", 0) >= 1 and summary["redacted_audio_s"] > 1.0
    return summary


def test_batch_analysis_stores_and_keeps_nothing_of_the_card(settings, tmp_path, card_call):
    audio, span = card_call
    s = product_settings(settings, tmp_path)
    wav = write_audio(audio, s.inbox_dir / "card-call.wav", ["-c:a", "pcm_s16le"])
    mp3 = write_audio(audio, s.inbox_dir / "card-call-2.mp3", ["-b:a", "128k"])
    store = FileStore(s.db_path)
    analyzer = CallAnalyzer(s)
    result = analyze_and_store(analyzer, wav, store)  # as the inbox service does, to see its JSON too

    doc = json.dumps(result.to_json())
    assert not card_leaks(doc), card_leaks(doc)
    assert "[CREDIT_CARD]" in doc  # redacted, not lost: the customer's turn says what was there
    assert result.to_json()["redaction"]["policy"] == policy_of(s.redaction)
    assert result.to_json()["redaction"]["audio"] == "silence"
    assert_card_silenced(wav, span)  # rewritten in place, still where the dashboard plays it from

    watcher = InboxWatcher(analyzer, s.inbox_dir, store, poll_s=0)
    watcher.poll_once()  # sizes noted
    stored = watcher.poll_once()  # the mp3 (the WAV is known): redacted as a WAV beside the inbox
    assert len(stored) == 1 and not mp3.exists()
    kept = next((s.inbox_dir / "redacted").glob("*.wav"))
    assert_card_silenced(kept, span)
    assert watcher.poll_once() == []  # its own rewritten files are not new recordings

    assert table_leaks(s.db_path) == {}
    con = duckdb.connect(str(s.db_path), read_only=True)
    rows = con.execute("SELECT call_id, source, redaction_policy, redaction_version, redaction FROM calls "
                       "ORDER BY source").fetchall()
    texts = [r[0] for r in con.execute("SELECT text FROM utterances WHERE text LIKE '%[CREDIT_CARD]%'").fetchall()]
    con.close()
    assert len(rows) == 2 and len(texts) == 2
    assert {Path(r[1]).resolve() for r in rows} == {wav.resolve(), kept.resolve()}  # what the review page plays
    for row in rows:
        assert assert_policy(row[2:], s)["audio"] == "silence"
    for path in (wav, kept, s.db_path):
        assert path.stat().st_mode & 0o077 == 0


def test_user_files_outside_the_kept_dirs_are_never_rewritten(settings, tmp_path, card_call):
    audio, span = card_call
    s = product_settings(settings, tmp_path / "data")
    mine = write_audio(audio, tmp_path / "mine" / "card.wav", ["-c:a", "pcm_s16le"])
    before = mine.read_bytes()
    result = analyze_and_store(CallAnalyzer(s), mine, FileStore(s.db_path))
    assert mine.read_bytes() == before and result.metrics["redaction"]["audio"] == "not kept"
    assert table_leaks(s.db_path) == {}


class RecordingStore:
    """A real store that keeps every record the live engine sends it (the live deltas too)."""

    def __init__(self, store):
        self.store, self.records = store, []

    def save_call(self, record):
        self.records.append(json.dumps(record.__dict__, default=str))
        self.store.save_call(record)

    def save_deltas(self, deltas):  # the live writer's saves: only what changed
        self.records += [json.dumps(d.__dict__, default=str) for d in deltas]
        self.store.save_deltas(deltas)

    def __getattr__(self, name):
        return getattr(self.store, name)


def test_live_call_is_redacted_live_and_its_recording_by_the_final_pass(settings, tmp_path, card_call):
    from emotivoice.analysis.live.engine import LiveEngine
    from emotivoice.analysis.live.replay import replay
    from emotivoice.app.serve import batch_finalizer
    from emotivoice.storage.server import StoreServer

    audio, span = card_call
    s = product_settings(settings, tmp_path)
    s = replace(s, live=replace(s.live, webhook_url=""))
    server = StoreServer(s.db_path).start()
    store = RecordingStore(server)
    engine = LiveEngine(s, store, finalizer=batch_finalizer(s)).start()
    alerts = []
    engine.publisher.publish = alerts.append  # what would go to the webhook
    legs = {"agent": to_8k_pcm16(audio[0]), "customer": to_8k_pcm16(audio[1])}
    replay(engine.inbox, "card-live", legs, 8000, roles={"agent": "agent", "customer": "customer"}, speed=3.0)
    engine.stop(wait_s=300)
    server.close()

    # every utterance was transcribed live, redacted, and its text stored while the call ran
    assert engine.latencies and all(lat["transcript"] == "done" and lat["transcript_s"] for lat in engine.latencies)
    live = [r for r in store.records if '"status": "live"' in r]
    assert live, "no live save was seen"
    assert any("[CREDIT_CARD]" in r for r in live), "the live transcript of the card turn was never stored"
    for record in store.records:
        assert not card_leaks(record), card_leaks(record)
    for alert in alerts:
        assert not card_leaks(json.dumps(alert))
    assert engine.calls == {} and not list((s.live.audio_dir / ".partial").glob("*"))  # no raw legs left
    assert table_leaks(s.db_path) == {}
    con = duckdb.connect(str(s.db_path), read_only=True)
    status, *policy = con.execute("SELECT status, redaction_policy, redaction_version, redaction FROM calls "
                                  "WHERE call_id = 'card-live'").fetchone()
    con.close()
    assert status == "complete"  # the final batch pass superseded the live rows
    assert assert_policy(policy, s)["audio"] == "silence"
    kept = next(s.live.audio_dir.rglob("card-live.wav"))
    assert_card_silenced(kept, span)
    assert kept.stat().st_mode & 0o077 == 0
