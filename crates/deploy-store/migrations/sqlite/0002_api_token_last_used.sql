-- When each API token last authenticated a request (unix millis; written at most once a minute).
ALTER TABLE api_tokens ADD COLUMN last_used_at INTEGER;
