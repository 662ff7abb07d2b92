//! Migrate: the step's key operations, in order.

use sluice_sdk::kv::{Connection, Dumped};
use sluice_sdk::{log, Error, StepContext};

use crate::params::Op;
use crate::{Params, RedisPlugin};

impl sluice_sdk::Migrate for RedisPlugin {
    fn migrate(ctx: &StepContext) -> Result<(), Error> {
        let params = Params::of(ctx)?;
        let conn = Connection::open(&ctx.target)?;
        for (i, op) in params.ops.iter().enumerate() {
            let n = apply(&conn, op, params.batch_keys as usize).map_err(|e| with_op(e, i, op))?;
            log::info(
                "op applied",
                &[("op", &i.to_string()), ("keys", &n.to_string())],
            );
        }
        Ok(())
    }
}

/// Says which op failed (by name and keys, not values), keeping the
/// error's kind.
fn with_op(e: Error, i: usize, op: &Op) -> Error {
    let what = match op {
        Op::Set { key, .. } => format!("set `{key}`"),
        Op::Delete { key } => format!("delete `{key}`"),
        Op::Rename { from, to } => format!("rename `{from}` to `{to}`"),
        Op::Copy { from, to } => format!("copy `{from}` to `{to}`"),
        Op::RenamePrefix { from, to } => format!("rename_prefix `{from}` to `{to}`"),
        Op::CopyPrefix { from, to } => format!("copy_prefix `{from}` to `{to}`"),
    };
    let at = format!("ops[{i}] ({what})");
    match e {
        Error::AccessDenied(m) => Error::AccessDenied(format!("{at}: {m}")),
        Error::PreconditionFailed(m) => Error::PreconditionFailed(format!("{at}: {m}")),
        Error::InvalidParams(m) => Error::InvalidParams(format!("{at}: {m}")),
        Error::Datastore(mut d) => {
            d.message = format!("{at}: {}", d.message);
            Error::Datastore(d)
        }
        other => other,
    }
}

/// Applies one op; returns how many keys it wrote.
fn apply(conn: &Connection, op: &Op, batch: usize) -> Result<usize, Error> {
    match op {
        Op::Set { key, value, ttl_ms } => conn.set(key, value.as_bytes(), *ttl_ms).map(|()| 1),
        Op::Delete { key } => conn.delete(std::slice::from_ref(key)).map(|n| n as usize),
        Op::Rename { from, to } => {
            if conn.exists(std::slice::from_ref(from))? != [true] {
                return Err(Error::PreconditionFailed(format!(
                    "key `{from}` to rename does not exist"
                )));
            }
            conn.rename(from, to).map(|()| 1)
        }
        Op::Copy { from, to } => {
            let found = conn.dump(std::slice::from_ref(from))?;
            let Some(d) = found.into_iter().next() else {
                return Err(Error::PreconditionFailed(format!(
                    "key `{from}` to copy does not exist"
                )));
            };
            conn.restore(&[Dumped {
                key: to.clone(),
                ..d
            }])
            .map(|()| 1)
        }
        Op::RenamePrefix { from, to } => {
            // Keys are listed before any is renamed, so a renamed key is
            // never seen again by the same scan.
            let keys = conn.scan_prefix(from)?;
            for key in &keys {
                conn.rename(key, &moved(key, from, to))?;
            }
            Ok(keys.len())
        }
        Op::CopyPrefix { from, to } => {
            let keys = conn.scan_prefix(from)?;
            for chunk in keys.chunks(batch) {
                let copies: Vec<Dumped> = conn
                    .dump(chunk)?
                    .into_iter()
                    .map(|d| Dumped {
                        key: moved(&d.key, from, to),
                        ..d
                    })
                    .collect();
                conn.restore(&copies)?;
            }
            Ok(keys.len())
        }
    }
}

fn moved(key: &str, from: &str, to: &str) -> String {
    format!("{to}{}", &key[from.len()..])
}
