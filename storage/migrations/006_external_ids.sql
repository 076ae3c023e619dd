-- The ids a call's source gave it (SIP Call-ID, Twilio stream SID, AudioHook conversation id,
-- AudioSocket UUID, custom parameters), kept as JSON data beside our own call_id: they are
-- searchable for support, and never become a file name or a key.
ALTER TABLE calls ADD COLUMN external_ids VARCHAR;
