//! Host bindings generated from `wit/`. Private to the crate: the rest of the
//! host sees the wrappers in `runtime` and `capabilities`.

wasmtime::component::bindgen!({
    path: "../wit",
    world: "plugin",
    imports: { default: async | trappable },
    exports: { default: async },
    additional_derives: [serde::Serialize, serde::Deserialize],
    with: {
        "sluice:plugin/sql.connection": crate::capabilities::sql::ConnectionHandle,
        "sluice:plugin/sql.cursor": crate::capabilities::sql::CursorHandle,
        "sluice:plugin/sql.copy-reader": crate::capabilities::sql::CopyReaderHandle,
        "sluice:plugin/sql.copy-writer": crate::capabilities::sql::CopyWriterHandle,
        "sluice:plugin/kv.kv-connection": crate::capabilities::kv::KvConnectionHandle,
        "sluice:plugin/backup-store.artifact-writer": crate::capabilities::backup_store::WriterHandle,
        "sluice:plugin/backup-store.artifact-reader": crate::capabilities::backup_store::ReaderHandle,
    },
});

pub use self::exports::sluice::plugin::describe::PluginInfo;
pub use self::exports::sluice::plugin::preview::StepPreview;
pub use self::sluice::plugin::types::{
    BackupManifest, ChangeKind, Error as PluginError, Metric, PhaseReached, StepContext, TableState,
};

// The journal keeps its own types (`journal::record`): the WIT's stay on
// this side of the runtime, converted here, field by field.
use crate::journal::record;

impl From<Metric> for record::Metric {
    fn from(m: Metric) -> Self {
        record::Metric {
            name: m.name,
            value: m.value,
            detail: m.detail,
        }
    }
}

impl From<TableState> for record::TableState {
    fn from(t: TableState) -> Self {
        record::TableState {
            name: t.name,
            rows: t.rows,
            checksum: t.checksum,
        }
    }
}

impl From<ChangeKind> for record::ChangeKind {
    fn from(c: ChangeKind) -> Self {
        match c {
            ChangeKind::Transactional => record::ChangeKind::Transactional,
            ChangeKind::NonTransactional => record::ChangeKind::NonTransactional,
            ChangeKind::Irreversible => record::ChangeKind::Irreversible,
        }
    }
}

impl From<BackupManifest> for record::BackupManifest {
    fn from(m: BackupManifest) -> Self {
        record::BackupManifest {
            artifacts: m.artifacts,
            tables: m.tables.into_iter().map(Into::into).collect(),
            metadata: m.metadata,
            change: m.change.into(),
        }
    }
}

impl From<&record::BackupManifest> for BackupManifest {
    fn from(m: &record::BackupManifest) -> Self {
        BackupManifest {
            artifacts: m.artifacts.clone(),
            tables: m
                .tables
                .iter()
                .map(|t| TableState {
                    name: t.name.clone(),
                    rows: t.rows,
                    checksum: t.checksum.clone(),
                })
                .collect(),
            metadata: m.metadata.clone(),
            change: match m.change {
                record::ChangeKind::Transactional => ChangeKind::Transactional,
                record::ChangeKind::NonTransactional => ChangeKind::NonTransactional,
                record::ChangeKind::Irreversible => ChangeKind::Irreversible,
            },
        }
    }
}
