-- Retention (storage/retention.py, emotivoice retention run): when a call's transcript was taken
-- out under the retention policy (its utterances' text, words and phrases, and the summary and
-- category evidence that quote them); NULL while the call still has its words.
ALTER TABLE calls ADD COLUMN transcript_expired_at TIMESTAMP;
