"""Read queries for the dashboard and reports. Parameters only: no SQL is built from input.

Each read opens the file read-only for just as long as the query takes, so a writer that
opens, writes and closes per call can always get in, and readers wait briefly for it.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from storage.db import connect


def _read(db_path: Path | str, sql: str, params: list | None = None) -> pd.DataFrame:
    con = connect(db_path, read_only=True, wait_s=5.0)
    try:
        return con.execute(sql, params or []).df()
    finally:
        con.close()


def list_calls(db_path: Path | str, limit: int = 500) -> pd.DataFrame:
    return _read(db_path, """
        SELECT c.call_id, c.analyzed_at, c.duration_s, c.mode, c.status, c.diarization,
               c.emotion_model, c.emotion_provisional,
               (SELECT count(*) FROM utterances u WHERE u.call_id = c.call_id) AS utterances
        FROM calls c ORDER BY c.analyzed_at DESC LIMIT ?""", [limit])


def call_speakers(db_path: Path | str, call_id: str) -> pd.DataFrame:
    return _read(db_path, "SELECT * FROM speakers WHERE call_id = ? ORDER BY leg", [call_id])


def call_utterances(db_path: Path | str, call_id: str) -> pd.DataFrame:
    return _read(db_path, """
        SELECT utterance_idx, speaker, start_s, end_s, text, base_emotion, base_confidence,
               list_transform(granular, lambda g: g.label) AS granular_labels, complex_emotion, loudness_dbfs
        FROM utterances WHERE call_id = ? ORDER BY start_s""", [call_id])


def call_emotion_scores(db_path: Path | str, call_id: str) -> pd.DataFrame:
    return _read(db_path, """
        SELECT u.utterance_idx, u.speaker, u.start_s, u.end_s, s.emotion, s.probability
        FROM emotion_scores s JOIN utterances u USING (call_id, utterance_idx)
        WHERE s.call_id = ? ORDER BY u.start_s, s.emotion""", [call_id])


def stored_call_ids(db_path: Path | str) -> set[str]:
    """Ids of every stored call; empty when there is no database yet."""
    if not Path(db_path).is_file():
        return set()
    return set(_read(db_path, "SELECT call_id FROM calls").call_id)
