//! Migrate: legacy documents before the cutoff → one drawer per client, in
//! one transaction. Idempotent by logical ids: what a drawer holds is kept,
//! so a second run (or the dual-write's drawers) adds nothing twice.

use std::collections::btree_map::Entry;
use std::collections::BTreeMap;

use serde_json::Value as Json;
use sluice_sdk::sql::{batch_of, Connection, Value};
use sluice_sdk::{log, Error, StepContext};

use crate::drawer::{self, document, rows, text, DRAWERS};
use crate::{Drawers, Params};

impl sluice_sdk::Migrate for Drawers {
    fn migrate(ctx: &StepContext) -> Result<(), Error> {
        let params = Params::of(ctx)?;
        let conn = Connection::open(&ctx.target)?;
        conn.transaction(|conn| build(conn, &params.cutoff))
    }
}

/// The first record per client of a legacy questionnaire collection.
fn first_per_user(
    conn: &Connection,
    collection: &str,
    cutoff: &Value,
) -> Result<BTreeMap<String, (String, Json)>, Error> {
    let mut out = BTreeMap::new();
    let sql = format!(
        "SELECT user_id, submitted_at, doc FROM {collection} WHERE submitted_at < ?1 ORDER BY submitted_at, id"
    );
    for row in rows(conn, &sql, std::slice::from_ref(cutoff))? {
        let user = text(&row[0], &format!("{collection}.user_id"))?;
        if let Entry::Vacant(slot) = out.entry(user) {
            let at = text(&row[1], &format!("{collection}.submitted_at"))?;
            let what = format!("{collection}.doc of user {}", slot.key());
            slot.insert((at, document(&row[2], &what)?));
        }
    }
    Ok(out)
}

/// The drawer of `user`, a new one (marked changed) if there is none.
fn touch<'a>(drawers: &'a mut BTreeMap<String, (Json, bool)>, user: &str) -> &'a mut (Json, bool) {
    drawers
        .entry(user.to_string())
        .or_insert_with(|| (drawer::new_drawer(user), true))
}

fn build(conn: &Connection, cutoff: &str) -> Result<(), Error> {
    let cutoff = Value::from(cutoff);
    // Existing drawers (the dual-write's, or a previous run's), by user.
    let mut drawers: BTreeMap<String, (Json, bool)> = BTreeMap::new();
    for row in rows(conn, &format!("SELECT user_id, drawer FROM {DRAWERS}"), &[])? {
        let user = text(&row[0], "client_drawers.user_id")?;
        let doc = document(&row[1], &format!("the drawer of user {user}"))?;
        drawers.insert(user, (doc, false));
    }
    let mut profiles = BTreeMap::new();
    for row in rows(conn, "SELECT user_id, doc FROM users", &[])? {
        let user = text(&row[0], "users.user_id")?;
        profiles.insert(
            user.clone(),
            document(&row[1], &format!("users.doc of {user}"))?,
        );
    }
    let training = first_per_user(conn, "questionnaire_responses", &cutoff)?;
    let nutrition = first_per_user(conn, "nutrition_questionnaire_submissions", &cutoff)?;

    let mut followups = 0u64;
    for row in rows(
        conn,
        "SELECT followup_id, user_id, submitted_at, doc FROM followup_submissions \
         WHERE submitted_at < ?1 ORDER BY submitted_at, followup_id",
        std::slice::from_ref(&cutoff),
    )? {
        let id = text(&row[0], "followup_submissions.followup_id")?;
        let user = text(&row[1], "followup_submissions.user_id")?;
        let at = text(&row[2], "followup_submissions.submitted_at")?;
        let doc = document(&row[3], &format!("follow-up {id}"))?;
        let (drawer, changed) = touch(&mut drawers, &user);
        if drawer::merge_followup(drawer, &id, &at, &doc) {
            *changed = true;
            followups += 1;
        }
    }
    for user in training.keys().chain(nutrition.keys()) {
        let (drawer, changed) = touch(&mut drawers, user);
        *changed |= drawer::merge_inicial(drawer, training.get(user), nutrition.get(user));
    }
    let mut writes = Vec::new();
    for (user, (drawer, changed)) in &mut drawers {
        if let Some(profile) = profiles.get(user) {
            *changed |= drawer::merge_profile(drawer, profile);
        }
        if *changed {
            let id = drawer["_id"].as_str().unwrap_or_default().to_string();
            writes.push(vec![
                Value::from(id),
                Value::from(user.as_str()),
                Value::from(drawer.to_string()),
            ]);
        }
    }
    // Batched: one host call per chunk of drawers, never one per drawer.
    let upsert = format!(
        "INSERT INTO {DRAWERS} (_id, user_id, drawer) VALUES (?1, ?2, ?3) \
         ON CONFLICT (user_id) DO UPDATE SET drawer = excluded.drawer"
    );
    for chunk in writes.chunks(1000) {
        conn.execute_batch(&upsert, &batch_of(3, chunk))?;
    }
    log::info(
        "drawers written",
        &[
            ("drawers", &writes.len().to_string()),
            ("followups_added", &followups.to_string()),
        ],
    );
    Ok(())
}
