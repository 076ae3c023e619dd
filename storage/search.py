"""Full-text search over every stored transcript (issue 16), on the index of storage/search_index.py.

A query is words, all required (AND), and "quoted phrases", whose words must also stand in that
order. Hits are utterances, ranked by BM25 (k1 1.2, b 0.75) over the query's indexed words, with
a bonus when the unquoted words occur together in the query's order; filters narrow them by the
speaker's role, the utterance's base emotion, and the call's agent, team, start date, category
and peak risk. Each hit carries the call, its start time, the speaker and a snippet of the stored
(redacted) text with the matched words marked «like this».

The read runs as any other named query: the store passes the user's scope (storage/access.py),
applied to the calls in SQL before any posting is ranked, and a redacted role (analyst) gets the
hits without their text (the snippet is the `text` column, which access.redact() replaces). The
query string is data only: it is cut into words by the index's own tokeniser, bound as
parameters, and its length and number of words are capped (MAX_QUERY_CHARS, MAX_TERMS), so no
input ever becomes SQL and no query can ask for unbounded work.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

import duckdb
import pandas as pd

from emotivoice.storage import search_index
from emotivoice.storage.db import BadRequest
from emotivoice.storage.queries import FULL, Scope, in_scope, read_query, write_action

MAX_QUERY_CHARS = 500
MAX_TERMS = 8  # distinct indexed words in one query
MAX_LIMIT = 200
K1, B = 1.2, 0.75
NEAR_BONUS = 1.5  # the unquoted words side by side, in the query's order
MARK_OPEN, MARK_CLOSE = "«", "»"
SNIPPET_BEFORE, SNIPPET_AFTER = 60, 140  # characters of context around the first hit
COLUMNS = ["call_id", "utterance_idx", "start_s", "speaker", "role", "emotion", "risk", "agent_id", "team",
           "started_at", "score", "text"]

_WORD = re.compile(r"[^\W_]+(?:'[^\W_]+)*")  # the tokeniser's words, for marking them in the original text
_PLACEHOLDER = re.compile(search_index.PLACEHOLDER)


@dataclass
class Parsed:
    """A query cut into the index's terms: `terms` (distinct, indexed, all required), each phrase as
    its full token list and as (slot, offset) pairs of its indexed words, and the near bonus."""

    terms: list[str] = field(default_factory=list)
    phrases: list[list[str]] = field(default_factory=list)
    phrase_slots: list[list[dict]] = field(default_factory=list)
    near_slots: list[list[dict]] = field(default_factory=list)


def parse(con: duckdb.DuckDBPyConnection, query: object) -> Parsed:
    """Words and "phrases" of `query`, tokenised exactly as the index was; BadRequest when too long."""
    if not isinstance(query, str):
        raise BadRequest("a search query must be a string")
    if len(query) > MAX_QUERY_CHARS:
        raise BadRequest(f"a search query is at most {MAX_QUERY_CHARS} characters")
    parts = query.split('"')  # odd parts were quoted (an unclosed quote quotes the rest)
    tokenised = con.execute(f"SELECT list_transform(?::VARCHAR[], lambda s: {search_index.tokens_sql('s')})",
                            [parts]).fetchone()[0]
    stop = set(search_index.STOPWORDS)
    parsed = Parsed()

    def slot(term: str) -> int:
        if term not in parsed.terms:
            parsed.terms.append(term)
        return parsed.terms.index(term)

    words: list[str] = []
    for i, tokens in enumerate(tokenised):
        if i % 2 == 0 or len(tokens) < 2:
            words.extend(tokens)
            continue
        pairs = [{"slot": slot(t), "off": k} for k, t in enumerate(tokens) if t not in stop]
        if pairs:
            parsed.phrases.append(tokens)
            parsed.phrase_slots.append(pairs)
    near = [{"slot": slot(t), "off": k} for k, t in enumerate(words) if t not in stop]
    if len(near) >= 2:
        parsed.near_slots.append(near)
    if len(parsed.terms) > MAX_TERMS:
        raise BadRequest(f"a search takes at most {MAX_TERMS} different words")
    return parsed


def _phrase_sql(param: str) -> str:
    """True when every phrase of `param` (STRUCT(slot, off)[][]) has its words at their offsets in `pos`."""
    return (f"coalesce(list_bool_and(list_transform({param}, lambda ph: len(list_filter(pos[ph[1].slot + 1], "
            "lambda s: list_bool_and(list_transform(ph, lambda e: list_contains(pos[e.slot + 1], "
            "s - ph[1].off + e.off))))) > 0)), true)")


_SLOTS = "?::STRUCT(slot INTEGER, off INTEGER)[][]"
_CALL_FILTERS = """
    SELECT k.call_key FROM search_calls k JOIN calls c USING (call_id)
    WHERE (?::VARCHAR IS NULL OR c.agent_id = ?) AND (?::VARCHAR IS NULL OR c.team = ?)
      AND (?::TIMESTAMP IS NULL OR c.started_at >= ?::TIMESTAMP)
      AND (?::TIMESTAMP IS NULL OR c.started_at < ?::TIMESTAMP + INTERVAL 1 DAY)
      AND (?::VARCHAR IS NULL OR list_contains(c.categories, ?))
      AND coalesce(c.peak_risk, 0) >= ?::DOUBLE AND {scope}"""


def _collection(con: duckdb.DuckDBPyConnection, terms: list[str]) -> tuple[list[int], float, float]:
    """Each term's document frequency (its postings: one pruned count each), the number of indexed
    utterances and their mean length: what BM25 needs, and what orders the joins rarest first."""
    counts = " UNION ALL ".join(f"SELECT {i} AS slot, count(*) AS df FROM search_postings WHERE term = ?"
                                for i in range(len(terms)))
    rows = dict(con.execute(f"SELECT slot, df FROM ({counts})", terms).fetchall())
    n, tokens = con.execute("SELECT coalesce(sum(docs), 0), coalesce(sum(tokens), 0) FROM search_calls").fetchone()
    return [int(rows.get(i, 0)) for i in range(len(terms))], float(max(n, 1)), float(tokens) / max(n, 1) or 1.0


def _ranked(con: duckdb.DuckDBPyConnection, parsed: Parsed, filters: list, scope: Scope, limit: int) -> list[tuple]:
    """The best `limit` utterances holding every term, in scope and through the filters.

    The postings of each term are read by a scan the zone maps prune to that term, joined on the
    utterance rarest term first, so a common word costs a hash join, never a sort of its postings;
    the call-level filters and the scope only join in when they narrow anything."""
    df, n, avgdl = _collection(con, parsed.terms)
    if not all(df):
        return []  # a word no utterance has: nothing can match all of them
    agent_id, team, date_from, date_to, category, min_risk, role, emotion = filters
    slots = range(len(parsed.terms))
    order = sorted(slots, key=lambda i: df[i])
    first = f"p{order[0]}"
    ctes = [f"p{i} AS (SELECT * FROM search_postings WHERE term = ?)" for i in slots]
    params: list = list(parsed.terms)
    narrowing = not scope.all or any(v is not None for v in (agent_id, team, date_from, date_to, category)) \
        or float(min_risk) > 0
    where = f"(?::VARCHAR IS NULL OR {first}.role = ?) AND (?::VARCHAR IS NULL OR {first}.emotion = ?)"
    if narrowing:
        ctes.append(f"allowed AS ({_CALL_FILTERS.format(scope=in_scope('c.'))})")
        params += [agent_id, agent_id, team, team, date_from, date_from, date_to, date_to, category, category,
                   float(min_risk), *scope.params()]
        where += f" AND {first}.call_key IN (SELECT call_key FROM allowed)"
    joins = " ".join(f"JOIN p{i} USING (call_key, utterance_idx)" for i in order[1:])
    idf = [math.log(1 + (n - d + 0.5) / (d + 0.5)) for d in df]
    per_len = K1 * B / avgdl
    bm25 = " + ".join(f"{idf[i]!r}::DOUBLE * p{i}.tf * {K1 + 1}::DOUBLE "  # numbers we computed, not input
                      f"/ (p{i}.tf + {K1 * (1 - B)!r}::DOUBLE + {per_len!r}::DOUBLE * p{i}.doc_len)" for i in slots)
    positions = ", ".join(f"p{i}.positions" for i in slots)
    sql = f"""
        WITH {", ".join(ctes)},
        m AS (SELECT {first}.call_key, {first}.utterance_idx, {first}.start_s, {first}.speaker, {first}.role,
                     {first}.emotion, {first}.risk, {bm25} AS bm25, [{positions}] AS pos
              FROM {first} {joins} WHERE {where}),
        top AS (SELECT *, bm25 * CASE WHEN {_phrase_sql(_SLOTS)} THEN {NEAR_BONUS} ELSE 1.0 END AS score
                FROM m WHERE {_phrase_sql(_SLOTS)}
                ORDER BY score DESC, call_key DESC, utterance_idx LIMIT ?)
        SELECT c.call_id, t.call_key, t.utterance_idx, t.start_s, t.speaker, t.role, t.emotion, t.risk, c.agent_id,
               c.team, c.started_at, t.score
        FROM top t JOIN search_calls k USING (call_key) JOIN calls c USING (call_id)
        ORDER BY t.score DESC, t.call_key DESC, t.utterance_idx"""
    params += [role, role, emotion, emotion, parsed.near_slots, parsed.phrase_slots, limit]
    return con.execute(sql, params).fetchall()


def _texts(con: duckdb.DuckDBPyConnection, keys: list[tuple[int, int]]) -> dict[tuple[int, int], tuple[str, list]]:
    """The stored text and its terms of each hit: the semi-join on call_key lets the zone maps skip
    every row group but the hits' (call_key only grows, so search_docs stays in its order)."""
    if not keys:
        return {}
    rows = con.execute(f"""
        WITH d AS (SELECT call_key, utterance_idx, text FROM search_docs
                   WHERE call_key IN (SELECT unnest(?::INTEGER[]))
                     AND list_contains(?::BIGINT[], call_key::BIGINT * {1 << 32} + utterance_idx))
        SELECT call_key, utterance_idx, text, {search_index.tokens_sql('text')} FROM d""",
                       [sorted({k for k, _ in keys}), [k * (1 << 32) + i for k, i in keys]]).fetchall()
    return {(r[0], r[1]): (r[2], r[3]) for r in rows}


def _has_phrase(tokens: list[str], phrase: list[str]) -> bool:
    n = len(phrase)
    return any(tokens[i:i + n] == phrase for i in range(len(tokens) - n + 1))


def snippet(text: str, terms: set[str]) -> str:
    """A window of `text` around its first matched word, every matched word marked «so»."""
    clean = text.replace(MARK_OPEN, "").replace(MARK_CLOSE, "")
    masked = _PLACEHOLDER.sub(lambda m: " " * len(m.group()), clean)  # placeholders are not words
    spans = [(m.start(), m.end()) for m in _WORD.finditer(masked)
             if m.group().lower().replace("\u2019", "'") in terms]
    first = spans[0][0] if spans else 0
    lo, hi = max(0, first - SNIPPET_BEFORE), min(len(clean), first + SNIPPET_AFTER)
    while lo > 0 and not clean[lo - 1].isspace():
        lo -= 1
    while hi < len(clean) and not clean[hi].isspace():
        hi += 1
    out, at = [], lo
    for start, end in spans:
        if start >= lo and end <= hi:
            out += [clean[at:start], MARK_OPEN, clean[start:end], MARK_CLOSE]
            at = end
    out.append(clean[at:hi])
    return ("… " if lo > 0 else "") + "".join(out).strip() + (" …" if hi < len(clean) else "")


@read_query
def search_utterances(con: duckdb.DuckDBPyConnection, search: str, role: str | None = None,
                      agent_id: str | None = None, team: str | None = None, date_from: str | None = None,
                      date_to: str | None = None, category: str | None = None, emotion: str | None = None,
                      min_risk: float = 0.0, limit: int = 50, *, scope: Scope = FULL) -> pd.DataFrame:
    """Utterances matching `search` (words AND "phrases"), best first, with the time and a marked
    snippet. `role` and `emotion` are the utterance's speaker role and base emotion; `min_risk` is
    the call's peak risk; dates are the call's start day (inclusive)."""
    if not isinstance(limit, int) or isinstance(limit, bool):
        raise BadRequest("limit must be an integer")
    limit = max(1, min(limit, MAX_LIMIT))
    parsed = parse(con, search)
    if not parsed.terms:
        return pd.DataFrame(columns=COLUMNS)
    filters = [agent_id, team, date_from, date_to, category, min_risk, role, emotion]
    ranked = _ranked(con, parsed, filters, scope, limit * 2 if parsed.phrases else limit)
    texts = _texts(con, [(r[1], r[2]) for r in ranked])
    marked = set(parsed.terms) | {t for p in parsed.phrases for t in p if t not in search_index.STOPWORDS}
    rows = []
    for r in ranked:
        text, tokens = texts.get((r[1], r[2]), ("", []))
        if not all(_has_phrase(tokens, p) for p in parsed.phrases):
            continue  # the positions matched, but a stopword between them did not
        rows.append([r[0], r[2], r[3], r[4], r[5], r[6], r[7], r[8], r[9], r[10], r[11], snippet(text, marked)])
    return pd.DataFrame(rows[:limit], columns=COLUMNS)


@write_action
def search_reindex(con: duckdb.DuckDBPyConnection) -> dict:
    """Rebuild the search index from every stored call (`emotivoice search reindex`)."""
    return search_index.reindex(con)
