-- The markets database before Fase 1 of the microservices reorganisation
-- (runbook 004): 500 tickers, and the metadata table the new
-- ticker-metadata-service reads, enriched so far for five symbols only.
CREATE TABLE tickers (
    symbol   text PRIMARY KEY,
    name     text NOT NULL,
    sector   text NOT NULL,
    exchange text NOT NULL
);
INSERT INTO tickers
SELECT 'T' || lpad(g::text, 4, '0'),
       'Company ' || g,
       (ARRAY['Technology', 'Energy', 'Health', 'Finance', 'Utilities'])[1 + g % 5],
       CASE WHEN g % 3 = 0 THEN 'NYSE' ELSE 'NASDAQ' END
FROM generate_series(1, 500) g;

CREATE TABLE ticker_metadata (
    symbol      text PRIMARY KEY REFERENCES tickers (symbol),
    sector      text NOT NULL,
    exchange    text NOT NULL,
    enriched_by text NOT NULL
);
INSERT INTO ticker_metadata
SELECT symbol, sector, exchange, 'data-maintenance'
FROM tickers WHERE symbol <= 'T0005';
ANALYZE;
