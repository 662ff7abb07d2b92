-- Paso 2.1 (runbook 000): the optimized table, NEW, beside the one in use
-- (which is not modified). PostgreSQL's counterpart of BigQuery's
-- CLUSTER BY user_id, document_id, is_active is an index on those columns.
CREATE TABLE document_embeddings_v2 (
    id          bigint PRIMARY KEY,
    user_id     int NOT NULL,
    document_id int NOT NULL,
    is_active   boolean NOT NULL,
    created_at  timestamptz NOT NULL
);
CREATE INDEX document_embeddings_v2_cluster
    ON document_embeddings_v2 (user_id, document_id, is_active);
INSERT INTO document_embeddings_v2 SELECT * FROM document_embeddings;
