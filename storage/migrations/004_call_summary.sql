-- Per-call summaries written with the call, so that the dashboard's lists, agent trends and churn
-- reports read one row per call instead of scanning millions of utterances.
ALTER TABLE calls ADD COLUMN peak_risk DOUBLE;                 -- the customer's highest escalation risk
ALTER TABLE calls ADD COLUMN final_risk DOUBLE;                -- ... and where it ended
ALTER TABLE calls ADD COLUMN alert_count INTEGER;
ALTER TABLE calls ADD COLUMN customer_start_negative DOUBLE;   -- mean negative emotion, first 3 customer utterances
ALTER TABLE calls ADD COLUMN customer_end_negative DOUBLE;     -- ... and last 3
ALTER TABLE calls ADD COLUMN customer_final_emotion VARCHAR;
ALTER TABLE calls ADD COLUMN sarcasm_count INTEGER;
ALTER TABLE calls ADD COLUMN churn_phrases VARCHAR[];
ALTER TABLE calls ADD COLUMN agent_empathy DOUBLE;             -- agent's calm-warm share while the customer was negative
CREATE INDEX calls_started ON calls (started_at);
CREATE INDEX calls_agent ON calls (agent_id);
CREATE INDEX calls_customer ON calls (customer_id);
