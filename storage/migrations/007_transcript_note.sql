-- Speech that was found but gave no words is marked, not stored as if nothing was said:
-- transcript_note is 'no words recognised' for such an utterance (its text stays empty), NULL or
-- '' otherwise. What the transcript guards dropped on a call is counted in calls.metrics ('asr').
ALTER TABLE utterances ADD COLUMN transcript_note VARCHAR;
