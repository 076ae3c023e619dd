-- Live calls: an utterance still being spoken is stored with partial = true and replaced as it
-- grows; frames a call lost before analysis (a full inbox, network loss) are counted, not hidden.
ALTER TABLE utterances ADD COLUMN partial BOOLEAN DEFAULT false;
ALTER TABLE calls ADD COLUMN dropped_frames INTEGER DEFAULT 0;
ALTER TABLE calls ADD COLUMN ended_at TIMESTAMP;
CREATE INDEX calls_status ON calls (status);
