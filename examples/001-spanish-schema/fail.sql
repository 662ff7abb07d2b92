-- The failure variant: 25 customers registered twice with the same phone
-- (the legacy schema never enforced it; `clientes.telefono` is UNIQUE).
-- `ON CONFLICT DO NOTHING` skips them, the count validation of phase 2 finds
-- 25 customers missing, and phase 2 is rolled back. Load after seed.sql.
INSERT INTO customers
SELECT 5000 + g, '+5939' || lpad(g::text, 8, '0'), 'Customer ' || g || ' (again)', 'Quito',
       timestamp '2025-01-01 08:00' + g * interval '1 hour'
FROM generate_series(1, 25) g;
