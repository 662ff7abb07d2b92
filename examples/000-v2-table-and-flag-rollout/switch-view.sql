-- Paso 2.3 (runbook 000): readers switch to the optimized table through the
-- view they already query ("alias reversible, NO renombrando tabla").
-- `served_by` tells every reader, and the rollback, which table answered.
DROP VIEW document_embeddings_active;
CREATE VIEW document_embeddings_active AS
SELECT e.*, 'document_embeddings_v2'::text AS served_by
FROM document_embeddings_v2 e;
