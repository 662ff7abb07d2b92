-- The sample shop database `cargo xtask demo` creates (shop.db).
-- 1,000 customers, and 40 contacts from a legacy CRM of which three share an
-- email address with an existing customer.
PRAGMA journal_mode = WAL;

CREATE TABLE customers (
    id         INTEGER PRIMARY KEY,
    name       TEXT NOT NULL,
    email      TEXT NOT NULL UNIQUE,
    created_at TEXT NOT NULL
);

WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 1000)
INSERT INTO customers (id, name, email, created_at)
SELECT i,
       'Customer ' || i,
       'customer' || i || '@example.com',
       date('2024-01-01', '+' || (i % 365) || ' days')
FROM n;

CREATE TABLE legacy_contacts (
    contact_id INTEGER PRIMARY KEY,
    full_name  TEXT NOT NULL,
    mail       TEXT NOT NULL
);

WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 40)
INSERT INTO legacy_contacts (contact_id, full_name, mail)
SELECT 5000 + i,
       'Legacy contact ' || i,
       CASE WHEN i <= 3 THEN 'customer' || (i * 100) || '@example.com'
            ELSE 'legacy' || i || '@example.org' END
FROM n;
