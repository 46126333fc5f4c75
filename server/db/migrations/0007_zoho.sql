-- Zoho client state shared by every process and run (server/sync/tokens.py, server/sync/budget.py).
-- zoho_tokens: the current access token of one refresh token (keyed by a SHA-256 of client id, refresh token
-- and accounts URL: the refresh token itself is never stored) and the times of its recent mints, so that
-- all processes together stay under Zoho's 10 access tokens per 10 minutes. refresh_at is when processes
-- stop using the token (a few minutes before expires_at, so no call goes out with a dying token).
CREATE TABLE IF NOT EXISTS zoho_tokens (
    token_key    text PRIMARY KEY,
    access_token text,
    expires_at   timestamptz,
    refresh_at   timestamptz,
    mints        timestamptz[] NOT NULL DEFAULT '{}',
    updated_at   timestamptz NOT NULL DEFAULT now()
);

-- zoho_api_calls: calls spent per organisation and UTC day, against ZOHO_DAILY_BUDGET.
CREATE TABLE IF NOT EXISTS zoho_api_calls (
    organization_id text NOT NULL,
    day             date NOT NULL,
    calls           integer NOT NULL DEFAULT 0 CHECK (calls >= 0),
    PRIMARY KEY (organization_id, day)
);
