//! `sluice:plugin/backup-store`: artifacts of the step's backup. Writable only
//! during the backup phase, readable only during rollback, and only the
//! artifacts of this step's verified backup.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use wasmtime::component::{HasData, Linker, Resource, ResourceTable};

use crate::backup::{ArtifactReader, ArtifactRef, ArtifactWriter, BackupError, BackupStore};
use crate::runtime::bindings::sluice::plugin::backup_store as wit;
use crate::runtime::bindings::sluice::plugin::types::Error;

/// Longest artifact name a plugin may use.
pub const MAX_NAME_LEN: usize = 200;
/// Bytes one `read` call may return, whatever the plugin asks.
pub const MAX_READ_BYTES: usize = 4 << 20;

/// What the current phase may do with the backup store.
pub enum BackupAccess {
    /// Nothing (migrate, validate).
    None,
    /// Write new artifacts, up to `max_bytes` in total (backup).
    Write {
        /// The store.
        store: Arc<BackupStore>,
        /// Limit on the bytes of all artifacts of this backup.
        max_bytes: u64,
    },
    /// Read the artifacts of this step's backup (rollback).
    Read {
        /// The store.
        store: Arc<BackupStore>,
        /// The backup's artifacts by name.
        artifacts: BTreeMap<String, ArtifactRef>,
    },
}

/// State of the `backup-store` capability in one store.
pub struct BackupCapability {
    access: BackupAccess,
    table: ResourceTable,
    names: BTreeSet<String>,
    written: Vec<ArtifactRef>,
    bytes: u64,
    opened: Vec<ArtifactOpened>,
}

/// One artifact a plugin asked to open during rollback, as the host saw it:
/// recorded so a conformance check can tell which artifacts rollback read
/// (and whether it asked for any its backup never wrote).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArtifactOpened {
    /// The name the plugin asked for.
    pub name: String,
    /// Whether it is part of this step's backup (else `open` was refused).
    pub in_backup: bool,
    /// Whether the plugin read it to the end, where the store recomputed
    /// its digest and found it equal to what backup wrote.
    pub verified: bool,
}

impl BackupCapability {
    /// A capability with `access`.
    pub fn new(access: BackupAccess) -> Self {
        BackupCapability {
            access,
            table: ResourceTable::new(),
            names: BTreeSet::new(),
            written: Vec::new(),
            bytes: 0,
            opened: Vec::new(),
        }
    }

    /// Artifacts the plugin asked to open during this call, in order.
    pub fn opened(&self) -> &[ArtifactOpened] {
        &self.opened
    }

    /// Artifacts finished during this call, in order.
    pub fn written(&self) -> &[ArtifactRef] {
        &self.written
    }
}

/// An artifact being written.
pub struct WriterHandle {
    writer: Option<ArtifactWriter>,
}

/// An artifact being read.
pub struct ReaderHandle {
    reader: ArtifactReader,
    /// Index of its record in `opened`.
    opened: usize,
}

struct Backups;

impl HasData for Backups {
    type Data<'a> = &'a mut BackupCapability;
}

/// Adds `backup-store` to a linker.
pub fn add_to_linker<T: Send + 'static>(
    linker: &mut Linker<T>,
    get: fn(&mut T) -> &mut BackupCapability,
) -> wasmtime::Result<()> {
    wit::add_to_linker::<T, Backups>(linker, get)
}

fn store_error(e: BackupError) -> Error {
    match e {
        BackupError::Io { .. } => Error::Internal(format!("host backup store: {e}")),
        BackupError::Altered { .. } | BackupError::Missing { .. } => {
            Error::BackupInvalid(e.to_string())
        }
    }
}

fn valid_name(name: &str) -> bool {
    !name.is_empty() && name.len() <= MAX_NAME_LEN && !name.chars().any(char::is_control)
}

impl wit::Host for BackupCapability {
    async fn create(
        &mut self,
        name: String,
    ) -> wasmtime::Result<Result<Resource<WriterHandle>, Error>> {
        let BackupAccess::Write { store, .. } = &self.access else {
            return Ok(Err(Error::AccessDenied(
                "backup artifacts can only be written during the backup phase".into(),
            )));
        };
        if !valid_name(&name) {
            return Ok(Err(Error::InvalidParams(format!(
                "artifact name `{name}` must be 1–{MAX_NAME_LEN} characters without control characters"
            ))));
        }
        if !self.names.insert(name.clone()) {
            return Ok(Err(Error::PreconditionFailed(format!(
                "artifact `{name}` was already created in this backup"
            ))));
        }
        match store.create(&name) {
            Ok(writer) => Ok(Ok(self.table.push(WriterHandle {
                writer: Some(writer),
            })?)),
            Err(e) => Ok(Err(store_error(e))),
        }
    }

    async fn open(
        &mut self,
        name: String,
    ) -> wasmtime::Result<Result<Resource<ReaderHandle>, Error>> {
        let BackupAccess::Read { store, artifacts } = &self.access else {
            return Ok(Err(Error::AccessDenied(
                "backup artifacts can only be read during rollback".into(),
            )));
        };
        let Some(artifact) = artifacts.get(&name) else {
            self.opened.push(ArtifactOpened {
                name: name.clone(),
                in_backup: false,
                verified: false,
            });
            return Ok(Err(Error::NotFound(format!(
                "artifact `{name}` is not part of this step's backup (it has: {})",
                artifacts.keys().cloned().collect::<Vec<_>>().join(", ")
            ))));
        };
        self.opened.push(ArtifactOpened {
            name,
            in_backup: true,
            verified: false,
        });
        let opened = self.opened.len() - 1;
        match store.open_artifact(artifact) {
            Ok(reader) => Ok(Ok(self.table.push(ReaderHandle { reader, opened })?)),
            Err(e) => Ok(Err(store_error(e))),
        }
    }
}

impl wit::HostArtifactWriter for BackupCapability {
    async fn write(
        &mut self,
        writer: Resource<WriterHandle>,
        bytes: Vec<u8>,
    ) -> wasmtime::Result<Result<(), Error>> {
        let max = match &self.access {
            BackupAccess::Write { max_bytes, .. } => *max_bytes,
            _ => 0,
        };
        if self.bytes + bytes.len() as u64 > max {
            return Ok(Err(Error::PreconditionFailed(format!(
                "the backup exceeds the step's limit of {} MiB (limits.backup_mib)",
                max >> 20
            ))));
        }
        let handle = self.table.get_mut(&writer)?;
        let Some(w) = handle.writer.as_mut() else {
            return Ok(Err(Error::PreconditionFailed(
                "the artifact is already finished".into(),
            )));
        };
        if let Err(e) = w.write(&bytes) {
            return Ok(Err(Error::Internal(format!(
                "writing artifact `{}`: {e}",
                w.name()
            ))));
        }
        self.bytes += bytes.len() as u64;
        Ok(Ok(()))
    }

    async fn finish(
        &mut self,
        writer: Resource<WriterHandle>,
    ) -> wasmtime::Result<Result<String, Error>> {
        let BackupAccess::Write { store, .. } = &self.access else {
            return Ok(Err(Error::AccessDenied("not in the backup phase".into())));
        };
        let store = store.clone();
        let Some(w) = self.table.get_mut(&writer)?.writer.take() else {
            return Ok(Err(Error::PreconditionFailed(
                "the artifact is already finished".into(),
            )));
        };
        match store.finish(w) {
            Ok(artifact) => {
                let digest = artifact.digest.clone();
                self.written.push(artifact);
                Ok(Ok(digest))
            }
            Err(e) => Ok(Err(store_error(e))),
        }
    }

    async fn drop(&mut self, writer: Resource<WriterHandle>) -> wasmtime::Result<()> {
        self.table.delete(writer)?;
        Ok(())
    }
}

impl wit::HostArtifactReader for BackupCapability {
    async fn read(
        &mut self,
        reader: Resource<ReaderHandle>,
        max_bytes: u32,
    ) -> wasmtime::Result<Result<Vec<u8>, Error>> {
        let handle = self.table.get_mut(&reader)?;
        let mut buf = vec![0u8; (max_bytes as usize).clamp(1, MAX_READ_BYTES)];
        match handle.reader.read_chunk(&mut buf) {
            Ok(n) => {
                // 0 is the end, reached only after the digest matched.
                if n == 0 {
                    let opened = handle.opened;
                    self.opened[opened].verified = true;
                }
                buf.truncate(n);
                Ok(Ok(buf))
            }
            Err(e) => Ok(Err(store_error(e))),
        }
    }

    async fn drop(&mut self, reader: Resource<ReaderHandle>) -> wasmtime::Result<()> {
        self.table.delete(reader)?;
        Ok(())
    }
}
