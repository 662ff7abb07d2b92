-- The failure variant: the production export holds follow-ups of 700
-- deleted accounts (no row in legacy_clients), which staging never had.
-- The migration cannot place them in any drawer, so the history match rate
-- falls to 3600 of 4300 = 0.84: the "< 0.90 → roll back" band. Load after seed.sql.
INSERT INTO legacy_followups
SELECT 100000 + g, 'f-deleted-' || g, 900000 + g % 233,
       timestamptz '2025-03-01 10:00+00' + g * interval '3 hours', 70, 3
FROM generate_series(1, 700) g;
ANALYZE legacy_followups;
