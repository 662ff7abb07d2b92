-- Step 1: the new Spanish-named table beside the old one (additive, the old
-- table stays), filled from it.
CREATE TABLE clientes (
    id        INTEGER PRIMARY KEY,
    nombre    TEXT NOT NULL,
    correo    TEXT NOT NULL,
    creado_en TEXT NOT NULL
);
CREATE INDEX clientes_correo ON clientes (correo);

INSERT INTO clientes (id, nombre, correo, creado_en)
SELECT id, name, email, created_at FROM customers;
