-- The marketplace bot's English schema before runbook 001 (Supabase /
-- PostgreSQL): 2000 customers, 40 professions, 500 providers and 4000
-- service requests.
CREATE TABLE customers (
    id bigint PRIMARY KEY,
    phone varchar(20) NOT NULL,
    full_name varchar(255) NOT NULL,
    city varchar(100),
    created_at timestamp NOT NULL
);
INSERT INTO customers
SELECT g, '+5939' || lpad(g::text, 8, '0'), 'Customer ' || g,
       (ARRAY['Quito', 'Guayaquil', 'Cuenca', NULL])[1 + g % 4],
       timestamp '2024-03-01 08:00' + g * interval '3 hours'
FROM generate_series(1, 2000) g;

CREATE TABLE professions (
    id int PRIMARY KEY,
    name varchar(100) NOT NULL UNIQUE
);
INSERT INTO professions SELECT g, 'profession ' || g FROM generate_series(1, 40) g;

CREATE TABLE providers (
    id bigint PRIMARY KEY,
    phone varchar(20) NOT NULL,
    full_name varchar(255) NOT NULL,
    profession_id int NOT NULL,
    rating numeric(3, 2)
);
INSERT INTO providers
SELECT g, '+5938' || lpad(g::text, 8, '0'), 'Provider ' || g, 1 + g % 40,
       CASE WHEN g % 10 = 0 THEN NULL ELSE 3 + (g % 20) / 10.0 END
FROM generate_series(1, 500) g;

CREATE TABLE service_requests (
    id bigint PRIMARY KEY,
    customer_id bigint NOT NULL,
    provider_id bigint NOT NULL,
    status varchar(20) NOT NULL,
    requested_at timestamp NOT NULL
);
INSERT INTO service_requests
SELECT g, 1 + g % 2000, 1 + g % 500,
       (ARRAY['pending', 'accepted', 'done', 'cancelled'])[1 + g % 4],
       timestamp '2024-06-01 08:00' + g * interval '37 minutes'
FROM generate_series(1, 4000) g;
ANALYZE;
