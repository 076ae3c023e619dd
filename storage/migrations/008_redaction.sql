-- The redaction policy a call was analysed under (issue 15): its name and a digest of its settings
-- and recognizers, so a call analysed under other settings says so, and what was taken out (JSON:
-- counts per entity type, redacted utterances and seconds of audio, what became of the recording;
-- never a value). NULL for calls stored before redaction existed.
ALTER TABLE calls ADD COLUMN redaction_policy VARCHAR;
ALTER TABLE calls ADD COLUMN redaction_version VARCHAR;
ALTER TABLE calls ADD COLUMN redaction VARCHAR;
