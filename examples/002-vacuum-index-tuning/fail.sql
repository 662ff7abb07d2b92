-- The failure variant: 40 invoice numbers issued twice (a bug in the
-- numbering job). `CREATE UNIQUE INDEX CONCURRENTLY` fails on them and, being
-- non-transactional, leaves an INVALID index behind; the step's `compensate`
-- drops it. Load after seed.sql.
INSERT INTO invoices
SELECT 200000 + g, 'F-' || lpad((g * 3)::text, 6, '0'), 1, timestamptz '2025-06-01 00:00+00', 1, 'sent', NULL
FROM generate_series(1, 40) g;
