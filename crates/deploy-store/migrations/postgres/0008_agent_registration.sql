-- Which bootstrap token registered each agent, so that a registration retried after a
-- lost answer (the token already spent) can be recognised and answered again. One token
-- registers at most one agent; agents registered before this column have none.
ALTER TABLE agents ADD COLUMN bootstrap_token_id UUID REFERENCES api_tokens (id);
CREATE UNIQUE INDEX agents_bootstrap_token ON agents (bootstrap_token_id);
