//! The live tenants file as the admin API reads and writes it: key `config` of the NATS
//! KV bucket `TENANTS` (ARCHITECTURE §2d).
//!
//! Consumes the tenants file the console started with (what the services serve while the
//! bucket is empty, revision 0) and the bucket; produces the current text with its
//! revision, and new revisions: each validated as the services will validate it, written
//! only if the bucket still holds the revision it was based on (optimistic concurrency).
//! State: none here; the bucket keeps the last 64 revisions.

use async_nats::jetstream::{
    self,
    kv::{CreateErrorKind, Operation, Store, UpdateErrorKind},
};
use sb_runtime::Tenants;
use sb_schemas::subject::{TENANTS_BUCKET, TENANTS_KEY};

/// The largest tenants file the bucket takes (its `max_msg_size`).
pub const MAX_CONFIG_BYTES: usize = 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The text does not validate; the message names the tenant and the field.
    #[error("{0}")]
    Invalid(String),
    /// The bucket moved on since `expected`: read again, apply the change again.
    #[error("the tenants file is at revision {actual}, not {expected}: read it again")]
    Conflict { expected: u64, actual: u64 },
    #[error("the tenants bucket is unavailable: {0}")]
    Unavailable(String),
}

/// One revision of the tenants file.
#[derive(Debug)]
pub struct Current {
    /// The bucket's revision; 0 while the bucket is empty (the file is served).
    pub revision: u64,
    pub text: String,
    pub tenants: Tenants,
}

/// The `TENANTS` bucket and the file behind it.
#[derive(Clone)]
pub struct TenantsStore {
    kv: Store,
    file: String,
}

impl TenantsStore {
    /// Opens the bucket (`switchboard topology apply` creates it); `file` is the text of
    /// the tenants file the services started with.
    pub async fn open(js: &jetstream::Context, file: String) -> Result<Self, StoreError> {
        let kv = js
            .get_key_value(TENANTS_BUCKET)
            .await
            .map_err(|e| StoreError::Unavailable(e.to_string()))?;
        Ok(Self { kv, file })
    }

    /// The revision new calls are served with.
    pub async fn current(&self) -> Result<Current, StoreError> {
        let entry = self
            .kv
            .entry(TENANTS_KEY)
            .await
            .map_err(|e| StoreError::Unavailable(e.to_string()))?;
        let (revision, text) = match entry {
            Some(entry) if entry.operation == Operation::Put => (
                entry.revision,
                String::from_utf8_lossy(&entry.value).into_owned(),
            ),
            // A deleted key: the services serve the file again.
            Some(entry) => (entry.revision, self.file.clone()),
            None => (0, self.file.clone()),
        };
        // What is stored was validated when written; a text that no longer validates (a
        // newer Switchboard's rules) is reported, not served as if it were fine.
        let tenants = Tenants::parse(&text)
            .map_err(|e| StoreError::Invalid(format!("the stored revision {revision}: {e}")))?;
        Ok(Current {
            revision,
            text,
            tenants,
        })
    }

    /// Validates `text` and stores it as the next revision, if the bucket is still at
    /// `expected`; returns the new revision.
    pub async fn put(&self, text: &str, expected: u64) -> Result<u64, StoreError> {
        if text.len() > MAX_CONFIG_BYTES {
            return Err(StoreError::Invalid(format!(
                "the tenants file is {} bytes; at most {MAX_CONFIG_BYTES}",
                text.len()
            )));
        }
        Tenants::parse(text).map_err(StoreError::Invalid)?;
        let value = text.to_owned().into_bytes().into();
        let written = if expected == 0 {
            self.kv
                .create(TENANTS_KEY, value)
                .await
                .map_err(|e| match e.kind() {
                    CreateErrorKind::AlreadyExists => None,
                    _ => Some(StoreError::Unavailable(e.to_string())),
                })
        } else {
            self.kv
                .update(TENANTS_KEY, value, expected)
                .await
                .map_err(|e| match e.kind() {
                    UpdateErrorKind::WrongLastRevision => None,
                    _ => Some(StoreError::Unavailable(e.to_string())),
                })
        };
        match written {
            Ok(revision) => {
                tracing::info!(revision, "tenants file revision stored");
                Ok(revision)
            }
            Err(Some(error)) => Err(error),
            Err(None) => {
                let actual = self.current().await.map(|c| c.revision).unwrap_or(0);
                Err(StoreError::Conflict { expected, actual })
            }
        }
    }
}
