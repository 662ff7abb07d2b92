-- Fase 1, change 2 (runbook 004): enrich_metadata moves to the new
-- ticker-metadata-service, whose table gets every ticker. Idempotent: the
-- five rows data-maintenance enriched already are kept as they are.
INSERT INTO ticker_metadata (symbol, sector, exchange, enriched_by)
SELECT symbol, sector, exchange, 'ticker-metadata-service'
FROM tickers
ON CONFLICT (symbol) DO NOTHING;
