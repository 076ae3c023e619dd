"""The full-text index the project keeps itself (migration 011): terms → utterances.

DuckDB's fts extension cannot be loaded offline for the pinned DuckDB, so this module maintains
an inverted index in plain tables, inside the transaction of every write that changes a call's
stored text: `save_call` (batch results and the live final pass; a call still 'live' is not
indexed until that pass), erasure, a recovered call finished, a transcript correction, and
`emotivoice search reindex` for stores written before the index existed. Only the stored text is
indexed, which is already redacted: redaction placeholders ("[CREDIT_CARD]", "[PERSON:1f0c9a2b]")
are dropped before tokenising, so not even the label or the stable hash becomes a term.

Tokenising is one SQL expression (`tokens_sql`), used for the index, for queries and for the
exact phrase check, so the three can never disagree. Every table and column name here is our
own; values travel as parameters. This module imports nothing from storage, so storage.db can
call it from save_call.
"""

from __future__ import annotations

import logging
import time

import duckdb
import pyarrow as pa

log = logging.getLogger(__name__)

# Words too common to find anything by; a phrase still counts their positions (see storage/search.py).
STOPWORDS = ("a", "an", "the", "and", "or", "but", "if", "of", "to", "in", "on", "at", "for", "with", "by", "from",
             "as", "is", "am", "are", "was", "were", "be", "been", "it", "it's", "its", "this", "that", "i", "i'm",
             "you", "he", "she", "we", "they", "me", "my", "your", "our", "so", "do", "um", "uh", "oh", "ah", "mm")
_STOP_SQL = "[" + ", ".join(f"'{w.replace(chr(39), chr(39) * 2)}'" for w in STOPWORDS) + "]"
PLACEHOLDER = r"\[[A-Z][A-Z_]*(:[0-9a-f]+)?\]"  # redaction's "[TYPE]" and "[TYPE:hash]"
TOKEN = r"[\pL\pN]+(?:'[\pL\pN]+)*"  # letters and digits, with inner apostrophes (don't, o'clock)
MAX_POSITION = 65535  # USMALLINT; an utterance never has that many words


def tokens_sql(expr: str) -> str:
    """SQL for the list of terms of `expr` (our own SQL expression, never input): placeholders
    dropped, curly apostrophes made straight, lower-cased, split into letter/digit runs."""
    return (f"regexp_extract_all(lower(regexp_replace(replace({expr}, '\u2019', ''''), '{PLACEHOLDER}', ' ', 'g')), "
            f"'{TOKEN.replace(chr(39), chr(39) * 2)}')")


def is_stopword_sql(expr: str) -> str:
    return f"list_contains({_STOP_SQL}, {expr})"


# What the index reads per utterance; `call_filter` is our own condition on u.call_id.
_TABLE_SOURCE = """
    SELECT u.call_id, u.utterance_idx, u.speaker, s.role, u.start_s, u.base_emotion AS emotion, r.score AS risk,
           u.text
    FROM utterances u
    LEFT JOIN speakers s ON s.call_id = u.call_id AND s.speaker = u.speaker
    LEFT JOIN risk_scores r ON r.call_id = u.call_id AND r.utterance_idx = u.utterance_idx AND r.speaker = u.speaker
    JOIN calls c ON c.call_id = u.call_id
    WHERE NOT coalesce(u.partial, false) AND u.text IS NOT NULL AND c.status <> 'live' AND {call_filter}"""
_RECORD_SCHEMA = pa.schema([("call_id", pa.string()), ("utterance_idx", pa.int32()), ("speaker", pa.string()),
                            ("role", pa.string()), ("start_s", pa.float64()), ("emotion", pa.string()),
                            ("risk", pa.float64()), ("text", pa.string())])


def _index_source(con: duckdb.DuckDBPyConnection, source: str, params: list, order: str) -> None:
    """Index every utterance `source` yields (SQL over our own tables or a registered relation):
    new call keys, postings and snippet text. The caller has forgotten the calls' old rows."""
    con.execute(f"""
        CREATE OR REPLACE TEMP TABLE search_batch AS
        WITH src AS ({source})
        SELECT * FROM (SELECT *, {tokens_sql('text')} AS toks FROM src) WHERE len(toks) > 0""", params)
    before = con.execute("SELECT coalesce(max(call_key), 0) FROM search_calls").fetchone()[0]
    con.execute("""
        INSERT INTO search_calls (call_key, call_id, docs, tokens)
        SELECT nextval('search_call_keys'), call_id, docs, tokens FROM (
            SELECT call_id, count(*)::INTEGER AS docs, sum(len(toks))::INTEGER AS tokens FROM search_batch
            GROUP BY call_id ORDER BY call_id)""")
    keyed = """(SELECT k.call_key, b.* FROM search_batch b JOIN search_calls k USING (call_id)
                WHERE k.call_key > ?)"""  # this batch's keys: the sequence only grows
    con.execute(f"""
        INSERT INTO search_postings
        WITH words AS (SELECT call_key, utterance_idx, speaker, role, start_s, emotion, risk, len(toks) AS doc_len,
                              unnest(toks) AS term, generate_subscripts(toks, 1) AS pos FROM {keyed})
        SELECT term, call_key, utterance_idx, least(count(*), {MAX_POSITION}),
               list(least(pos, {MAX_POSITION}) ORDER BY pos), least(any_value(doc_len), {MAX_POSITION}),
               any_value(start_s), any_value(speaker), any_value(role), any_value(emotion), any_value(risk)
        FROM words WHERE NOT {is_stopword_sql('term')}
        GROUP BY term, call_key, utterance_idx ORDER BY {order}""", [before])
    con.execute(f"INSERT INTO search_docs SELECT call_key, utterance_idx, text FROM {keyed} "
                "ORDER BY call_key, utterance_idx", [before])
    con.execute("DROP TABLE search_batch")


def forget_calls(con: duckdb.DuckDBPyConnection, call_ids: list[str]) -> int:
    """Remove these calls from the index (their postings, snippet text and keys); the rows removed.
    Cheap for a call never indexed: only search_calls (one row per call) is read."""
    keys = [r[0] for r in con.execute("SELECT call_key FROM search_calls WHERE list_contains(?::VARCHAR[], call_id)",
                                      [list(call_ids)]).fetchall()]
    if not keys:
        return 0
    bounds = [min(keys), max(keys), keys]  # keys only grow, so search_docs' zone maps skip the rest
    rows = con.execute("DELETE FROM search_postings WHERE call_key BETWEEN ? AND ? "
                       "AND list_contains(?::INTEGER[], call_key)", bounds).fetchone()[0]
    rows += con.execute("DELETE FROM search_docs WHERE call_key BETWEEN ? AND ? "
                        "AND list_contains(?::INTEGER[], call_key)", bounds).fetchone()[0]
    rows += con.execute("DELETE FROM search_calls WHERE list_contains(?::INTEGER[], call_key)", [keys]).fetchone()[0]
    return int(rows)


def index_stored_call(con: duckdb.DuckDBPyConnection, call_id: str) -> None:
    """(Re)index one call from what the tables hold now (a correction, a recovered call)."""
    forget_calls(con, [call_id])
    _index_source(con, _TABLE_SOURCE.format(call_filter="u.call_id = ?"), [call_id], "term")


def index_record(con: duckdb.DuckDBPyConnection, record) -> None:
    """(Re)index the call save_call is writing, from the record itself rather than re-reading the
    utterances table; a call still 'live' is only forgotten (the live final pass indexes it)."""
    call = record.call
    forget_calls(con, [call["call_id"]])
    if call.get("status", "complete") == "live":
        return
    roles = {s.get("speaker"): s.get("role") for s in record.speakers}
    risk = {(r.get("utterance_idx"), r.get("speaker")): r.get("score") for r in record.risk_scores}
    rows = [{"call_id": call["call_id"], "utterance_idx": u["utterance_idx"], "speaker": u.get("speaker"),
             "role": roles.get(u.get("speaker")), "start_s": u.get("start_s"), "emotion": u.get("base_emotion"),
             "risk": risk.get((u["utterance_idx"], u.get("speaker"))), "text": u.get("text")}
            for u in record.utterances if u.get("text") and not u.get("partial")]
    if not rows:
        return
    con.register("search_incoming", pa.Table.from_pylist(rows, schema=_RECORD_SCHEMA))
    try:
        _index_source(con, "SELECT * FROM search_incoming", [], "term")
    finally:
        try:
            con.unregister("search_incoming")
        except duckdb.Error:  # after a failure: save_call rolls back and reports the first error
            pass


def reindex(con: duckdb.DuckDBPyConnection) -> dict:
    """Rebuild the whole index from the stored calls, sorted by term (which is what keeps queries
    fast after many appends: new calls' rows land unsorted at the end), in one transaction."""
    t0 = time.perf_counter()
    con.execute("BEGIN TRANSACTION")
    try:
        for table in ("search_postings", "search_docs", "search_calls"):
            con.execute(f"DELETE FROM {table}")
        _index_source(con, _TABLE_SOURCE.format(call_filter="true"), [], "term, call_key, utterance_idx")
        con.execute("COMMIT")
    except BaseException:
        try:
            con.execute("ROLLBACK")
        except duckdb.Error:
            pass
        raise
    counts = con.execute("""SELECT (SELECT count(*) FROM search_calls), (SELECT coalesce(sum(docs), 0)
                                   FROM search_calls), (SELECT count(*) FROM search_postings)""").fetchone()
    try:
        con.execute("CHECKPOINT")  # old rows (and any text they held) leave the file now
    except duckdb.Error as exc:
        log.warning("checkpoint after reindex deferred", extra={"error": str(exc)[:200]})
    out = {"calls": counts[0], "utterances": int(counts[1]), "postings": counts[2],
           "seconds": round(time.perf_counter() - t0, 2)}
    log.info("search index rebuilt", extra=out)
    return out
