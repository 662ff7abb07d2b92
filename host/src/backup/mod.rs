//! Content-addressed backup artifacts under `.sluice/backups/`, reached only
//! through a cap-std directory handle.
//!
//! An artifact is streamed into `tmp/`, hashed while written, fsynced and then
//! renamed to `sha256/<digest>`; the directory is fsynced so the name is
//! durable too. Identical bytes are stored once. Reads recompute the digest:
//! an artifact whose bytes changed since it was written is refused.

use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use cap_std::ambient_authority;
use cap_std::fs::{Dir, File};
use sha2::{Digest, Sha256};

/// A stored artifact: its digest and size.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ArtifactRef {
    /// Name the plugin gave it (unique within one backup).
    pub name: String,
    /// sha256 of its bytes (hex).
    pub digest: String,
    /// Size in bytes.
    pub size: u64,
}

/// Errors of the backup store.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    /// Filesystem trouble (full disk, permissions, …).
    #[error("backup store {root}: {action}: {source}")]
    Io {
        /// The store's directory.
        root: PathBuf,
        /// What was being done.
        action: String,
        /// The I/O error.
        source: io::Error,
    },
    /// An artifact's bytes do not match its recorded digest or size.
    #[error("artifact `{name}` ({digest}) was altered or damaged: {reason}")]
    Altered {
        /// Artifact name.
        name: String,
        /// Recorded digest.
        digest: String,
        /// What was found instead.
        reason: String,
    },
    /// The artifact is not in the store.
    #[error("artifact `{name}` ({digest}) is missing from the backup store")]
    Missing {
        /// Artifact name.
        name: String,
        /// Recorded digest.
        digest: String,
    },
}

/// The backup store of one plan.
pub struct BackupStore {
    root: PathBuf,
    dir: Dir,
}

impl BackupStore {
    /// Opens (creating if needed) the store at `root`.
    pub fn open(root: &Path) -> Result<Self, BackupError> {
        let io_err = |action: &str| {
            let root = root.to_path_buf();
            let action = action.to_string();
            move |source| BackupError::Io {
                root,
                action,
                source,
            }
        };
        std::fs::create_dir_all(root).map_err(io_err("creating the directory"))?;
        let dir = Dir::open_ambient_dir(root, ambient_authority()).map_err(io_err("opening"))?;
        dir.create_dir_all("tmp").map_err(io_err("creating tmp/"))?;
        dir.create_dir_all("sha256")
            .map_err(io_err("creating sha256/"))?;
        Ok(BackupStore {
            root: root.to_path_buf(),
            dir,
        })
    }

    fn io(&self, action: impl Into<String>) -> impl FnOnce(io::Error) -> BackupError + '_ {
        let action = action.into();
        move |source| BackupError::Io {
            root: self.root.clone(),
            action,
            source,
        }
    }

    /// Starts writing a new artifact.
    pub fn create(&self, name: &str) -> Result<ArtifactWriter, BackupError> {
        let tmp = format!("tmp/{}", uuid::Uuid::new_v4());
        let file = self
            .dir
            .create(&tmp)
            .map_err(self.io(format!("creating {tmp}")))?;
        Ok(ArtifactWriter {
            name: name.to_string(),
            tmp,
            file: Some(file),
            dir: self
                .dir
                .try_clone()
                .map_err(self.io("cloning the store handle"))?,
            hasher: Sha256::new(),
            size: 0,
        })
    }

    /// Stores `bytes` as one artifact, durably.
    pub fn store(&self, name: &str, bytes: &[u8]) -> Result<ArtifactRef, BackupError> {
        let mut writer = self.create(name)?;
        writer
            .write(bytes)
            .map_err(self.io(format!("writing artifact `{name}`")))?;
        self.finish(writer)
    }

    /// The bytes of one artifact, checked against its digest.
    pub fn read(&self, artifact: &ArtifactRef) -> Result<Vec<u8>, BackupError> {
        let mut reader = self.open_artifact(artifact)?;
        let mut bytes = Vec::with_capacity(artifact.size as usize);
        let mut chunk = vec![0u8; 1 << 16];
        loop {
            let n = reader.read_chunk(&mut chunk)?;
            if n == 0 {
                return Ok(bytes);
            }
            bytes.extend_from_slice(&chunk[..n]);
        }
    }

    /// Makes a written artifact durable under its digest.
    pub fn finish(&self, mut writer: ArtifactWriter) -> Result<ArtifactRef, BackupError> {
        // The file stays in the writer until it is stored, so a failure
        // below drops the writer with it and removes the partial file.
        let file = writer.file.as_ref().expect("an artifact is finished once");
        // An fsync failure means the bytes may not be on disk: the artifact is
        // invalid and is not retried as if it were fine.
        crate::failpoint_io!("backup:fsync")
            .and_then(|()| file.sync_all())
            .map_err(self.io(format!("fsync of artifact `{}`", writer.name)))?;
        let digest = hex::encode(std::mem::take(&mut writer.hasher).finalize());
        let path = format!("sha256/{digest}");
        self.dir
            .rename(&writer.tmp, &self.dir, &path)
            .map_err(self.io(format!("storing artifact `{}`", writer.name)))?;
        // Stored: nothing left for the writer's Drop to clean up.
        writer.file = None;
        self.sync_dir("sha256")?;
        crate::failpoint!("backup:artifact-stored");
        Ok(ArtifactRef {
            name: writer.name.clone(),
            digest,
            size: writer.size,
        })
    }

    fn sync_dir(&self, sub: &str) -> Result<(), BackupError> {
        let dir = self
            .dir
            .open_dir(sub)
            .map_err(self.io(format!("opening {sub}/")))?;
        dir.open(".")
            .and_then(|d| d.sync_all())
            .map_err(self.io(format!("fsync of {sub}/")))
    }

    /// Opens an artifact for reading; the digest is checked at the end.
    pub fn open_artifact(&self, artifact: &ArtifactRef) -> Result<ArtifactReader, BackupError> {
        let file = self
            .dir
            .open(format!("sha256/{}", artifact.digest))
            .map_err(|e| match e.kind() {
                io::ErrorKind::NotFound => BackupError::Missing {
                    name: artifact.name.clone(),
                    digest: artifact.digest.clone(),
                },
                _ => (self.io(format!("opening artifact `{}`", artifact.name)))(e),
            })?;
        Ok(ArtifactReader {
            artifact: artifact.clone(),
            file,
            hasher: Sha256::new(),
            size: 0,
        })
    }

    /// Recomputes an artifact's digest and size from the stored bytes.
    pub fn verify(&self, artifact: &ArtifactRef) -> Result<(), BackupError> {
        let mut reader = self.open_artifact(artifact)?;
        let mut buf = vec![0u8; 1 << 20];
        while reader.read_chunk(&mut buf)? > 0 {}
        Ok(())
    }
}

/// An artifact being written.
pub struct ArtifactWriter {
    name: String,
    tmp: String,
    file: Option<File>,
    dir: Dir,
    hasher: Sha256,
    size: u64,
}

impl ArtifactWriter {
    /// The artifact's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Bytes written so far.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Appends bytes.
    pub fn write(&mut self, bytes: &[u8]) -> io::Result<()> {
        let file = self.file.as_mut().expect("not finished");
        crate::failpoint_io!("backup:write")?;
        file.write_all(bytes)?;
        self.hasher.update(bytes);
        self.size += bytes.len() as u64;
        Ok(())
    }
}

/// An artifact being read; fails at the end if the bytes are not the ones
/// recorded.
pub struct ArtifactReader {
    artifact: ArtifactRef,
    file: File,
    hasher: Sha256,
    size: u64,
}

impl ArtifactReader {
    /// Reads up to `buf.len()` bytes; 0 at the end, after the digest matched.
    pub fn read_chunk(&mut self, buf: &mut [u8]) -> Result<usize, BackupError> {
        let n = self.file.read(buf).map_err(|source| BackupError::Io {
            root: PathBuf::from("sha256"),
            action: format!("reading artifact `{}`", self.artifact.name),
            source,
        })?;
        self.hasher.update(&buf[..n]);
        self.size += n as u64;
        let altered = |reason: String| BackupError::Altered {
            name: self.artifact.name.clone(),
            digest: self.artifact.digest.clone(),
            reason,
        };
        if self.size > self.artifact.size {
            return Err(altered(format!(
                "it is longer than the recorded {} bytes",
                self.artifact.size
            )));
        }
        if n == 0 {
            if self.size != self.artifact.size {
                return Err(altered(format!(
                    "{} bytes instead of {}",
                    self.size, self.artifact.size
                )));
            }
            let digest = hex::encode(std::mem::take(&mut self.hasher).finalize());
            if digest != self.artifact.digest {
                return Err(altered(format!("its bytes now hash to {digest}")));
            }
        }
        Ok(n)
    }
}

impl Drop for ArtifactWriter {
    fn drop(&mut self) {
        // An artifact never finished is not a backup: leave no partial file.
        if self.file.take().is_some() {
            let _ = self.dir.remove_file(&self.tmp);
        }
    }
}
