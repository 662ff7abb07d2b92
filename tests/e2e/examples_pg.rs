//! The PostgreSQL examples (`examples/00N-*/`) run as an operator would run
//! them: each example folder is copied into a scenario, its `seed.sql` loaded
//! into a scratch database, and its plan rehearsed, run, approved where it
//! pauses and reported on. Each also runs its failure variant and checks,
//! with this test's own md5 of every table's ordered rows and of the schema,
//! that the rollback left the database exactly as it was before the step.

use std::collections::BTreeMap;

use sluice_e2e::services::{pg_scratch, PgScratch};
use sluice_e2e::{plugin, root, sluice_bin, Outcome, Scenario};

/// An example folder in a scenario, with its own seeded scratch database.
struct Example {
    scenario: Scenario,
    db: PgScratch,
}

impl Example {
    /// Copies `examples/<name>` (plans and SQL), points its plugin path at
    /// the built plugin, and loads `seed.sql` and then each of `extra` (such
    /// as the failure variant's `fail.sql`) into a new scratch database.
    fn new(name: &str, extra: &[&str]) -> Example {
        let scenario = Scenario::new();
        let dir = root().join("examples").join(name);
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "sql" || e == "toml") {
                std::fs::copy(&path, scenario.path().join(path.file_name().unwrap())).unwrap();
            }
        }
        for entry in std::fs::read_dir(scenario.path()).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "toml") {
                let file = path.file_name().unwrap().to_str().unwrap().to_string();
                let plan = scenario.read(&file).replace(
                    "../../target/plugins/postgres.wasm",
                    &plugin("postgres.wasm").display().to_string(),
                );
                scenario.write(&file, &plan);
            }
        }
        let db = pg_scratch();
        let mut client = db.client();
        for sql in std::iter::once("seed.sql").chain(extra.iter().copied()) {
            client
                .batch_execute(&scenario.read(sql))
                .unwrap_or_else(|e| panic!("loading {name}/{sql}: {e}"));
        }
        Example { scenario, db }
    }

    fn sluice(&self, args: &[&str]) -> Outcome {
        self.scenario
            .sluice_with(&sluice_bin(), args, &[("DATABASE_URL", &self.db.url)])
    }

    fn accept(&self, plan: &str) {
        let accepted = self.sluice(&["audit", "--accept", plan]);
        assert_eq!(accepted.code, 0, "audit --accept: {}", accepted.all());
    }

    /// `sluice rehearse`: exits 0 and proves every step's rollback.
    fn rehearse(&self, plan: &str) -> serde_json::Value {
        let out = self.scenario.path().join("rehearsal");
        let rehearsed = self.sluice(&["rehearse", plan, "--output", out.to_str().unwrap()]);
        assert_eq!(rehearsed.code, 0, "rehearse: {}", rehearsed.all());
        assert!(
            rehearsed
                .stdout
                .contains("production untouched: fingerprints equal"),
            "{}",
            rehearsed.stdout
        );
        let json: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(out.join("rehearsal.json")).unwrap())
                .unwrap();
        json
    }

    fn number(&self, sql: &str) -> i64 {
        self.db.client().query_one(sql, &[]).unwrap().get(0)
    }

    fn checksums(&self) -> BTreeMap<String, String> {
        checksums(&self.db)
    }

    /// A second scratch database holding what the example's database
    /// should be before a step: the named SQL files run in order.
    fn reference(&self, files: &[&str]) -> PgScratch {
        let db = pg_scratch();
        let mut client = db.client();
        for sql in files {
            client
                .batch_execute(&self.scenario.read(sql))
                .unwrap_or_else(|e| panic!("loading {sql}: {e}"));
        }
        db
    }
}

/// The md5 of the schema and, per table, `<rows> <md5 of the rows as text,
/// ordered>`, computed by this test's own client.
fn checksums(db: &PgScratch) -> BTreeMap<String, String> {
    let mut c = db.client();
    let mut out = BTreeMap::new();
    let schema: String = c
        .query_one(
            "SELECT md5(coalesce(string_agg(line, E'\\n' ORDER BY line), '')) FROM ( \
               SELECT concat_ws(' ', table_name, column_name, data_type, is_nullable, column_default) AS line \
               FROM information_schema.columns WHERE table_schema = 'public' \
               UNION ALL SELECT indexdef FROM pg_indexes WHERE schemaname = 'public' \
               UNION ALL SELECT concat_ws(' ', conrelid::regclass::text, conname, pg_get_constraintdef(oid)) \
               FROM pg_constraint WHERE connamespace = 'public'::regnamespace) s",
            &[],
        )
        .unwrap()
        .get(0);
    out.insert("(schema)".to_string(), schema);
    let tables: Vec<String> = c
        .query(
            "SELECT table_name::text FROM information_schema.tables \
             WHERE table_schema = 'public' AND table_type = 'BASE TABLE'",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    for table in tables {
        let row = c
            .query_one(
                &format!(
                    "SELECT count(*), md5(coalesce(string_agg(t::text, E'\\n' ORDER BY t::text), '')) \
                     FROM \"{table}\" t"
                ),
                &[],
            )
            .unwrap();
        let (rows, md5): (i64, String) = (row.get(0), row.get(1));
        out.insert(table, format!("{rows} {md5}"));
    }
    out
}

/// The metric a step reported in `sluice run`'s output, as printed.
fn metric_line<'a>(out: &'a Outcome, metric: &str) -> &'a str {
    let prefix = format!("metric {metric} = ");
    out.stdout
        .lines()
        .map(str::trim)
        .find(|l| l.starts_with(&prefix))
        .unwrap_or_else(|| panic!("no `{metric}` metric in:\n{}", out.stdout))
}

#[test]
fn clients_to_jsonb_rehearses_pauses_for_approval_and_completes() {
    let ex = Example::new("003-clients-to-jsonb", &[]);
    let plan = "sluice.toml";
    ex.accept(plan);
    let seeded = ex.checksums();
    assert_eq!(ex.number("SELECT count(*) FROM client_drawers"), 300);

    // The staging rehearsal: both steps applied on a copy, rolled back and
    // proven; the real database untouched.
    let rehearsal = ex.rehearse(plan);
    let steps = rehearsal["steps"].as_array().unwrap();
    assert_eq!(steps.len(), 2, "{rehearsal}");
    for step in steps {
        assert_eq!(step["forward"], "applied", "{step}");
    }
    assert_eq!(
        ex.checksums(),
        seeded,
        "rehearsal left production as it was"
    );

    // The run migrates the history and stops at the approval point.
    let paused = ex.sluice(&["run", plan]);
    assert_eq!(paused.code, 5, "{}", paused.all());
    assert!(
        metric_line(&paused, "match_rate").contains("3600 of 3600"),
        "{}",
        paused.stdout
    );
    assert_eq!(
        metric_line(&paused, "duplicates"),
        "metric duplicates = 0  (surplus rows in drawer_followups sharing (followup_id))"
    );
    assert!(
        paused.stdout.contains("AWAITING APPROVAL"),
        "{}",
        paused.stdout
    );
    assert_eq!(ex.number("SELECT count(*) FROM client_drawers"), 1500);
    assert_eq!(
        ex.number("SELECT count(*) FROM client_drawers WHERE source = 'history'"),
        1200
    );
    // History only before the cutoff: no migrated drawer holds a later row.
    assert_eq!(
        ex.number(
            "SELECT count(*) FROM client_drawers d, jsonb_array_elements(d.drawer -> 'followups') f \
             WHERE d.source = 'history' AND (f ->> 'submitted_at')::timestamptz >= '2026-01-01'"
        ),
        0
    );
    assert_eq!(
        ex.number("SELECT count(*) FROM drawer_followups"),
        3900,
        "3600 migrated + 300 the app wrote"
    );
    // Nothing of the approval-gated step ran yet.
    assert_eq!(
        ex.number(
            "SELECT count(*) FROM information_schema.tables WHERE table_name = 'legacy_followups'"
        ),
        1
    );

    // Idempotency by logical id: the migrate script run again adds nothing.
    let inserted = ex
        .db
        .client()
        .execute(ex.scenario.read("migrate-history.sql").as_str(), &[])
        .unwrap();
    assert_eq!(inserted, 0, "ON CONFLICT DO NOTHING kept every drawer");

    let approved = ex.sluice(&[
        "approve",
        plan,
        "deprecate-legacy",
        "--by",
        "jorge",
        "--reason",
        "staging report reviewed",
    ]);
    assert_eq!(approved.code, 0, "{}", approved.all());
    let done = ex.sluice(&["run", plan]);
    assert_eq!(done.code, 0, "{}", done.all());
    assert!(
        done.stdout
            .contains("migrate-history          already applied"),
        "{}",
        done.stdout
    );
    assert_eq!(
        ex.number(
            "SELECT count(*) FROM information_schema.tables \
             WHERE table_name IN ('legacy_followups_deprecated_20260101', 'legacy_questionnaires_deprecated_20260101')"
        ),
        2,
        "renamed, not dropped"
    );
    assert_eq!(
        ex.number("SELECT count(*) FROM legacy_followups_deprecated_20260101"),
        3900
    );

    let html = ex.scenario.path().join("report.html");
    let report = ex.sluice(&[
        "report",
        plan,
        "--format",
        "html",
        "--output",
        html.to_str().unwrap(),
    ]);
    assert_eq!(report.code, 0, "{}", report.all());
    let page = std::fs::read_to_string(&html).unwrap();
    assert!(
        page.contains("deprecate-legacy") && page.contains("jorge"),
        "report names the step and its approver"
    );
}

#[test]
fn clients_to_jsonb_failure_rolls_back_to_the_seed() {
    let ex = Example::new("003-clients-to-jsonb", &["fail.sql"]);
    let plan = "sluice.toml";
    ex.accept(plan);
    let before = ex.checksums();
    let failed = ex.sluice(&["run", plan]);
    assert_eq!(failed.code, 1, "{}", failed.all());
    assert!(
        metric_line(&failed, "match_rate").contains("3600 of 4300"),
        "{}",
        failed.stdout
    );
    assert!(
        failed
            .stdout
            .contains("band reached: match_rate < 0.90 → rollback"),
        "{}",
        failed.stdout
    );
    assert!(
        failed.stdout.contains("deprecate-legacy         not run"),
        "{}",
        failed.stdout
    );
    assert_eq!(
        ex.checksums(),
        before,
        "every table and the schema as before the step"
    );
    assert_eq!(ex.number("SELECT count(*) FROM client_drawers"), 300);
}

#[test]
fn spanish_schema_runs_its_phases_and_drops_legacy_only_when_approved() {
    let ex = Example::new("001-spanish-schema", &[]);
    let plan = "sluice.toml";
    ex.accept(plan);
    let seeded = ex.checksums();
    let rehearsal = ex.rehearse(plan);
    assert_eq!(
        rehearsal["steps"].as_array().unwrap().len(),
        4,
        "{rehearsal}"
    );
    assert_eq!(
        ex.checksums(),
        seeded,
        "rehearsal left production as it was"
    );

    let paused = ex.sluice(&["run", plan]);
    assert_eq!(paused.code, 5, "{}", paused.all());
    assert!(
        paused
            .stdout
            .contains("fase5-drop-legacy        AWAITING APPROVAL"),
        "{}",
        paused.stdout
    );
    for (old, new) in [
        ("customers", "clientes"),
        ("professions", "profesiones"),
        ("providers", "proveedores"),
        ("service_requests", "solicitudes_servicio"),
    ] {
        let counts = format!("SELECT (SELECT count(*) FROM {old}) - (SELECT count(*) FROM {new})");
        assert_eq!(ex.number(&counts), 0, "{old} → {new}");
    }
    assert_eq!(ex.number("SELECT count(*) FROM solicitudes_servicio"), 4000);
    // Idempotent copies: run again by hand, they add nothing.
    for script in [
        "fase2-clientes-profesiones.sql",
        "fase3-proveedores-solicitudes.sql",
    ] {
        ex.db
            .client()
            .batch_execute(&ex.scenario.read(script))
            .unwrap();
    }
    assert_eq!(ex.number("SELECT count(*) FROM clientes"), 2000);
    assert_eq!(ex.number("SELECT count(*) FROM solicitudes_servicio"), 4000);

    let approved = ex.sluice(&["approve", plan, "fase5-drop-legacy", "--by", "ops"]);
    assert_eq!(approved.code, 0, "{}", approved.all());
    let done = ex.sluice(&["run", plan]);
    assert_eq!(done.code, 0, "{}", done.all());
    assert_eq!(
        ex.number(
            "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public' \
             AND table_name IN ('customers', 'professions', 'providers', 'service_requests')"
        ),
        0
    );
    assert_eq!(ex.number("SELECT count(*) FROM clientes"), 2000);
}

#[test]
fn spanish_schema_failure_rolls_phase_two_back() {
    let ex = Example::new("001-spanish-schema", &["fail.sql"]);
    let plan = "sluice.toml";
    ex.accept(plan);
    let failed = ex.sluice(&["run", plan]);
    assert_eq!(failed.code, 1, "{}", failed.all());
    assert!(
        failed
            .stdout
            .contains("threshold `clientes_faltantes == 0` not met (clientes_faltantes = 25)"),
        "{}",
        failed.stdout
    );
    assert!(
        failed.stdout.contains("fase5-drop-legacy        not run"),
        "{}",
        failed.stdout
    );
    // Phase 2's pre-step state, rebuilt independently: the seed, the
    // failure data and phase 1's tables.
    let reference = ex.reference(&["seed.sql", "fail.sql", "fase1-create-tables.sql"]);
    let expected = checksums(&reference);
    assert_eq!(
        expected["clientes"],
        format!("0 {}", "d41d8cd98f00b204e9800998ecf8427e")
    );
    assert_eq!(ex.checksums(), expected);
}

#[test]
fn vacuum_index_tuning_beats_its_baseline_and_vacuums_only_when_approved() {
    let ex = Example::new("002-vacuum-index-tuning", &[]);
    let plan = "sluice.toml";
    ex.accept(plan);
    let preview = ex.sluice(&["plan", plan]);
    assert_eq!(preview.code, 0, "{}", preview.all());
    assert!(
        preview.stdout.contains("non-transactional"),
        "{}",
        preview.stdout
    );
    assert!(
        preview.stdout.contains("IRREVERSIBLY (acknowledged)"),
        "{}",
        preview.stdout
    );
    let seeded = ex.checksums();
    let rehearsal = ex.rehearse(plan);
    assert_eq!(
        rehearsal["steps"].as_array().unwrap().len(),
        2,
        "{rehearsal}"
    );
    assert_eq!(
        ex.checksums(),
        seeded,
        "rehearsal left production as it was"
    );
    let bytes_before = ex.number("SELECT pg_table_size('invoices')");
    // VACUUM FULL writes the table anew, into a new file; autovacuum may
    // add a visibility-map page meanwhile, so the size alone cannot tell.
    let file_before = ex.number("SELECT pg_relation_filenode('invoices')::bigint");

    let paused = ex.sluice(&["run", plan]);
    assert_eq!(paused.code, 5, "{}", paused.all());
    assert!(
        paused
            .stdout
            .contains("threshold lookup_p95 <= 1.5 * baseline.lookup_p95 + 5: met"),
        "{}",
        paused.stdout
    );
    assert_eq!(
        metric_line(&paused, "index_used").split_whitespace().nth(3),
        Some("1")
    );
    assert_eq!(
        ex.number("SELECT count(*) FROM pg_index WHERE indexrelid = 'invoices_number_key'::regclass AND indisvalid"),
        1
    );
    assert_eq!(
        ex.number("SELECT pg_relation_filenode('invoices')::bigint"),
        file_before,
        "no VACUUM FULL before approval"
    );

    let approved = ex.sluice(&["approve", plan, "vacuum-full", "--by", "ops"]);
    assert_eq!(approved.code, 0, "{}", approved.all());
    let done = ex.sluice(&["run", plan]);
    assert_eq!(done.code, 0, "{}", done.all());
    let bytes_after = ex.number("SELECT pg_table_size('invoices')");
    assert!(
        bytes_after * 2 < bytes_before,
        "{bytes_before} → {bytes_after}"
    );
    assert_eq!(ex.number("SELECT count(*) FROM invoices"), 30000);
}

#[test]
fn vacuum_index_tuning_failed_index_build_is_compensated() {
    let ex = Example::new("002-vacuum-index-tuning", &["fail.sql"]);
    let plan = "sluice.toml";
    ex.accept(plan);
    let before = ex.checksums();
    let failed = ex.sluice(&["run", plan]);
    assert_eq!(failed.code, 1, "{}", failed.all());
    assert!(
        failed
            .stdout
            .contains("could not create unique index \"invoices_number_key\""),
        "{}",
        failed.stdout
    );
    assert!(
        failed.stdout.contains("vacuum-full              not run"),
        "{}",
        failed.stdout
    );
    assert!(
        failed
            .stderr
            .contains("rollback: running the compensating script"),
        "{}",
        failed.stderr
    );
    assert_eq!(
        ex.number("SELECT count(*) FROM pg_indexes WHERE indexname = 'invoices_number_key'"),
        0,
        "no INVALID index left behind"
    );
    assert_eq!(
        ex.checksums(),
        before,
        "every table and the schema as before the step"
    );
}
