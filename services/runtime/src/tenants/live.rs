//! Live tenant configuration (ARCHITECTURE §2d): the tenants file as it is now, and as it
//! was when each live call started.
//!
//! Consumes the tenants file read at start-up (revision 0) and the `config` key of the NATS
//! KV bucket `TENANTS` (the admin API's puts, each a new revision, validated by the writer
//! and again here); produces the snapshot new calls are served with ([`LiveTenants::now`])
//! and, per call, the snapshot it started with ([`LiveTenants::for_call`], the revision in
//! the session's `cfg` field). State: the current snapshot and the last
//! [`KEPT_REVISIONS`] revisions in memory, a bounded map of call → revision; the bucket
//! keeps the last 64 revisions for a process that never saw an older call's.

use std::{
    collections::{BTreeMap, HashMap},
    sync::{Arc, Mutex, RwLock},
    time::Duration,
};

use async_nats::jetstream::{
    self,
    kv::{Entry, Operation, Store},
};
use futures::StreamExt;
use sb_schemas::{
    CallSid, Envelope, TenantId,
    subject::{TENANTS_BUCKET, TENANTS_KEY},
};

use super::{Tenant, Tenants, TenantsError};
use crate::{StageError, metrics::Metric, redis::Redis};

/// Revisions kept in memory besides the current one.
pub const KEPT_REVISIONS: usize = 16;
/// Calls whose revision a process remembers (one Redis read per call and process).
const PINNED_CALLS: usize = 50_000;

/// One revision of the tenants file.
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// The bucket's revision (0: the file the process started with).
    pub revision: u64,
    pub tenants: Arc<Tenants>,
}

/// The tenants, following the `TENANTS` bucket. Shared by every task of a service.
#[derive(Debug)]
pub struct LiveTenants {
    file: Arc<Tenants>,
    current: RwLock<Snapshot>,
    kept: Mutex<BTreeMap<u64, Arc<Tenants>>>,
    pins: Mutex<HashMap<CallSid, u64>>,
    kv: Option<Store>,
    redis: Option<Redis>,
}

impl LiveTenants {
    /// Tenants that never change (ring-2 tests, tools that read a file).
    pub fn fixed(tenants: Tenants) -> Arc<Self> {
        Arc::new(Self::new(Arc::new(tenants), None, None))
    }

    fn new(file: Arc<Tenants>, kv: Option<Store>, redis: Option<Redis>) -> Self {
        Self {
            current: RwLock::new(Snapshot {
                revision: 0,
                tenants: file.clone(),
            }),
            file,
            kept: Mutex::new(BTreeMap::new()),
            pins: Mutex::new(HashMap::new()),
            kv,
            redis,
        }
    }

    /// Starts from the bucket's latest revision (the file while the bucket is empty) and
    /// follows it in a background task for the life of the process.
    pub async fn follow(
        js: &jetstream::Context,
        redis: Redis,
        file: Tenants,
    ) -> Result<Arc<Self>, TenantsError> {
        let kv = js
            .get_key_value(TENANTS_BUCKET)
            .await
            .map_err(|e| TenantsError {
                path: format!("NATS KV bucket {TENANTS_BUCKET}"),
                message: format!("cannot open ({e}); `switchboard topology apply` creates it"),
            })?;
        let live = Arc::new(Self::new(Arc::new(file), Some(kv.clone()), Some(redis)));
        match kv.entry(TENANTS_KEY).await {
            Ok(Some(entry)) => live.apply(entry),
            Ok(None) => {}
            Err(error) => {
                return Err(TenantsError {
                    path: format!("NATS KV bucket {TENANTS_BUCKET}"),
                    message: format!("cannot read key {TENANTS_KEY}: {error}"),
                });
            }
        }
        metrics::gauge!(Metric::TenantConfigRevision.name()).set(live.revision() as f64);
        tokio::spawn(live.clone().watch(kv));
        Ok(live)
    }

    /// The snapshot new calls are served with.
    pub fn now(&self) -> Snapshot {
        self.current.read().expect("tenants lock").clone()
    }

    pub fn revision(&self) -> u64 {
        self.current.read().expect("tenants lock").revision
    }

    /// The current tenants (new calls, campaigns, webhooks).
    pub fn tenants(&self) -> Arc<Tenants> {
        self.now().tenants
    }

    pub fn by_id(&self, id: &TenantId) -> Option<Arc<Tenant>> {
        self.tenants().by_id(id).cloned()
    }

    pub fn by_number(&self, number: &str) -> Option<Arc<Tenant>> {
        self.tenants().by_number(number).cloned()
    }

    /// The tenant of a stage's input, as it is now (see [`Tenants::for_input`]).
    pub fn for_input(&self, id: &TenantId) -> Result<Arc<Tenant>, StageError> {
        self.tenants().for_input(id)
    }

    /// The tenant of a stage's input as the call started with it: a call keeps its prompt,
    /// voice and tools while the file changes. A session without a revision (lost, or
    /// older than live configuration), an unreadable Redis and a revision no longer stored
    /// get the current one: the call is served either way.
    pub async fn for_call(&self, input: &Envelope) -> Result<Arc<Tenant>, StageError> {
        let revision = self.pinned(&input.call_sid).await;
        let tenants = match revision {
            Some(revision) => self.at(revision).await,
            None => self.tenants(),
        };
        tenants.for_input(&input.tenant)
    }

    /// The revision the call started with, from the process' memory or its session.
    async fn pinned(&self, sid: &CallSid) -> Option<u64> {
        let redis = self.redis.as_ref()?;
        if let Some(revision) = self.pins.lock().expect("pins lock").get(sid) {
            return Some(*revision);
        }
        let revision = match redis.session_config_revision(sid).await {
            Ok(revision) => revision,
            Err(error) => {
                tracing::warn!(%error, "the call's tenants revision is unreadable: serving the current one");
                return None;
            }
        };
        if let Some(revision) = revision {
            let mut pins = self.pins.lock().expect("pins lock");
            if pins.len() >= PINNED_CALLS {
                pins.clear();
            }
            pins.insert(sid.clone(), revision);
        }
        revision
    }

    /// The tenants of `revision`: the current, a kept one, or read back from the bucket.
    pub async fn at(&self, revision: u64) -> Arc<Tenants> {
        let now = self.now();
        if revision == now.revision {
            return now.tenants;
        }
        if revision == 0 {
            return self.file.clone();
        }
        if let Some(tenants) = self.kept.lock().expect("kept lock").get(&revision) {
            return tenants.clone();
        }
        let Some(kv) = &self.kv else {
            return now.tenants;
        };
        match kv.entry_for_revision(TENANTS_KEY, revision).await {
            Ok(Some(entry)) => match self.parse(&entry) {
                Some(tenants) => {
                    self.keep(revision, tenants.clone());
                    tenants
                }
                None => now.tenants,
            },
            Ok(None) | Err(_) => {
                tracing::warn!(
                    revision,
                    "tenants revision no longer stored: serving the current one"
                );
                now.tenants
            }
        }
    }

    /// The tenants an entry holds: the file again for a deleted key; `None` (counted,
    /// logged) when the text does not validate.
    fn parse(&self, entry: &Entry) -> Option<Arc<Tenants>> {
        if matches!(entry.operation, Operation::Delete | Operation::Purge) {
            return Some(self.file.clone());
        }
        let text = String::from_utf8_lossy(&entry.value);
        match Tenants::parse(&text) {
            Ok(tenants) => Some(Arc::new(tenants)),
            Err(message) => {
                metrics::counter!(Metric::TenantConfigRejected.name(), "reason" => "invalid")
                    .increment(1);
                tracing::error!(revision = entry.revision, %message, "tenants revision refused");
                None
            }
        }
    }

    fn keep(&self, revision: u64, tenants: Arc<Tenants>) {
        let mut kept = self.kept.lock().expect("kept lock");
        kept.insert(revision, tenants);
        while kept.len() > KEPT_REVISIONS {
            kept.pop_first();
        }
    }

    /// Makes a newer valid revision the current one; the old one is kept for its calls.
    fn apply(&self, entry: Entry) {
        if entry.revision <= self.revision() {
            return;
        }
        let Some(tenants) = self.parse(&entry) else {
            return;
        };
        let old = {
            let mut current = self.current.write().expect("tenants lock");
            std::mem::replace(
                &mut *current,
                Snapshot {
                    revision: entry.revision,
                    tenants,
                },
            )
        };
        if old.revision != 0 {
            self.keep(old.revision, old.tenants);
        }
        metrics::gauge!(Metric::TenantConfigRevision.name()).set(entry.revision as f64);
        tracing::info!(
            revision = entry.revision,
            "tenants revision applied to new calls"
        );
    }

    /// Follows the key; a broken watch (NATS gone) is opened again after the last revision.
    async fn watch(self: Arc<Self>, kv: Store) {
        loop {
            match kv
                .watch_from_revision(TENANTS_KEY, self.revision() + 1)
                .await
            {
                Ok(mut entries) => {
                    while let Some(entry) = entries.next().await {
                        match entry {
                            Ok(entry) => self.apply(entry),
                            Err(error) => {
                                tracing::warn!(%error, "tenants watch broke");
                                break;
                            }
                        }
                    }
                }
                Err(error) => {
                    metrics::counter!(Metric::TenantConfigRejected.name(), "reason" => "unreadable")
                        .increment(1);
                    tracing::warn!(%error, "cannot watch the tenants bucket");
                }
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }
}
