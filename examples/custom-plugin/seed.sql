-- A coaching app's legacy collections, exported to SQLite one JSON document
-- per row, plus the drawers its dual-write (runbook 003, Fase 1) has written
-- since 2025-02-01. 400 clients; the step migrates what came before.
CREATE TABLE users (
    user_id TEXT PRIMARY KEY,
    doc TEXT NOT NULL                      -- {"nombre_completo", "email", "telefono"}
);
CREATE TABLE questionnaire_responses (     -- the initial questionnaire's training half
    id TEXT PRIMARY KEY,
    user_id TEXT NOT NULL,
    submitted_at TEXT NOT NULL,
    doc TEXT NOT NULL
);
CREATE TABLE nutrition_questionnaire_submissions (   -- …and its nutrition half
    id TEXT PRIMARY KEY,
    user_id TEXT NOT NULL,
    submitted_at TEXT NOT NULL,
    doc TEXT NOT NULL
);
CREATE TABLE followup_submissions (
    followup_id TEXT PRIMARY KEY,
    user_id TEXT NOT NULL,
    submitted_at TEXT NOT NULL,
    doc TEXT NOT NULL                      -- {"training_section"?, "nutrition_section"?}
);
CREATE TABLE client_drawers (              -- TO BE: one document per client
    _id TEXT PRIMARY KEY,
    user_id TEXT NOT NULL UNIQUE,
    drawer TEXT NOT NULL
);
CREATE INDEX followups_by_user ON followup_submissions (user_id, submitted_at);

WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < 399)
INSERT INTO users
SELECT CAST(1000 + i AS TEXT),
       json_object('nombre_completo', 'Cliente ' || i,
                   'email', 'cliente' || i || '@example.org',
                   'telefono', '+34 600 ' || printf('%06d', i))
FROM n;

-- Initial questionnaires: most clients answered before the cutoff; every
-- tenth only after it (the dual-write's), and some clients twice (the first
-- one counts).
WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < 399)
INSERT INTO questionnaire_responses
SELECT 'qr-' || i, CAST(1000 + i AS TEXT),
       strftime('%Y-%m-%dT%H:%M:%SZ', '2024-10-01', '+' || ((i % 10 = 9) * 130 + i % 90) || ' days'),
       json_object('goals', json_object('primary_objective', CASE i % 3 WHEN 0 THEN 'Perder grasa' WHEN 1 THEN 'Ganar fuerza' ELSE 'Salud' END),
                   'availability', json_object('days_per_week', 2 + i % 4))
FROM n;
INSERT INTO questionnaire_responses
SELECT 'qr-again-' || user_id, user_id, '2025-01-20T10:00:00Z', json_object('goals', json_object('primary_objective', 'cambiado'))
FROM users WHERE CAST(user_id AS INTEGER) % 25 = 0;

WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < 399)
INSERT INTO nutrition_questionnaire_submissions
SELECT 'nq-' || i, CAST(1000 + i AS TEXT),
       strftime('%Y-%m-%dT%H:%M:%SZ', '2024-10-02', '+' || ((i % 10 = 9) * 130 + i % 90) || ' days'),
       json_object('nutrition_habits', json_object('meals_per_day', 3 + i % 3), 'preferences', json_array('mediterranea'))
FROM n WHERE i % 7 <> 3;

-- Three follow-ups per client, weekly from December: the later ones fall
-- after the 2025-02-01 cutoff and are the dual-write's.
WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < 1199)
INSERT INTO followup_submissions
SELECT 'fu-' || i, CAST(1000 + i / 3 AS TEXT),
       strftime('%Y-%m-%dT%H:%M:%SZ', '2024-12-01', '+' || ((i % 3) * 21 + (i / 3) % 30) || ' days'),
       CASE i % 4
         WHEN 0 THEN json_object('training_section', json_object('adherence', 0.5 + (i % 5) / 10.0))
         WHEN 1 THEN json_object('nutrition_section', json_object('adherence', 0.6 + (i % 4) / 10.0))
         ELSE json_object('training_section', json_object('adherence', 0.7), 'nutrition_section', json_object('weight_kg', 60 + i % 30))
       END
FROM n;

-- The dual-write's drawers for every twentieth client: profile and the
-- follow-ups it wrote since the cutoff (one drawer also got a follow-up from
-- just before it: the merge must not add that one twice).
INSERT INTO client_drawers
SELECT 'client_' || u.user_id, u.user_id,
       json_object('_id', 'client_' || u.user_id, 'user_id', u.user_id, 'profile', json(u.doc),
         'services', json_object('shared', json_object('questionnaires', json_object('followups',
           (SELECT json_group_array(json_object('followup_id', f.followup_id, 'submitted_at', f.submitted_at))
              FROM followup_submissions f
             WHERE f.user_id = u.user_id
               AND (f.submitted_at >= '2025-02-01' OR u.user_id = '1000'))))))
FROM users u WHERE CAST(u.user_id AS INTEGER) % 20 = 0;
