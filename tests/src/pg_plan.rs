//! A plan of PostgreSQL-plugin steps on a seeded scratch database: the
//! harness of the end-to-end tests that drive the PostgreSQL plugin.

use crate::services::{pg_scratch, pg_scratch_exclusive, PgScratch};
use crate::{plugin, sluice_bin, Outcome, Scenario};

/// A scenario folder whose `sluice.toml` runs `steps` with the PostgreSQL
/// plugin on `db` (its URL in the plan's value `db`, from `SHOP_PG_URL`).
pub struct PgPlan {
    /// The folder: plan, lock, journal.
    pub scenario: Scenario,
    /// The seeded scratch database.
    pub db: PgScratch,
}

impl PgPlan {
    /// `steps` on a new scratch database seeded with `seed`.
    pub fn new(seed: &str, steps: &str) -> PgPlan {
        Self::on(pg_scratch(), seed, steps)
    }

    /// The same for a seed that creates cluster-wide objects (roles): the
    /// server alone, since the host's proof covers roles.
    pub fn exclusive(seed: &str, steps: &str) -> PgPlan {
        Self::on(pg_scratch_exclusive(), seed, steps)
    }

    fn on(db: PgScratch, seed: &str, steps: &str) -> PgPlan {
        db.client().batch_execute(seed).unwrap();
        let scenario = Scenario::new();
        scenario.write(
            "sluice.toml",
            &format!(
                r#"
[values]
db = {{ env = "SHOP_PG_URL" }}

[targets.shop]
kind = "postgres"
connection = "db"

[plugins.pg]
path = "{}"

{steps}
"#,
                plugin("postgres.wasm").display()
            ),
        );
        PgPlan { scenario, db }
    }

    /// `sluice <args…>` with the database's URL in the environment.
    pub fn sluice(&self, args: &[&str]) -> Outcome {
        self.scenario
            .sluice_with(&sluice_bin(), args, &[("SHOP_PG_URL", &self.db.url)])
    }

    /// Accepts the plan into its lock, then runs it.
    pub fn run(&self) -> Outcome {
        let accepted = self.sluice(&["audit", "--accept", "sluice.toml"]);
        assert_eq!(accepted.code, 0, "audit --accept: {}", accepted.all());
        self.sluice(&["run", "sluice.toml"])
    }

    /// The states `step` went through, oldest first.
    pub fn states(&self, step: &str) -> Vec<String> {
        self.scenario
            .transitions(step)
            .into_iter()
            .map(|t| t.0)
            .collect()
    }
}
