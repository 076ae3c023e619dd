-- QA scorecards (analysis/insight/scorecard.py, storage/scorecards.py): one row per call and
-- question. The automatic answer (auto_*) is replaced whenever the call is analysed or rescored;
-- a coach's answer (source = 'coach': score, note, who, when) survives both, like feedback.
-- No key constraints: rows are replaced per call inside save_call's transaction, by our own code.
CREATE TABLE scorecard_answers (
    call_id      VARCHAR NOT NULL,
    question_id  VARCHAR NOT NULL,       -- the card's stable id for the question
    position     INTEGER,                -- its place on the card
    question     VARCHAR NOT NULL,       -- the question as the coach and the agent read it
    weight       DOUBLE NOT NULL,
    answer_kind  VARCHAR NOT NULL,       -- category | metric | coach: where the automatic answer comes from
    auto_score   DOUBLE,                 -- 1 yes, 0 no, NULL: left for the coach or not measurable
    auto_note    VARCHAR,                -- why, in words ("category 'greeting' found")
    evidence     JSON,                   -- the utterances and times that decided it
    source       VARCHAR NOT NULL DEFAULT 'auto',   -- auto | coach: who gave `score`
    score        DOUBLE,                 -- what counts: auto_score, or the coach's answer
    note         VARCHAR,                -- the coach's note (required with a coach answer)
    changed_by   VARCHAR,
    changed_at   TIMESTAMP               -- UTC
);
CREATE INDEX scorecard_answers_call ON scorecard_answers (call_id);

-- An agent's dispute of their call's scorecard (or of one answer), and the coach's resolution.
CREATE SEQUENCE scorecard_dispute_ids;
CREATE TABLE scorecard_disputes (
    dispute_id   BIGINT PRIMARY KEY DEFAULT nextval('scorecard_dispute_ids'),
    call_id      VARCHAR NOT NULL,
    question_id  VARCHAR,                -- NULL: the scorecard as a whole
    reason       VARCHAR NOT NULL,
    raised_by    VARCHAR NOT NULL,
    raised_at    TIMESTAMP NOT NULL,     -- UTC
    status       VARCHAR NOT NULL DEFAULT 'open',   -- open | accepted | rejected
    resolved_by  VARCHAR,
    resolved_at  TIMESTAMP,
    resolution   VARCHAR                 -- the coach's note on the decision
);

ALTER TABLE calls ADD COLUMN scorecard_name VARCHAR;
ALTER TABLE calls ADD COLUMN scorecard_score DOUBLE;   -- 0-100, weighted over the answered questions
