-- Full-text search (issue 16): DuckDB's fts extension is not available offline for the pinned
-- DuckDB, so storage/search_index.py keeps this index itself, in the transaction of every write
-- that changes a call's stored (already redacted) text: save_call (batch and the live final
-- pass), erasure, transcript corrections, and `emotivoice search reindex`.
--
-- search_calls: one row per indexed call. call_key is handed out anew each time a call is
-- (re)indexed, so it only grows and the rows below, appended in call_key order, keep tight
-- zone maps on it. docs/tokens give BM25 its collection size and average length.
CREATE SEQUENCE search_call_keys;
CREATE TABLE search_calls (
    call_key    INTEGER NOT NULL,
    call_id     VARCHAR NOT NULL,
    docs        INTEGER NOT NULL,        -- utterances indexed
    tokens      INTEGER NOT NULL,        -- their tokens, stopwords included
    indexed_at  TIMESTAMP NOT NULL DEFAULT current_timestamp
);
-- One row per (term, utterance): how often and where the term occurs, and what the filters and
-- the ranking need about the utterance, so a query reads only the rows of its own terms (kept
-- sorted by term by reindex, so DuckDB's zone maps skip every other row group). Stopwords are
-- not indexed; a phrase is checked on positions, then exactly on the text of the hits shown.
CREATE TABLE search_postings (
    term           VARCHAR NOT NULL,
    call_key       INTEGER NOT NULL,
    utterance_idx  INTEGER NOT NULL,
    tf             USMALLINT NOT NULL,
    positions      USMALLINT[] NOT NULL,  -- 1-based token positions, stopwords counted
    doc_len        USMALLINT NOT NULL,    -- tokens in the utterance
    start_s        FLOAT NOT NULL,
    speaker        VARCHAR,
    role           VARCHAR,               -- agent | customer | unknown
    emotion        VARCHAR,               -- the utterance's base emotion
    risk           FLOAT                  -- the speaker's escalation risk at that utterance
);
-- The text a hit's snippet is cut from (the stored, redacted utterance text), by call_key.
CREATE TABLE search_docs (
    call_key       INTEGER NOT NULL,
    utterance_idx  INTEGER NOT NULL,
    text           VARCHAR NOT NULL
);
