-- Fase 2.2 / 3: providers, then the transactional rows.
INSERT INTO proveedores (id, telefono, nombre_completo, profesion_id, calificacion)
SELECT id, phone, full_name, profession_id, rating FROM providers
ON CONFLICT DO NOTHING;
INSERT INTO solicitudes_servicio (id, cliente_id, proveedor_id, estado, solicitado_at)
SELECT id, customer_id, provider_id, status, requested_at FROM service_requests
ON CONFLICT DO NOTHING;
