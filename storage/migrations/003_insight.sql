-- Conversation intelligence: how roles were decided, per-utterance sentiment and prosody against
-- the speaker's baseline, ambiguous sarcasm, and which utterance raised an alert.
ALTER TABLE speakers ADD COLUMN role_confidence DOUBLE;
ALTER TABLE speakers ADD COLUMN role_source VARCHAR;      -- channel | override | cues
ALTER TABLE speakers ADD COLUMN role_reason VARCHAR;
ALTER TABLE utterances ADD COLUMN sentiment DOUBLE;       -- VADER compound of the text
ALTER TABLE utterances ADD COLUMN prosody JSON;           -- pitch, pitch range, loudness, rate
ALTER TABLE utterances ADD COLUMN prosody_z JSON;         -- the same against this speaker earlier in the call
ALTER TABLE utterances ADD COLUMN interrupts BOOLEAN;
ALTER TABLE utterances ADD COLUMN phrases JSON;           -- escalation and churn phrases found
ALTER TABLE sarcasm ADD COLUMN ambiguous BOOLEAN;
ALTER TABLE alerts ADD COLUMN utterance_idx INTEGER;
