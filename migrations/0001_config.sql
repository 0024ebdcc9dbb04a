-- Configuration: sources, services, rules, admin tokens, and the audit of every change.
-- PostgreSQL is the source of truth; api materialises each row into the <ns>_config KV bucket.
-- Secrets are stored sealed (AES-256-GCM, see shared/src/crypto.rs) or, for tokens, as SHA-256.

-- Every change takes the next value: versions only grow, even across delete and re-create, so
-- a KV writer can always tell the newer of two values.
CREATE SEQUENCE config_version;

CREATE TABLE sources (
    id                  TEXT PRIMARY KEY CHECK (id ~ '^[a-z0-9][a-z0-9_-]{0,63}$'),
    name                TEXT NOT NULL,
    enabled             BOOLEAN NOT NULL DEFAULT TRUE,
    -- [{id, secret (sealed), created_at, expires_at}]: several while a rotation overlaps.
    signing_secrets     JSONB NOT NULL DEFAULT '[]'::jsonb,
    -- SHA-256 (hex) of accepted bearer tokens.
    bearer_token_hashes TEXT[] NOT NULL DEFAULT '{}',
    version             BIGINT NOT NULL DEFAULT nextval('config_version'),
    created_at          TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at          TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE TABLE services (
    name                      TEXT PRIMARY KEY CHECK (name ~ '^[a-z0-9][a-z0-9_-]{0,63}$'),
    description               TEXT NOT NULL DEFAULT '',
    enabled                   BOOLEAN NOT NULL DEFAULT TRUE,
    kind                      TEXT NOT NULL CHECK (kind IN ('rest', 'amqp', 'soap')),
    -- Transport fields by kind (base URL; AMQP host, port, vhost, user, sealed password, TLS,
    -- exchange, routing key, queue; SOAP endpoint, WSDL, version, namespace).
    transport                 JSONB NOT NULL,
    -- {type: none | bearer | api_key | basic, …sealed secrets}.
    auth                      JSONB NOT NULL,
    signing_secret            TEXT,
    headers                   JSONB NOT NULL DEFAULT '{}'::jsonb,
    timeout_ms                BIGINT NOT NULL,
    max_retries               INTEGER NOT NULL,
    backoff_base_ms           BIGINT NOT NULL,
    backoff_cap_ms            BIGINT NOT NULL,
    breaker_failure_threshold INTEGER NOT NULL,
    breaker_cooldown_ms       BIGINT NOT NULL,
    breaker_half_open_probes  INTEGER NOT NULL,
    concurrency               INTEGER NOT NULL,
    rate_limit_per_sec        INTEGER,
    max_job_age_ms            BIGINT NOT NULL,
    version                   BIGINT NOT NULL DEFAULT nextval('config_version'),
    created_at                TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at                TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX services_kind ON services (kind);

CREATE TABLE rules (
    id           UUID PRIMARY KEY,
    name         TEXT NOT NULL,
    description  TEXT NOT NULL DEFAULT '',
    enabled      BOOLEAN NOT NULL DEFAULT TRUE,
    -- Source ids whose events the rule takes; empty = every source.
    sources      TEXT[] NOT NULL DEFAULT '{}',
    -- Event name patterns: `*`, `\component\event\*`, `\component\event\name`.
    events       TEXT[] NOT NULL,
    condition    TEXT,
    service      TEXT NOT NULL REFERENCES services (name) ON DELETE RESTRICT,
    -- {kind: rest, method, path} | {kind: amqp, routing_key, exchange} | {kind: soap, operation}
    target       JSONB NOT NULL,
    headers      JSONB NOT NULL DEFAULT '{}'::jsonb,
    body         TEXT,
    content_type TEXT NOT NULL,
    ordering_key TEXT,
    version      BIGINT NOT NULL DEFAULT nextval('config_version'),
    created_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at   TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX rules_service ON rules (service);

CREATE TABLE admin_tokens (
    id           UUID PRIMARY KEY,
    label        TEXT NOT NULL,
    role         TEXT NOT NULL CHECK (role IN ('viewer', 'operator', 'admin')),
    token_hash   TEXT NOT NULL UNIQUE,
    -- The first characters of the token, to recognise it in lists.
    token_prefix TEXT NOT NULL,
    created_by   TEXT NOT NULL,
    created_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    last_used_at TIMESTAMPTZ,
    expires_at   TIMESTAMPTZ,
    revoked_at   TIMESTAMPTZ,
    version      BIGINT NOT NULL DEFAULT nextval('config_version')
);

CREATE TABLE config_audit (
    id            BIGSERIAL PRIMARY KEY,
    at            TIMESTAMPTZ NOT NULL DEFAULT now(),
    -- `token:<id> (<label>)`, `cli`, or `system`.
    actor         TEXT NOT NULL,
    action        TEXT NOT NULL,
    resource_kind TEXT NOT NULL,
    resource_id   TEXT NOT NULL,
    -- The API views before and after the change: secrets appear only as "is set" flags.
    before        JSONB,
    after         JSONB
);
CREATE INDEX config_audit_resource ON config_audit (resource_kind, resource_id, id DESC);
CREATE INDEX config_audit_at ON config_audit (at DESC);
