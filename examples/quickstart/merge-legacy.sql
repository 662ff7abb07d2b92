-- Step 2: bring the legacy CRM's contacts into clientes. Three of them are
-- customers already (same email): the duplicates check catches it.
INSERT INTO clientes (id, nombre, correo, creado_en)
SELECT contact_id, full_name, mail, '2020-01-01' FROM legacy_contacts;
