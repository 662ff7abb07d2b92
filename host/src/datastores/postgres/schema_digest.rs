//! The host's catalog digest of a PostgreSQL database: every object kind a
//! migration can change, read in one query, as a canonical sorted list of
//! `(kind, name, definition)` lines.
//!
//! What it covers, in every non-system schema (`pg_catalog`,
//! `information_schema`, TOAST and temporary schemas and sluice's own
//! `sluice_journal` and the change recording's `sluice_capture` with its
//! `sluice_capture_*` triggers left out): schemas, tables (persistence, partitioning,
//! inheritance, options, RLS flags, replica identity), columns (position,
//! type, default, nullability, identity, generated expression, collation,
//! statistics target, storage), constraints, indexes (and validity),
//! triggers and their enabled state, rules, policies, functions, procedures
//! and aggregates, views and materialized views, sequences (definition;
//! their values are measured apart, see below), types (enums with their labels in order,
//! domains and their constraints, composite and range types), extended
//! statistics, collations, operators, casts, languages, foreign data
//! wrappers and servers, publications, event triggers, default privileges
//! and extensions — with owners, grants (ACLs, normalised so an explicit
//! default equals none) and comments as lines of their own. An object an
//! extension owns appears only as `extension member <object>` → extension,
//! not with its internals. Cluster-wide: roles (attributes, a digest of the
//! password, settings), memberships, tablespaces, and the target database
//! itself (`this database`: owner, encoding, locale, limits, grants,
//! settings). Other databases of the cluster are left out: other runs and
//! applications create and drop theirs, and a rehearsal copy must digest
//! like its source (a step creating a database is not proven yet).
//!
//! Sequence values (`last_value`, `is_called`) are not catalog lines: every
//! `nextval` moves them, outside any transaction, so a digest of all of them
//! would fail a proof whenever an application inserted into any table during
//! the step. [`sequence_values`] measures only the sequences of the tables a
//! fingerprint covers (the step's backed-up tables) — which the PostgreSQL
//! plugin saves at backup and puts back on rollback — into
//! `Fingerprint.sequences`, so a failed proof names the sequence that
//! differs.
//!
//! No OID enters a line: names, `format_type` and the `pg_get_*def`
//! functions (with `search_path` pinned to `pg_catalog`, so every name they
//! print is qualified) — an object dropped and recreated identically digests
//! equal. Lines are sorted in Rust (byte order), not by the server's
//! collation.

use std::collections::BTreeMap;

use sha2::{Digest, Sha256};
use tokio_postgres::Client;

use super::{connect_client, pg_error, BEGIN_READ_ONLY};
use crate::datastores::DatastoreError;
use crate::secret::Secret;

/// One object (or one aspect of it: `owner of …`, `grants on …`,
/// `comment on …`) as the catalog describes it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct SchemaObject {
    /// What it is: `table`, `column`, `trigger`, `enum`, `grants on table`, …
    pub kind: String,
    /// Its qualified name: `public.items.notify_items`.
    pub name: String,
    /// Its definition, as PostgreSQL prints it.
    pub definition: String,
}

impl SchemaObject {
    /// `kind name`, the key differences are reported by.
    pub fn key(&self) -> String {
        format!("{} {}", self.kind, self.name)
    }
}

/// Every object of a database and its cluster, sorted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Catalog {
    objects: Vec<SchemaObject>,
}

/// Hex characters kept of each object's definition digest in
/// [`Catalog::summary`]: enough that two definitions never collide in
/// practice, short enough that a 1,000-object summary stays ~40 KiB in the
/// journal.
const OBJECT_DIGEST_HEX: usize = 16;

impl Catalog {
    /// Reads the catalog in the client's current transaction (the caller's
    /// snapshot), one query.
    pub async fn read(client: &Client) -> Result<Catalog, tokio_postgres::Error> {
        // Qualified names in every definition, whatever the role's
        // search_path; restored before the caller's own statements.
        client
            .batch_execute("SET LOCAL search_path = pg_catalog")
            .await?;
        let rows = client.query(CATALOG_QUERY, &[]).await?;
        client
            .batch_execute("SET LOCAL search_path TO DEFAULT")
            .await?;
        let mut objects: Vec<SchemaObject> = rows
            .iter()
            .map(|row| SchemaObject {
                kind: row.get(0),
                name: row.get(1),
                definition: row.get(2),
            })
            .collect();
        objects.sort_unstable();
        Ok(Catalog { objects })
    }

    /// Every line, sorted by kind, name, definition.
    pub fn objects(&self) -> &[SchemaObject] {
        &self.objects
    }

    /// sha256 over every line (each part length-prefixed), hex.
    pub fn digest(&self) -> String {
        let mut h = Sha256::new();
        for o in &self.objects {
            for part in [&o.kind, &o.name, &o.definition] {
                h.update((part.len() as u64).to_le_bytes());
                h.update(part.as_bytes());
            }
        }
        hex::encode(h.finalize())
    }

    /// `kind name` → a short digest of its definition(s), what a fingerprint
    /// keeps so a failed proof can name the objects that differ.
    pub fn summary(&self) -> BTreeMap<String, String> {
        summarize(
            self.objects
                .iter()
                .map(|o| (o.key(), o.definition.as_str())),
        )
    }
}

/// Objects a summary lists at most (~1.5 MiB of journal per backup); a
/// larger schema keeps its digest only, and a failed proof says "schema
/// differs" without naming objects.
pub const MAX_SUMMARY_OBJECTS: usize = 20_000;

/// `key` → short digest of its definitions (several lines under one key are
/// digested together, in order), for [`crate::datastores::Fingerprint::objects`];
/// empty above [`MAX_SUMMARY_OBJECTS`].
pub fn summarize<'a>(lines: impl Iterator<Item = (String, &'a str)>) -> BTreeMap<String, String> {
    let mut grouped: BTreeMap<String, Sha256> = BTreeMap::new();
    for (key, definition) in lines {
        let h = grouped.entry(key).or_default();
        h.update((definition.len() as u64).to_le_bytes());
        h.update(definition.as_bytes());
        if grouped.len() > MAX_SUMMARY_OBJECTS {
            return BTreeMap::new();
        }
    }
    grouped
        .into_iter()
        .map(|(key, h)| {
            let mut hex = hex::encode(h.finalize());
            hex.truncate(OBJECT_DIGEST_HEX);
            (key, hex)
        })
        .collect()
}

/// The sequences of a set of tables, `$1` their names as `regclass` text
/// (`"public"."items"`; names that do not resolve are skipped): each
/// sequence a serial or identity column of one of them owns
/// (`pg_depend` `a`/`i`), unless a column default of a table outside the
/// set draws from it too — then the application writes through it and its
/// value is not the step's to prove or to put back. Rows: schema, name.
/// The PostgreSQL plugin's backup selects the sequences it saves with the
/// same rule (`plugins/postgres/src/schema.rs`), so proof and restore agree.
/// Driven from the tables through `pg_depend`'s reference index (~1 ms with
/// 400 sequences in the database): starting from every sequence instead made
/// the ownership test quadratic (~200 ms).
pub const SEQUENCES_OF_TABLES: &str = "\
WITH t AS MATERIALIZED (
  SELECT DISTINCT to_regclass(x) AS oid FROM unnest($1::text[]) x WHERE to_regclass(x) IS NOT NULL),
owned AS MATERIALIZED (
  SELECT DISTINCT d.objid AS oid FROM t JOIN pg_catalog.pg_depend d
      ON d.refclassid = 'pg_catalog.pg_class'::regclass AND d.refobjid = t.oid
   WHERE d.classid = 'pg_catalog.pg_class'::regclass AND d.deptype IN ('a', 'i'))
SELECT n.nspname::text, s.relname::text
  FROM owned o
  JOIN pg_catalog.pg_class s ON s.oid = o.oid AND s.relkind = 'S'
  JOIN pg_catalog.pg_namespace n ON n.oid = s.relnamespace
 WHERE NOT EXISTS (
     SELECT 1 FROM pg_catalog.pg_depend u JOIN pg_catalog.pg_attrdef ad ON ad.oid = u.objid
      WHERE u.refclassid = 'pg_catalog.pg_class'::regclass AND u.refobjid = s.oid
        AND u.classid = 'pg_catalog.pg_attrdef'::regclass AND ad.adrelid NOT IN (SELECT oid FROM t))
 ORDER BY 1, 2";

/// (schema, name) of the sequences of `tables` (plan names, as
/// [`super::quote_table`] reads them), by [`SEQUENCES_OF_TABLES`].
pub async fn sequences_of_tables(
    client: &Client,
    tables: &[String],
) -> Result<Vec<(String, String)>, tokio_postgres::Error> {
    if tables.is_empty() {
        return Ok(Vec::new());
    }
    let quoted: Vec<String> = tables.iter().map(|t| super::quote_table(t)).collect();
    Ok(client
        .query(SEQUENCES_OF_TABLES, &[&quoted])
        .await?
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect())
}

/// `schema.sequence` → `last_value=… is_called=…` for the sequences of
/// `tables` (plan names, as [`super::quote_table`] reads them; see
/// [`SEQUENCES_OF_TABLES`]), in the client's current transaction. Sequence
/// values are not transactional and every `nextval` moves them, so only the
/// backed-up tables' own sequences are measured: an application drawing ids
/// for its other tables during a step must not fail the step's proof. Two
/// statements: the names, then one `UNION ALL` reading every sequence
/// relation (`pg_sequences` hides `last_value` while `is_called` is false,
/// which is exactly the state a fresh or reset sequence is in).
pub async fn sequence_values(
    client: &Client,
    tables: &[String],
) -> Result<BTreeMap<String, String>, tokio_postgres::Error> {
    let names = sequences_of_tables(client, tables).await?;
    if names.is_empty() {
        return Ok(BTreeMap::new());
    }
    let quote = |s: &str| format!("\"{}\"", s.replace('"', "\"\""));
    let literal = |s: &str| format!("'{}'", s.replace('\'', "''"));
    let reads: Vec<String> = names
        .iter()
        .map(|(schema, name)| {
            format!(
                "SELECT {}::text, last_value::text, is_called FROM {}.{}",
                literal(&format!("{schema}.{name}")),
                quote(schema),
                quote(name)
            )
        })
        .collect();
    let rows = client.query(&reads.join(" UNION ALL "), &[]).await?;
    Ok(rows
        .iter()
        .map(|r| {
            let name: String = r.get(0);
            let last_value: String = r.get(1);
            let is_called: bool = r.get(2);
            (name, format!("last_value={last_value} is_called={is_called}"))
        })
        .collect())
}

/// Reads the catalog of the database at `url`, in its own read-only
/// snapshot.
pub async fn read_catalog(url: &Secret) -> Result<Catalog, DatastoreError> {
    let (client, _) = connect_client(url).await?;
    client
        .batch_execute(BEGIN_READ_ONLY)
        .await
        .map_err(pg_error)?;
    let catalog = Catalog::read(&client).await.map_err(pg_error)?;
    client.batch_execute("COMMIT").await.map_err(pg_error)?;
    Ok(catalog)
}

/// One round trip. `objs` lists each object once with its owner, grants and
/// comment (NULL where the kind has none); the final `SELECT` turns those
/// into lines of their own, so a failed proof says "grants on table … differ"
/// rather than "table … differs".
const CATALOG_QUERY: &str = r#"
WITH ns AS (
  SELECT oid, nspname FROM pg_namespace
   WHERE nspname NOT IN ('pg_catalog', 'information_schema', 'sluice_journal', 'sluice_capture')
     AND nspname !~ '^pg_(toast|temp_)'
),
ext AS (SELECT classid, objid FROM pg_depend WHERE deptype = 'e'),
rel AS (
  SELECT c.*, n.nspname || '.' || c.relname AS qname
    FROM pg_class c JOIN ns n ON n.oid = c.relnamespace
   WHERE NOT EXISTS (SELECT 1 FROM ext WHERE ext.classid = 'pg_class'::regclass AND ext.objid = c.oid)
),
objs(kind, name, def, owner, acl, cmt) AS (
  -- schemas
  SELECT 'schema', n.nspname, '', pg_get_userbyid(s.nspowner)::text,
         (SELECT string_agg(a::text, ',' ORDER BY a::text) FROM unnest(coalesce(s.nspacl, acldefault('n', s.nspowner))) a),
         obj_description(s.oid, 'pg_namespace')
    FROM pg_namespace s JOIN ns n ON n.oid = s.oid
   WHERE NOT EXISTS (SELECT 1 FROM ext WHERE ext.classid = 'pg_namespace'::regclass AND ext.objid = s.oid)
  UNION ALL
  -- tables, views, materialized views, sequences, foreign tables
  SELECT CASE r.relkind WHEN 'r' THEN 'table' WHEN 'p' THEN 'table' WHEN 'f' THEN 'foreign table'
                        WHEN 'v' THEN 'view' WHEN 'm' THEN 'materialized view' ELSE 'sequence' END,
         r.qname,
         CASE
           WHEN r.relkind IN ('v', 'm') THEN concat_ws(' | ', pg_get_viewdef(r.oid),
             'options ' || array_to_string(r.reloptions, ','),
             'tablespace ' || (SELECT spcname FROM pg_tablespace WHERE oid = r.reltablespace))
           WHEN r.relkind = 'S' THEN (SELECT concat_ws(' ', format_type(q.seqtypid, NULL), 'start', q.seqstart,
               'increment', q.seqincrement, 'min', q.seqmin, 'max', q.seqmax, 'cache', q.seqcache,
               CASE WHEN q.seqcycle THEN 'cycle' END, 'persistence=' || r.relpersistence::text,
               (SELECT 'owned by ' || d.refobjid::regclass::text || '.' || a.attname
                  FROM pg_depend d JOIN pg_attribute a ON a.attrelid = d.refobjid AND a.attnum = d.refobjsubid
                 WHERE d.classid = 'pg_class'::regclass AND d.objid = r.oid AND d.deptype IN ('a', 'i')
                   AND d.refclassid = 'pg_class'::regclass AND d.refobjsubid > 0 LIMIT 1))
             FROM pg_sequence q WHERE q.seqrelid = r.oid)
           ELSE concat_ws(' | ', 'persistence=' || r.relpersistence::text,
             'partitioned by ' || pg_get_partkeydef(r.oid),
             'partition ' || pg_get_expr(r.relpartbound, r.oid),
             'inherits ' || (SELECT string_agg(i.inhparent::regclass::text, ',' ORDER BY i.inhseqno)
                               FROM pg_inherits i WHERE i.inhrelid = r.oid),
             'options ' || array_to_string(r.reloptions, ','),
             'rls=' || r.relrowsecurity || ' force=' || r.relforcerowsecurity,
             'replica identity ' || r.relreplident::text,
             'tablespace ' || (SELECT spcname FROM pg_tablespace WHERE oid = r.reltablespace),
             'access method ' || (SELECT amname FROM pg_am WHERE oid = r.relam),
             'server ' || (SELECT s.srvname || ' ' || coalesce(array_to_string(t.ftoptions, ','), '')
                             FROM pg_foreign_table t JOIN pg_foreign_server s ON s.oid = t.ftserver
                            WHERE t.ftrelid = r.oid))
         END,
         pg_get_userbyid(r.relowner)::text,
         (SELECT string_agg(a::text, ',' ORDER BY a::text)
            FROM unnest(coalesce(r.relacl, acldefault(CASE WHEN r.relkind = 'S' THEN 's' ELSE 'r' END::"char", r.relowner))) a),
         obj_description(r.oid, 'pg_class')
    FROM rel r WHERE r.relkind IN ('r', 'p', 'f', 'v', 'm', 'S')
  UNION ALL
  -- Sequence values are not catalog lines: they move with the data, and
  -- only the backed-up tables' own are proven (`sequence_values`).
  -- columns of tables, views and composite types
  SELECT 'column', r.qname || '.' || a.attname,
         concat_ws(' ', '#' || row_number() OVER (PARTITION BY a.attrelid ORDER BY a.attnum),
           format_type(a.atttypid, a.atttypmod),
           CASE WHEN a.attnotnull THEN 'not null' END,
           CASE WHEN a.attgenerated = '' THEN 'default ' || pg_get_expr(d.adbin, d.adrelid) END,
           CASE a.attidentity WHEN 'a' THEN 'generated always as identity'
                              WHEN 'd' THEN 'generated by default as identity' END,
           CASE WHEN a.attgenerated <> '' THEN 'generated always as ' || pg_get_expr(d.adbin, d.adrelid) || ' stored' END,
           CASE WHEN a.attcollation <> t.typcollation
                THEN 'collate ' || (SELECT collname FROM pg_collation WHERE oid = a.attcollation) END,
           CASE WHEN a.attstattarget >= 0 THEN 'statistics ' || a.attstattarget END,
           CASE WHEN a.attstorage <> t.typstorage THEN 'storage ' || a.attstorage::text END,
           'options ' || array_to_string(a.attoptions, ','),
           'fdw options ' || array_to_string(a.attfdwoptions, ',')),
         NULL,
         (SELECT string_agg(x::text, ',' ORDER BY x::text) FROM unnest(a.attacl) x),
         col_description(a.attrelid, a.attnum)
    FROM pg_attribute a
    JOIN rel r ON r.oid = a.attrelid AND r.relkind IN ('r', 'p', 'f', 'v', 'm', 'c')
    JOIN pg_type t ON t.oid = a.atttypid
    LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
   WHERE a.attnum > 0 AND NOT a.attisdropped
  UNION ALL
  -- table constraints
  SELECT 'constraint', r.qname || '.' || k.conname, pg_get_constraintdef(k.oid), NULL, NULL,
         obj_description(k.oid, 'pg_constraint')
    FROM pg_constraint k JOIN rel r ON r.oid = k.conrelid
  UNION ALL
  -- indexes
  SELECT 'index', n.nspname || '.' || ic.relname,
         concat_ws(' ', pg_get_indexdef(i.indexrelid),
           CASE WHEN i.indisclustered THEN 'clustered' END,
           CASE WHEN i.indisreplident THEN 'replica identity' END,
           CASE WHEN NOT i.indisvalid THEN 'invalid' END,
           'tablespace ' || (SELECT spcname FROM pg_tablespace WHERE oid = ic.reltablespace)),
         NULL, NULL, obj_description(i.indexrelid, 'pg_class')
    FROM pg_index i JOIN rel r ON r.oid = i.indrelid
    JOIN pg_class ic ON ic.oid = i.indexrelid JOIN pg_namespace n ON n.oid = ic.relnamespace
  UNION ALL
  -- triggers, with their enabled state (O, D, R, A)
  SELECT 'trigger', r.qname || '.' || g.tgname,
         pg_get_triggerdef(g.oid) || ' | enabled=' || g.tgenabled::text, NULL, NULL,
         obj_description(g.oid, 'pg_trigger')
    FROM pg_trigger g JOIN rel r ON r.oid = g.tgrelid WHERE NOT g.tgisinternal
     AND g.tgname !~ '^sluice_capture_'
  UNION ALL
  -- rules (a view's own _RETURN rule is its definition)
  SELECT 'rule', r.qname || '.' || w.rulename, pg_get_ruledef(w.oid) || ' | enabled=' || w.ev_enabled::text,
         NULL, NULL, obj_description(w.oid, 'pg_rewrite')
    FROM pg_rewrite w JOIN rel r ON r.oid = w.ev_class WHERE w.rulename <> '_RETURN'
  UNION ALL
  -- row-level security policies
  SELECT 'policy', r.qname || '.' || p.polname,
         concat_ws(' ', 'for ' || p.polcmd::text, CASE WHEN p.polpermissive THEN 'permissive' ELSE 'restrictive' END,
           'to ' || (SELECT string_agg(x, ',' ORDER BY x) FROM
                       (SELECT CASE WHEN o = 0 THEN 'public' ELSE pg_get_userbyid(o)::text END AS x
                          FROM unnest(p.polroles) o) roles),
           'using ' || pg_get_expr(p.polqual, p.polrelid),
           'with check ' || pg_get_expr(p.polwithcheck, p.polrelid)),
         NULL, NULL, obj_description(p.oid, 'pg_policy')
    FROM pg_policy p JOIN rel r ON r.oid = p.polrelid
  UNION ALL
  -- functions, procedures, aggregates
  SELECT CASE p.prokind WHEN 'p' THEN 'procedure' WHEN 'a' THEN 'aggregate' ELSE 'function' END,
         n.nspname || '.' || p.proname || '(' || pg_get_function_identity_arguments(p.oid) || ')',
         CASE WHEN p.prokind = 'a'
              THEN (SELECT concat_ws(' ', g.aggkind, g.aggtransfn::text, format_type(g.aggtranstype, NULL),
                      g.aggfinalfn::text, g.aggcombinefn::text, g.aggsortop::regoperator::text,
                      'init ' || g.agginitval, format_type(p.prorettype, NULL))
                      FROM pg_aggregate g WHERE g.aggfnoid = p.oid)
              ELSE pg_get_functiondef(p.oid) END,
         pg_get_userbyid(p.proowner)::text,
         (SELECT string_agg(a::text, ',' ORDER BY a::text) FROM unnest(coalesce(p.proacl, acldefault('f', p.proowner))) a),
         obj_description(p.oid, 'pg_proc')
    FROM pg_proc p JOIN ns n ON n.oid = p.pronamespace
   WHERE NOT EXISTS (SELECT 1 FROM ext WHERE ext.classid = 'pg_proc'::regclass AND ext.objid = p.oid)
  UNION ALL
  -- types: enums (labels in order), domains, composites, ranges, base and shell types
  SELECT CASE t.typtype WHEN 'e' THEN 'enum' WHEN 'd' THEN 'domain' WHEN 'c' THEN 'composite type'
                        WHEN 'r' THEN 'range type' ELSE 'type' END,
         n.nspname || '.' || t.typname,
         CASE t.typtype
           WHEN 'e' THEN (SELECT coalesce(string_agg(quote_literal(e.enumlabel), ', ' ORDER BY e.enumsortorder), '')
                            FROM pg_enum e WHERE e.enumtypid = t.oid)
           WHEN 'd' THEN concat_ws(' ', format_type(t.typbasetype, t.typtypmod),
                           CASE WHEN t.typnotnull THEN 'not null' END, 'default ' || t.typdefault,
                           CASE WHEN t.typcollation <> (SELECT b.typcollation FROM pg_type b WHERE b.oid = t.typbasetype)
                                THEN 'collate ' || (SELECT collname FROM pg_collation WHERE oid = t.typcollation) END)
           WHEN 'c' THEN 'composite'
           WHEN 'r' THEN (SELECT concat_ws(' ', format_type(g.rngsubtype, NULL),
                            (SELECT opcname FROM pg_opclass WHERE oid = g.rngsubopc),
                            (SELECT collname FROM pg_collation WHERE oid = g.rngcollation),
                            g.rngcanonical::text, g.rngsubdiff::text)
                            FROM pg_range g WHERE g.rngtypid = t.oid)
           ELSE concat_ws(' ', t.typtype, t.typinput::text, t.typoutput::text, t.typreceive::text, t.typsend::text,
                  t.typlen, t.typbyval, t.typalign, t.typstorage, t.typcategory, t.typisdefined)
         END,
         pg_get_userbyid(t.typowner)::text,
         (SELECT string_agg(a::text, ',' ORDER BY a::text) FROM unnest(coalesce(t.typacl, acldefault('T', t.typowner))) a),
         obj_description(t.oid, 'pg_type')
    FROM pg_type t JOIN ns n ON n.oid = t.typnamespace
   WHERE t.typtype <> 'm'
     AND (t.typrelid = 0 OR (SELECT c.relkind FROM pg_class c WHERE c.oid = t.typrelid) = 'c')
     AND NOT EXISTS (SELECT 1 FROM pg_type e WHERE e.typarray = t.oid)
     AND NOT EXISTS (SELECT 1 FROM ext WHERE ext.classid = 'pg_type'::regclass AND ext.objid = t.oid)
  UNION ALL
  -- domain constraints
  SELECT 'domain constraint', n.nspname || '.' || t.typname || '.' || k.conname, pg_get_constraintdef(k.oid),
         NULL, NULL, obj_description(k.oid, 'pg_constraint')
    FROM pg_constraint k JOIN pg_type t ON t.oid = k.contypid JOIN ns n ON n.oid = t.typnamespace
  UNION ALL
  -- extended statistics
  SELECT 'statistics', n.nspname || '.' || s.stxname,
         pg_get_statisticsobjdef(s.oid) || coalesce(' | target ' || s.stxstattarget, ''),
         pg_get_userbyid(s.stxowner)::text, NULL, obj_description(s.oid, 'pg_statistic_ext')
    FROM pg_statistic_ext s JOIN ns n ON n.oid = s.stxnamespace
  UNION ALL
  -- collations
  SELECT 'collation', n.nspname || '.' || c.collname,
         concat_ws(' ', c.collprovider, c.collisdeterministic, c.collcollate, c.collctype),
         pg_get_userbyid(c.collowner)::text, NULL, obj_description(c.oid, 'pg_collation')
    FROM pg_collation c JOIN ns n ON n.oid = c.collnamespace
   WHERE NOT EXISTS (SELECT 1 FROM ext WHERE ext.classid = 'pg_collation'::regclass AND ext.objid = c.oid)
  UNION ALL
  -- operators
  SELECT 'operator', n.nspname || '.' || o.oprname || '(' || format_type(o.oprleft, NULL) || ', ' || format_type(o.oprright, NULL) || ')',
         concat_ws(' ', o.oprcode::text, format_type(o.oprresult, NULL), o.oprcom::regoperator::text,
           o.oprnegate::regoperator::text, o.oprrest::text, o.oprjoin::text, o.oprcanmerge, o.oprcanhash),
         pg_get_userbyid(o.oprowner)::text, NULL, obj_description(o.oid, 'pg_operator')
    FROM pg_operator o JOIN ns n ON n.oid = o.oprnamespace
   WHERE NOT EXISTS (SELECT 1 FROM ext WHERE ext.classid = 'pg_operator'::regclass AND ext.objid = o.oid)
  UNION ALL
  -- casts and languages created by users (built-in ones have OIDs below FirstNormalObjectId)
  SELECT 'cast', format_type(c.castsource, NULL) || ' as ' || format_type(c.casttarget, NULL),
         concat_ws(' ', c.castfunc::regprocedure::text, c.castcontext, c.castmethod), NULL, NULL,
         obj_description(c.oid, 'pg_cast')
    FROM pg_cast c
   WHERE c.oid >= 16384
     AND NOT EXISTS (SELECT 1 FROM ext WHERE ext.classid = 'pg_cast'::regclass AND ext.objid = c.oid)
  UNION ALL
  SELECT 'language', l.lanname,
         concat_ws(' ', l.lanpltrusted, l.lanplcallfoid::regprocedure::text, l.laninline::regprocedure::text,
           l.lanvalidator::regprocedure::text),
         pg_get_userbyid(l.lanowner)::text,
         (SELECT string_agg(a::text, ',' ORDER BY a::text) FROM unnest(coalesce(l.lanacl, acldefault('l', l.lanowner))) a),
         obj_description(l.oid, 'pg_language')
    FROM pg_language l
   WHERE l.oid >= 16384
     AND NOT EXISTS (SELECT 1 FROM ext WHERE ext.classid = 'pg_language'::regclass AND ext.objid = l.oid)
  UNION ALL
  -- foreign data wrappers, servers, user mappings (options digested with the rest)
  SELECT 'foreign data wrapper', w.fdwname,
         concat_ws(' ', w.fdwhandler::regproc::text, w.fdwvalidator::regproc::text, array_to_string(w.fdwoptions, ',')),
         pg_get_userbyid(w.fdwowner)::text,
         (SELECT string_agg(a::text, ',' ORDER BY a::text) FROM unnest(coalesce(w.fdwacl, acldefault('F', w.fdwowner))) a),
         obj_description(w.oid, 'pg_foreign_data_wrapper')
    FROM pg_foreign_data_wrapper w
   WHERE NOT EXISTS (SELECT 1 FROM ext WHERE ext.classid = 'pg_foreign_data_wrapper'::regclass AND ext.objid = w.oid)
  UNION ALL
  SELECT 'foreign server', s.srvname,
         concat_ws(' ', (SELECT fdwname FROM pg_foreign_data_wrapper WHERE oid = s.srvfdw), s.srvtype, s.srvversion,
           array_to_string(s.srvoptions, ',')),
         pg_get_userbyid(s.srvowner)::text,
         (SELECT string_agg(a::text, ',' ORDER BY a::text) FROM unnest(coalesce(s.srvacl, acldefault('S', s.srvowner))) a),
         obj_description(s.oid, 'pg_foreign_server')
    FROM pg_foreign_server s
  UNION ALL
  SELECT 'user mapping', m.usename || ' for ' || m.srvname,
         encode(sha256(convert_to(coalesce(array_to_string(m.umoptions, ','), ''), 'UTF8')), 'hex'),
         NULL, NULL, NULL
    FROM pg_user_mappings m
  UNION ALL
  -- publications and their tables
  SELECT 'publication', p.pubname,
         concat_ws(' ', 'all tables=' || p.puballtables, 'insert=' || p.pubinsert, 'update=' || p.pubupdate,
           'delete=' || p.pubdelete, 'truncate=' || p.pubtruncate, 'via root=' || p.pubviaroot),
         pg_get_userbyid(p.pubowner)::text, NULL, obj_description(p.oid, 'pg_publication')
    FROM pg_publication p
  UNION ALL
  SELECT 'publication table', p.pubname || ' ' || r.prrelid::regclass::text, '', NULL, NULL, NULL
    FROM pg_publication_rel r JOIN pg_publication p ON p.oid = r.prpubid
  UNION ALL
  -- event triggers (database-wide)
  SELECT 'event trigger', e.evtname,
         concat_ws(' ', e.evtevent, e.evtfoid::regprocedure::text, 'enabled=' || e.evtenabled::text,
           array_to_string(e.evttags, ',')),
         pg_get_userbyid(e.evtowner)::text, NULL, obj_description(e.oid, 'pg_event_trigger')
    FROM pg_event_trigger e
  UNION ALL
  -- default privileges (ALTER DEFAULT PRIVILEGES)
  SELECT 'default privileges',
         pg_get_userbyid(d.defaclrole) || coalesce(' in ' || n.nspname, '') || ' on ' || d.defaclobjtype::text,
         (SELECT coalesce(string_agg(a::text, ',' ORDER BY a::text), '') FROM unnest(d.defaclacl) a),
         NULL, NULL, NULL
    FROM pg_default_acl d LEFT JOIN pg_namespace n ON n.oid = d.defaclnamespace
  UNION ALL
  -- extensions, and which objects each owns (not their internals)
  SELECT 'extension', e.extname, e.extversion || ' in ' || n.nspname || ' relocatable=' || e.extrelocatable,
         pg_get_userbyid(e.extowner)::text, NULL, obj_description(e.oid, 'pg_extension')
    FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace
  UNION ALL
  SELECT 'extension member', o.type || ' ' || o.identity, e.extname, NULL, NULL, NULL
    FROM pg_depend d JOIN pg_extension e ON e.oid = d.refobjid
    CROSS JOIN LATERAL pg_identify_object(d.classid, d.objid, 0) o
   WHERE d.deptype = 'e' AND d.refclassid = 'pg_extension'::regclass
  UNION ALL
  -- cluster-wide: roles (built-in pg_* roles left out), memberships, settings
  SELECT 'role', r.rolname,
         concat_ws(' ', CASE WHEN r.rolsuper THEN 'superuser' END, CASE WHEN r.rolinherit THEN 'inherit' END,
           CASE WHEN r.rolcreaterole THEN 'createrole' END, CASE WHEN r.rolcreatedb THEN 'createdb' END,
           CASE WHEN r.rolcanlogin THEN 'login' END, CASE WHEN r.rolreplication THEN 'replication' END,
           CASE WHEN r.rolbypassrls THEN 'bypassrls' END, 'connection limit ' || r.rolconnlimit,
           'valid until ' || r.rolvaliduntil,
           CASE WHEN has_table_privilege('pg_catalog.pg_authid', 'SELECT')
                THEN 'password ' || encode(sha256(convert_to(coalesce(query_to_xml(format(
                       'SELECT rolpassword FROM pg_catalog.pg_authid WHERE rolname = %L', r.rolname),
                       false, true, '')::text, ''), 'UTF8')), 'hex') END),
         NULL, NULL, shobj_description(r.oid, 'pg_authid')
    FROM pg_roles r WHERE r.rolname !~ '^pg_'
  UNION ALL
  SELECT 'membership', pg_get_userbyid(m.member) || ' in ' || pg_get_userbyid(m.roleid),
         concat_ws(' ', CASE WHEN m.admin_option THEN 'with admin option' END, 'granted by ' || pg_get_userbyid(m.grantor)),
         NULL, NULL, NULL
    FROM pg_auth_members m
  UNION ALL
  SELECT 'settings', coalesce(pg_get_userbyid(nullif(s.setrole, 0))::text, 'every role') || ' in ' ||
           CASE WHEN s.setdatabase = 0 THEN 'every database' ELSE 'this database' END,
         (SELECT string_agg(x, ',' ORDER BY x) FROM unnest(s.setconfig) x), NULL, NULL, NULL
    FROM pg_db_role_setting s
   WHERE s.setdatabase = 0
      OR s.setdatabase = (SELECT oid FROM pg_database WHERE datname = current_database())
  UNION ALL
  -- cluster-wide: tablespaces and databases (sluice's own transient `sluice_*` copies left out)
  SELECT 'tablespace', t.spcname,
         concat_ws(' ', pg_tablespace_location(t.oid), array_to_string(t.spcoptions, ',')),
         pg_get_userbyid(t.spcowner)::text,
         (SELECT string_agg(a::text, ',' ORDER BY a::text) FROM unnest(coalesce(t.spcacl, acldefault('t', t.spcowner))) a),
         shobj_description(t.oid, 'pg_tablespace')
    FROM pg_tablespace t WHERE t.spcname NOT IN ('pg_default', 'pg_global')
  UNION ALL
  SELECT 'database', 'this database',
         concat_ws(' ', pg_encoding_to_char(d.encoding), d.datcollate, d.datctype, 'template=' || d.datistemplate,
           'allow connections=' || d.datallowconn, 'connection limit ' || d.datconnlimit,
           'tablespace ' || (SELECT spcname FROM pg_tablespace WHERE oid = d.dattablespace)),
         pg_get_userbyid(d.datdba)::text,
         (SELECT string_agg(a::text, ',' ORDER BY a::text) FROM unnest(coalesce(d.datacl, acldefault('d', d.datdba))) a),
         shobj_description(d.oid, 'pg_database')
    FROM pg_database d WHERE d.datname = current_database()
)
SELECT v.kind, o.name, v.def
  FROM objs o
 CROSS JOIN LATERAL (VALUES (o.kind, coalesce(o.def, '')),
                            ('owner of ' || o.kind, o.owner),
                            ('grants on ' || o.kind, o.acl),
                            ('comment on ' || o.kind, o.cmt)) v(kind, def)
 WHERE v.def IS NOT NULL
"#;
