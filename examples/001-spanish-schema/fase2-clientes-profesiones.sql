-- Fase 2.1: idempotent copies (re-running adds nothing).
INSERT INTO clientes (id, telefono, nombre_completo, ciudad, creado_at)
SELECT id, phone, full_name, city, created_at FROM customers
ON CONFLICT DO NOTHING;
INSERT INTO profesiones (id, nombre)
SELECT id, name FROM professions
ON CONFLICT DO NOTHING;
