-- Runbook 003, "Fase 2: Migración": one drawer per client from the legacy
-- rows, history only before DUAL_WRITE_START_AT (2026-01-01: what came
-- later the app already wrote into the drawers).
--
-- Idempotent by logical id: a client that already has a drawer (written by
-- the app, or by an earlier run of this script) is left alone, so running
-- it twice never duplicates anything.
INSERT INTO client_drawers (client_id, snapshot_id, drawer, source)
SELECT c.id,
       'snap-' || c.id,
       jsonb_build_object(
           'client', jsonb_build_object('id', c.id, 'name', c.full_name, 'email', c.email, 'coach', c.coach),
           'initial_questionnaire', (
               SELECT jsonb_build_object('questionnaire_id', q.questionnaire_id,
                                         'submitted_at', q.submitted_at, 'answers', q.answers)
               FROM legacy_questionnaires q
               WHERE q.client_id = c.id AND q.submitted_at < '2026-01-01'),
           'followups', coalesce((
               SELECT jsonb_agg(jsonb_build_object('followup_id', f.followup_id, 'submitted_at', f.submitted_at,
                                                   'weight_kg', f.weight_kg, 'mood', f.mood)
                                ORDER BY f.submitted_at)
               FROM legacy_followups f
               WHERE f.client_id = c.id AND f.submitted_at < '2026-01-01'), '[]'::jsonb)),
       'history'
FROM legacy_clients c
WHERE c.created_at < '2026-01-01'
ON CONFLICT (client_id) DO NOTHING;
