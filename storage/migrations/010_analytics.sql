-- Conversation analytics written with the call (analysis/insight/analytics.py): emotion and
-- sentiment by quarter of the call per speaker, and the customer at the start against the end.
-- Kept on the call's own row, so a live call's incremental save carries them with it.
ALTER TABLE calls ADD COLUMN quarters JSON;                 -- [{speaker, role, quarter, sentiment, emotions, ...}]
ALTER TABLE calls ADD COLUMN customer_start_vs_end JSON;    -- {start_sentiment, end_sentiment, trend, ...}
ALTER TABLE calls ADD COLUMN customer_start_sentiment DOUBLE;
ALTER TABLE calls ADD COLUMN customer_end_sentiment DOUBLE;
ALTER TABLE calls ADD COLUMN customer_trend VARCHAR;        -- improved | worsened | unchanged | one quarter
-- The post-call summary (analysis/insight/summary.py): why the customer called, key moments, what
-- the agent promised and how it ended, each pointing at its utterances; the headline for lists.
ALTER TABLE calls ADD COLUMN summary JSON;
ALTER TABLE calls ADD COLUMN summary_headline VARCHAR;
-- Categories from rules (analysis/insight/rules.py): the names for filters, and each match with
-- its evidence (utterance indexes and times) for the review.
ALTER TABLE calls ADD COLUMN categories VARCHAR[];
ALTER TABLE calls ADD COLUMN category_matches JSON;
