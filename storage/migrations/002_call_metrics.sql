-- Call-level conversation metrics (overlap, non-talk time), beside the per-speaker ones.
ALTER TABLE calls ADD COLUMN metrics JSON;
