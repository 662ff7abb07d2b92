-- The analytics database before Fase 2 of runbook 000: the embeddings
-- table readers use today, read through the view the code queries.
CREATE TABLE document_embeddings (
    id          bigint PRIMARY KEY,
    user_id     int NOT NULL,
    document_id int NOT NULL,
    is_active   boolean NOT NULL,
    created_at  timestamptz NOT NULL
);
INSERT INTO document_embeddings
SELECT g, 1 + g % 50, 1 + g % 400, g % 10 <> 0,
       '2025-01-01 00:00:00+00'::timestamptz + g * interval '1 hour'
FROM generate_series(1, 2000) g;

CREATE VIEW document_embeddings_active AS
SELECT * FROM document_embeddings;
ANALYZE;
