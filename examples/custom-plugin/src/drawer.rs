//! The client drawer document (runbook 003's TO BE shape) and how legacy
//! records are merged into it. Pure JSON logic, no datastore: unit-testable.

use serde_json::{json, Value as Json};
use sluice_sdk::sql::{for_each_row, to_owned, Connection, Value};
use sluice_sdk::Error;

/// The table of drawers: `(_id TEXT PRIMARY KEY, user_id TEXT UNIQUE, drawer TEXT)`.
pub const DRAWERS: &str = "client_drawers";

/// A new, empty drawer for `user_id`.
pub fn new_drawer(user_id: &str) -> Json {
    json!({
        "_id": format!("client_{user_id}"),
        "user_id": user_id,
        "profile": {},
        "services": { "shared": { "questionnaires": { "followups": [] } } },
    })
}

/// `services.shared.questionnaires`, created if a drawer lacks it.
fn questionnaires(drawer: &mut Json) -> &mut serde_json::Map<String, Json> {
    let mut node = drawer;
    for key in ["services", "shared", "questionnaires"] {
        if !node.get(key).is_some_and(Json::is_object) {
            node[key] = json!({});
        }
        node = &mut node[key];
    }
    node.as_object_mut().expect("made an object above")
}

/// Sets the profile from the legacy user document unless the drawer has one.
pub fn merge_profile(drawer: &mut Json, user: &Json) -> bool {
    let empty = drawer["profile"].as_object().is_none_or(|p| p.is_empty());
    if empty && user.is_object() {
        drawer["profile"] = user.clone();
    }
    empty && user.is_object()
}

/// Sets the single initial questionnaire from its training and nutrition
/// halves (legacy kept them in two collections) unless the drawer has one.
pub fn merge_inicial(
    drawer: &mut Json,
    training: Option<&(String, Json)>,
    nutrition: Option<&(String, Json)>,
) -> bool {
    let q = questionnaires(drawer);
    if q.contains_key("inicial") || (training.is_none() && nutrition.is_none()) {
        return false;
    }
    let submitted_at = [training, nutrition]
        .into_iter()
        .flatten()
        .map(|(at, _)| at.as_str())
        .min()
        .unwrap_or_default();
    q.insert(
        "inicial".to_string(),
        json!({
            "submitted_at": submitted_at,
            "schema_version": "questionnaire_edn360_v1",
            "training_section": training.map(|(_, doc)| doc.clone()),
            "nutrition_section": nutrition.map(|(_, doc)| doc.clone()),
        }),
    );
    true
}

/// Appends a follow-up unless one with the same `followup_id` is there.
pub fn merge_followup(drawer: &mut Json, id: &str, submitted_at: &str, doc: &Json) -> bool {
    if followup_ids(drawer).any(|f| f == id) {
        return false;
    }
    let q = questionnaires(drawer);
    let list = q.entry("followups").or_insert_with(|| json!([]));
    if !list.is_array() {
        *list = json!([]);
    }
    let mut followup = json!({ "followup_id": id, "submitted_at": submitted_at });
    for section in ["training_section", "nutrition_section"] {
        if let Some(part) = doc.get(section) {
            followup[section] = part.clone();
        }
    }
    list.as_array_mut().expect("an array").push(followup);
    true
}

/// The `followup_id`s a drawer holds, in order.
pub fn followup_ids(drawer: &Json) -> impl Iterator<Item = &str> {
    drawer
        .pointer("/services/shared/questionnaires/followups")
        .and_then(Json::as_array)
        .into_iter()
        .flatten()
        .filter_map(|f| f.get("followup_id")?.as_str())
}

/// Every row of a query, fetched through a cursor (the host caps one-shot
/// queries at 10,000 rows).
pub fn rows(conn: &Connection, sql: &str, params: &[Value]) -> Result<Vec<Vec<Value>>, Error> {
    let mut cursor = conn.cursor(sql, params)?;
    let mut out = Vec::new();
    while let Some(batch) = cursor.next_batch()? {
        for_each_row(&batch, |row| {
            out.push(row.iter().map(|v| to_owned(*v)).collect())
        })?;
    }
    Ok(out)
}

/// A text column's value.
pub fn text(value: &Value, what: &str) -> Result<String, Error> {
    match value {
        Value::Text(s) => Ok(s.clone()),
        Value::Integer(i) => Ok(i.to_string()),
        other => Err(Error::PreconditionFailed(format!(
            "{what} is {other:?}, expected text"
        ))),
    }
}

/// A JSON document column, parsed.
pub fn document(value: &Value, what: &str) -> Result<Json, Error> {
    serde_json::from_str(&text(value, what)?)
        .map_err(|e| Error::PreconditionFailed(format!("{what} is not a JSON document: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merging_twice_changes_nothing_the_second_time() {
        let mut drawer = new_drawer("7");
        let training = ("2025-01-02".to_string(), json!({ "goals": "fat loss" }));
        assert!(merge_profile(&mut drawer, &json!({ "email": "a@b.c" })));
        assert!(merge_inicial(&mut drawer, Some(&training), None));
        assert!(merge_followup(&mut drawer, "f1", "2025-01-09", &json!({})));
        let once = drawer.clone();
        assert!(!merge_profile(&mut drawer, &json!({ "email": "x@y.z" })));
        assert!(!merge_inicial(&mut drawer, None, Some(&training)));
        assert!(!merge_followup(&mut drawer, "f1", "2025-01-09", &json!({})));
        assert_eq!(drawer, once);
        assert_eq!(followup_ids(&drawer).collect::<Vec<_>>(), ["f1"]);
    }

    #[test]
    fn a_dual_write_drawer_without_questionnaires_gets_them() {
        let mut drawer =
            json!({ "_id": "client_9", "user_id": "9", "profile": { "email": "n@o.p" } });
        assert!(merge_followup(
            &mut drawer,
            "f2",
            "2025-01-03",
            &json!({ "nutrition_section": { "adherence": 0.8 } })
        ));
        assert_eq!(
            drawer["services"]["shared"]["questionnaires"]["followups"][0]["nutrition_section"]
                ["adherence"],
            0.8
        );
    }
}
