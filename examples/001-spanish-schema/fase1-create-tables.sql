-- Fase 1: the Spanish tables, beside the English ones (nothing reads them yet).
CREATE TABLE IF NOT EXISTS clientes (
    id bigint PRIMARY KEY,
    telefono varchar(20) UNIQUE NOT NULL,
    nombre_completo varchar(255) NOT NULL,
    ciudad varchar(100),
    estado varchar(20) NOT NULL DEFAULT 'activo',
    creado_at timestamp NOT NULL
);
CREATE TABLE IF NOT EXISTS profesiones (
    id int PRIMARY KEY,
    nombre varchar(100) NOT NULL UNIQUE
);
CREATE TABLE IF NOT EXISTS proveedores (
    id bigint PRIMARY KEY,
    telefono varchar(20) UNIQUE NOT NULL,
    nombre_completo varchar(255) NOT NULL,
    profesion_id int NOT NULL REFERENCES profesiones (id),
    calificacion numeric(3, 2)
);
CREATE TABLE IF NOT EXISTS solicitudes_servicio (
    id bigint PRIMARY KEY,
    cliente_id bigint NOT NULL REFERENCES clientes (id),
    proveedor_id bigint NOT NULL REFERENCES proveedores (id),
    estado varchar(20) NOT NULL,
    solicitado_at timestamp NOT NULL
);
CREATE INDEX IF NOT EXISTS idx_clientes_ciudad ON clientes (ciudad);
CREATE INDEX IF NOT EXISTS idx_solicitudes_cliente ON solicitudes_servicio (cliente_id);
CREATE INDEX IF NOT EXISTS idx_solicitudes_proveedor ON solicitudes_servicio (proveedor_id);
