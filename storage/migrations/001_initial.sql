-- Calls, speakers and utterances with their emotion tiers, plus the tables later features fill:
-- sarcasm, risk, alerts and coach feedback. Keys are (call_id, ...) throughout so that rows
-- from separate workers meet by call and leg.

CREATE TABLE calls (
    call_id              VARCHAR PRIMARY KEY,
    source               VARCHAR,
    mode                 VARCHAR NOT NULL DEFAULT 'batch',      -- batch | live
    status               VARCHAR NOT NULL DEFAULT 'complete',   -- complete | live | failed
    started_at           TIMESTAMP,
    analyzed_at          TIMESTAMP NOT NULL DEFAULT current_timestamp,
    duration_s           DOUBLE,
    channels             INTEGER,
    diarization          VARCHAR,
    vad                  VARCHAR,
    asr_model            VARCHAR,
    emotion_model        VARCHAR,
    emotion_provisional  BOOLEAN,
    agent_id             VARCHAR,
    customer_id          VARCHAR,
    team                 VARCHAR,
    warnings             VARCHAR[]
);

CREATE TABLE speakers (
    call_id        VARCHAR NOT NULL,
    speaker        VARCHAR NOT NULL,
    role           VARCHAR NOT NULL,          -- agent | customer | unknown
    leg            INTEGER NOT NULL,
    language       VARCHAR,
    talk_time_s    DOUBLE,
    metrics        JSON,                      -- conversation metrics, filled by later stages
    PRIMARY KEY (call_id, speaker)
);

CREATE TABLE utterances (
    call_id          VARCHAR NOT NULL,
    utterance_idx    INTEGER NOT NULL,
    speaker          VARCHAR NOT NULL,
    leg              INTEGER NOT NULL,
    start_s          DOUBLE NOT NULL,
    end_s            DOUBLE NOT NULL,
    text             VARCHAR,
    language         VARCHAR,
    words            STRUCT(word VARCHAR, start_s DOUBLE, end_s DOUBLE, probability DOUBLE)[],
    loudness_dbfs    DOUBLE,
    base_emotion     VARCHAR,
    base_confidence  DOUBLE,
    granular         STRUCT(emotion VARCHAR, label VARCHAR, band VARCHAR, intensity DOUBLE)[],
    complex_emotion  VARCHAR,
    PRIMARY KEY (call_id, utterance_idx)
);

-- Long format so that "all utterances with anger above 0.6" is one indexed filter.
CREATE TABLE emotion_scores (
    call_id        VARCHAR NOT NULL,
    utterance_idx  INTEGER NOT NULL,
    emotion        VARCHAR NOT NULL,
    probability    DOUBLE NOT NULL,
    PRIMARY KEY (call_id, utterance_idx, emotion)
);

CREATE TABLE sarcasm (
    call_id        VARCHAR NOT NULL,
    utterance_idx  INTEGER NOT NULL,
    is_sarcastic   BOOLEAN NOT NULL,
    confidence     DOUBLE,
    reason         VARCHAR,
    PRIMARY KEY (call_id, utterance_idx)
);

CREATE TABLE risk_scores (
    call_id        VARCHAR NOT NULL,
    utterance_idx  INTEGER NOT NULL,
    speaker        VARCHAR NOT NULL,
    t_s            DOUBLE NOT NULL,
    score          DOUBLE NOT NULL,
    factors        JSON,
    PRIMARY KEY (call_id, utterance_idx, speaker)
);

CREATE SEQUENCE alert_ids;
CREATE TABLE alerts (
    alert_id         BIGINT PRIMARY KEY DEFAULT nextval('alert_ids'),
    call_id          VARCHAR NOT NULL,
    speaker          VARCHAR,
    t_s              DOUBLE,
    kind             VARCHAR NOT NULL,
    score            DOUBLE,
    factors          JSON,
    created_at       TIMESTAMP NOT NULL DEFAULT current_timestamp,
    acknowledged_by  VARCHAR,
    acknowledged_at  TIMESTAMP
);

CREATE SEQUENCE feedback_ids;
CREATE TABLE feedback (
    feedback_id    BIGINT PRIMARY KEY DEFAULT nextval('feedback_ids'),
    call_id        VARCHAR NOT NULL,
    utterance_idx  INTEGER,
    kind           VARCHAR NOT NULL,      -- emotion | sarcasm | escalation | note
    value          VARCHAR,
    note           VARCHAR,
    author         VARCHAR,
    created_at     TIMESTAMP NOT NULL DEFAULT current_timestamp
);
