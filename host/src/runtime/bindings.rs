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
