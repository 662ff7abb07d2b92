-- rollback-bigquery.sh (runbook 000), "ROLLBACK INSTANTÁNEO": the view
-- points at the original table again. Idempotent.
DROP VIEW IF EXISTS document_embeddings_active;
CREATE VIEW document_embeddings_active AS
SELECT * FROM document_embeddings;
