-- The coaching app's legacy tables on the morning of the migration
-- (runbook 003, "Fase 0" done: `client_drawers` exists, and dual-write has
-- been on since the cutoff 2026-01-01, so clients who signed up since then
-- already have a drawer written by the app).
--
-- 1200 clients from before the cutoff, each with an initial questionnaire
-- and 3 follow-ups before the cutoff (4800 history rows to migrate);
-- 300 clients since the cutoff, whose drawers the app already wrote and
-- whose rows are also in the legacy tables (dual-write writes both).

CREATE TABLE legacy_clients (
    id bigint PRIMARY KEY,
    full_name text NOT NULL,
    email text NOT NULL UNIQUE,
    coach text NOT NULL,
    created_at timestamptz NOT NULL
);
INSERT INTO legacy_clients
SELECT g,
       'Cliente ' || g,
       'cliente' || g || '@example.org',
       (ARRAY['ana', 'jorge', 'lucia', 'pablo'])[1 + g % 4],
       CASE WHEN g <= 1200
            THEN timestamptz '2024-01-01 09:00+00' + g * interval '13 hours'
            ELSE timestamptz '2026-01-01 09:00+00' + (g - 1200) * interval '5 hours'
       END
FROM generate_series(1, 1500) g;

CREATE TABLE legacy_questionnaires (
    id bigint PRIMARY KEY,
    questionnaire_id text NOT NULL UNIQUE,   -- the logical id
    client_id bigint NOT NULL,
    submitted_at timestamptz NOT NULL,
    answers jsonb NOT NULL
);
INSERT INTO legacy_questionnaires
SELECT c.id, 'q-' || c.id, c.id, c.created_at + interval '1 hour',
       jsonb_build_object('goal', (ARRAY['weight', 'sleep', 'energy'])[1 + c.id % 3],
                          'height_cm', 150 + c.id % 45,
                          'smoker', c.id % 9 = 0)
FROM legacy_clients c;

CREATE TABLE legacy_followups (
    id bigint PRIMARY KEY,
    followup_id text NOT NULL UNIQUE,        -- the logical id
    client_id bigint NOT NULL,
    submitted_at timestamptz NOT NULL,
    weight_kg numeric(5, 1) NOT NULL,
    mood int NOT NULL CHECK (mood BETWEEN 1 AND 5)
);
INSERT INTO legacy_followups
SELECT (c.id - 1) * 3 + n,
       'f-' || c.id || '-' || n,
       c.id,
       c.created_at + n * interval '7 days',
       60 + (c.id % 40) - n * 0.5,
       1 + (c.id + n) % 5
FROM legacy_clients c, generate_series(1, 3) n
WHERE c.id <= 1200 OR n = 1;

-- The target model ("cuestionario único"): one JSONB document per client.
CREATE TABLE client_drawers (
    client_id bigint PRIMARY KEY,
    snapshot_id text NOT NULL,
    drawer jsonb NOT NULL,
    source text NOT NULL               -- 'dual-write' (the app) or 'history' (this plan)
);
-- Every follow-up inside a drawer, by its logical id: the duplicates check.
CREATE VIEW drawer_followups AS
SELECT d.client_id, f ->> 'followup_id' AS followup_id
FROM client_drawers d, jsonb_array_elements(d.drawer -> 'followups') f;

-- Drawers the app wrote since the cutoff.
INSERT INTO client_drawers
SELECT c.id, 'snap-' || c.id,
       jsonb_build_object(
           'client', jsonb_build_object('id', c.id, 'name', c.full_name, 'email', c.email, 'coach', c.coach),
           'initial_questionnaire', jsonb_build_object('questionnaire_id', q.questionnaire_id, 'submitted_at', q.submitted_at, 'answers', q.answers),
           'followups', (SELECT jsonb_agg(jsonb_build_object('followup_id', f.followup_id, 'submitted_at', f.submitted_at,
                                                             'weight_kg', f.weight_kg, 'mood', f.mood) ORDER BY f.submitted_at)
                         FROM legacy_followups f WHERE f.client_id = c.id)),
       'dual-write'
FROM legacy_clients c JOIN legacy_questionnaires q ON q.client_id = c.id
WHERE c.created_at >= '2026-01-01';

ANALYZE;
