-- The invoicing bot's database before runbook 002 (Heroku PostgreSQL):
-- 90000 invoices of which two thirds were purged last month, so the table
-- is bloated (dead space VACUUM FULL reclaims), and no index serves the
-- bot's lookup by invoice number.
CREATE TABLE invoices (
    id bigint PRIMARY KEY,
    number text NOT NULL,                -- 'F-000123', what the bot looks up
    customer_id int NOT NULL,
    issued_at timestamptz NOT NULL,
    amount numeric(10, 2) NOT NULL,
    status text NOT NULL,
    notes text
);
INSERT INTO invoices
SELECT g, 'F-' || lpad(g::text, 6, '0'), 1 + g % 700,
       timestamptz '2024-01-01 00:00+00' + g * interval '7 minutes',
       round((10 + (g * 37) % 990)::numeric, 2),
       (ARRAY['paid', 'sent', 'overdue'])[1 + g % 3],
       repeat('line item ', 1 + g % 12)
FROM generate_series(1, 90000) g;
-- The purge: rows spread over every page, so the file keeps its size.
DELETE FROM invoices WHERE id % 3 <> 0;
ANALYZE invoices;
