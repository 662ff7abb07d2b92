-- Fase 5: the English tables go only now, after every count matched.
DROP TABLE service_requests;
DROP TABLE providers;
DROP TABLE professions;
DROP TABLE customers;
