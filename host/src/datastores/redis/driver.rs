//! The Redis driver: [`Datastore`] over this folder's fingerprints,
//! estimates, rehearsal copies and scratch databases. Plugins reach Redis
//! through the `kv` capability, not `sql`.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;

use futures_util::future::BoxFuture;

use super::{copy, scratch, RedisSession};
use crate::datastores::{
    CopyError, Datastore, DatastoreError, Endpoint, Fingerprint, KvSession, RehearsalCopy,
    ScratchSource, ScratchTarget, TargetState,
};
use crate::plan::TargetKind;

/// The Redis driver.
pub struct Redis;

impl Datastore for Redis {
    fn kind(&self) -> TargetKind {
        TargetKind::Redis
    }

    fn open_kv<'a>(
        &'a self,
        endpoint: &'a Endpoint,
    ) -> BoxFuture<'a, Result<Arc<dyn KvSession>, DatastoreError>> {
        Box::pin(async move {
            let session = RedisSession::connect(endpoint.url(self.kind())?).await?;
            Ok(Arc::new(session) as Arc<dyn KvSession>)
        })
    }

    fn fingerprint<'a>(
        &'a self,
        endpoint: &'a Endpoint,
        scope: Vec<String>,
    ) -> BoxFuture<'a, Result<Fingerprint, DatastoreError>> {
        Box::pin(async move { super::fingerprint(endpoint.url(self.kind())?, &scope).await })
    }

    fn estimate_backup<'a>(
        &'a self,
        endpoint: &'a Endpoint,
        scope: Option<Vec<String>>,
    ) -> BoxFuture<'a, Result<u64, DatastoreError>> {
        Box::pin(async move {
            let url = endpoint.url(self.kind())?;
            super::estimate_backup(url, scope.as_deref().unwrap_or_default()).await
        })
    }

    fn measure<'a>(
        &'a self,
        endpoint: &'a Endpoint,
        scope: Option<&'a BTreeSet<String>>,
    ) -> BoxFuture<'a, Result<TargetState, DatastoreError>> {
        Box::pin(async move {
            let url = endpoint.url(self.kind())?;
            // The empty prefix is every key.
            let prefixes: Vec<String> = match scope {
                Some(prefixes) => prefixes.iter().cloned().collect(),
                None => vec![String::new()],
            };
            Ok(TargetState {
                fingerprint: super::fingerprint(url, &prefixes).await?,
                file_sha256: None,
            })
        })
    }

    fn copy<'a>(
        &'a self,
        endpoint: &'a Endpoint,
        scope: Option<&'a BTreeSet<String>>,
        _dir: &'a Path,
        label: &'a str,
    ) -> BoxFuture<'a, Result<Box<dyn RehearsalCopy>, CopyError>> {
        Box::pin(async move {
            let url = endpoint.url(self.kind()).map_err(|e| CopyError {
                target: label.to_string(),
                reason: e.to_string(),
            })?;
            copy::copy(url, scope, label).await
        })
    }

    fn scratch<'a>(
        &'a self,
        source: ScratchSource,
        fixture: Option<String>,
        _dir: &'a Path,
    ) -> BoxFuture<'a, Result<Box<dyn ScratchTarget>, String>> {
        Box::pin(scratch::prepare(source, fixture))
    }
}
