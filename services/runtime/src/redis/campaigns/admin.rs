//! Managing a campaign in the queue: holds (pause, cancel, calling hours), deleting a
//! contact, counts per state, paging through contacts, and the stored definitions.
//!
//! Consumes the campaigns API's and the dialer's requests; produces changes to the
//! campaign's keys (ARCHITECTURE §6, "The campaign queue"): `cq:{tenant}:hold`,
//! `cq:{tenant}:defs`, and through the `CANCEL`, `DELETE` and `HOLD` scripts the contact
//! records and their counts. State: those keys in the state Redis, no TTLs.

use std::collections::{BTreeMap, HashMap};

use sb_schemas::TenantId;

use super::scripts::{CANCEL_SCRIPT, DELETE_SCRIPT, DIALABLE_SCRIPT, HOLD_SCRIPT};
use super::{CampaignId, CampaignQueue, ContactId, ContactRecord, ContactState, corrupt};
use crate::redis::{RedisError, failed};

/// Contacts one `CANCEL` script moves (about a millisecond of Redis time).
const CANCEL_BATCH: u32 = 1000;

/// Why pops skip a campaign.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hold {
    Paused,
    Canceled,
    /// Outside its calling hours until this time (ms).
    Until(u64),
}

impl Hold {
    fn decode(raw: &str) -> Option<Self> {
        match raw {
            "" => None,
            "p" => Some(Self::Paused),
            "x" => Some(Self::Canceled),
            n => n.parse().ok().map(Self::Until),
        }
    }
}

/// One contact as the API lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContactRow {
    pub id: ContactId,
    pub record: ContactRecord,
    /// The call sids of its attempts, oldest first.
    pub call_sids: Vec<String>,
}

/// A page of contacts and where the next one starts (`None`: this was the last).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ContactPage {
    pub contacts: Vec<ContactRow>,
    pub next: Option<u64>,
}

impl CampaignQueue {
    async fn hold_script(
        &self,
        tenant: &TenantId,
        campaign: &CampaignId,
        value: &str,
        mode: &str,
    ) -> Result<Option<Hold>, RedisError> {
        let now: String = self
            .invocation(&HOLD_SCRIPT)
            .arg(tenant.as_str())
            .arg(campaign.as_str())
            .arg(value)
            .arg(mode)
            .invoke_async(&mut self.conn.clone())
            .await
            .map_err(failed("cq_hold"))?;
        Ok(Hold::decode(&now))
    }

    /// Pops skip the campaign until [`CampaignQueue::resume`] (a cancelled one stays cancelled).
    pub async fn pause(
        &self,
        tenant: &TenantId,
        campaign: &CampaignId,
    ) -> Result<Option<Hold>, RedisError> {
        self.hold_script(tenant, campaign, "p", "set").await
    }

    /// Lifts a pause or a calling-hours hold; never a cancellation.
    pub async fn resume(
        &self,
        tenant: &TenantId,
        campaign: &CampaignId,
    ) -> Result<Option<Hold>, RedisError> {
        self.hold_script(tenant, campaign, "", "resume").await
    }

    /// Pops skip the campaign until `until_ms` (outside calling hours), unless it is
    /// paused or cancelled, which this never replaces.
    pub async fn hold_until(
        &self,
        tenant: &TenantId,
        campaign: &CampaignId,
        until_ms: u64,
    ) -> Result<Option<Hold>, RedisError> {
        self.hold_script(tenant, campaign, &until_ms.to_string(), "hours")
            .await
    }

    /// The campaign's hold now.
    pub async fn hold(
        &self,
        tenant: &TenantId,
        campaign: &CampaignId,
    ) -> Result<Option<Hold>, RedisError> {
        let raw: Option<String> = redis::cmd("HGET")
            .arg(self.keys.cq_hold(tenant))
            .arg(campaign.as_str())
            .query_async(&mut self.conn.clone())
            .await
            .map_err(failed("cq_hold"))?;
        Ok(raw.as_deref().and_then(Hold::decode))
    }

    /// Cancels the campaign for good: no more pops, every queued contact ends `canceled`
    /// (in scripts of 1,000), calls in flight finish and are not retried. Returns how many
    /// queued contacts were cancelled.
    pub async fn cancel(
        &self,
        tenant: &TenantId,
        campaign: &CampaignId,
    ) -> Result<u64, RedisError> {
        self.hold_script(tenant, campaign, "x", "set").await?;
        let mut total = 0;
        loop {
            let n: u64 = self
                .invocation(&CANCEL_SCRIPT)
                .arg(tenant.as_str())
                .arg(campaign.as_str())
                .arg(CANCEL_BATCH)
                .invoke_async(&mut self.conn.clone())
                .await
                .map_err(failed("cq_cancel"))?;
            total += n;
            if n == 0 {
                return Ok(total);
            }
        }
    }

    /// Removes a contact that is queued or finished. `Ok(Some(false))` when a call to it
    /// is being placed or is live (nothing changed), `Ok(None)` when it is unknown.
    pub async fn delete_contact(
        &self,
        tenant: &TenantId,
        campaign: &CampaignId,
        contact: &ContactId,
    ) -> Result<Option<bool>, RedisError> {
        let n: i64 = self
            .invocation(&DELETE_SCRIPT)
            .arg(tenant.as_str())
            .arg(campaign.as_str())
            .arg(contact.as_str())
            .invoke_async(&mut self.conn.clone())
            .await
            .map_err(failed("cq_delete"))?;
        Ok(match n {
            1 => Some(true),
            -1 => Some(false),
            _ => None,
        })
    }

    /// Contacts per state (every state present, zeros included).
    pub async fn counts(
        &self,
        tenant: &TenantId,
        campaign: &CampaignId,
    ) -> Result<BTreeMap<&'static str, u64>, RedisError> {
        let raw: HashMap<String, i64> = redis::cmd("HGETALL")
            .arg(self.keys.cq_counts(tenant, campaign))
            .query_async(&mut self.conn.clone())
            .await
            .map_err(failed("cq_counts"))?;
        Ok(ContactState::ALL
            .into_iter()
            .map(|s| {
                let n = raw.get(s.code()).copied().unwrap_or(0).max(0);
                (s.as_str(), n.unsigned_abs())
            })
            .collect())
    }

    /// One page of the campaign's contacts, in hash order, from `cursor` (0: the start),
    /// about `count` looked at; with `state`, only those in it (a page may then be short
    /// or empty while `next` is still set).
    pub async fn contacts_page(
        &self,
        tenant: &TenantId,
        campaign: &CampaignId,
        state: Option<ContactState>,
        cursor: u64,
        count: u32,
    ) -> Result<ContactPage, RedisError> {
        let (next, flat): (u64, Vec<String>) = redis::cmd("HSCAN")
            .arg(self.keys.cq_contacts(tenant, campaign))
            .arg(cursor)
            .arg("COUNT")
            .arg(count.max(1))
            .query_async(&mut self.conn.clone())
            .await
            .map_err(failed("cq_contacts_page"))?;
        let mut rows = Vec::new();
        for pair in flat.chunks_exact(2) {
            let record = ContactRecord::decode(&pair[1])
                .ok_or_else(|| corrupt(format!("record {:?}", pair[1])))?;
            if state.is_some_and(|s| s != record.state) {
                continue;
            }
            let id = ContactId::parse(&pair[0]).map_err(|e| corrupt(e.to_string()))?;
            rows.push((id, record));
        }
        let sids: Vec<Option<String>> = if rows.is_empty() {
            Vec::new()
        } else {
            let mut cmd = redis::cmd("HMGET");
            cmd.arg(self.keys.cq_calls(tenant, campaign));
            for (id, _) in &rows {
                cmd.arg(id.as_str());
            }
            cmd.query_async(&mut self.conn.clone())
                .await
                .map_err(failed("cq_contacts_page"))?
        };
        let contacts = rows
            .into_iter()
            .zip(sids.into_iter().chain(std::iter::repeat(None)))
            .map(|((id, record), sids)| ContactRow {
                id,
                record,
                call_sids: sids
                    .map(|s| s.split(',').map(str::to_owned).collect())
                    .unwrap_or_default(),
            })
            .collect();
        Ok(ContactPage {
            contacts,
            next: (next != 0).then_some(next),
        })
    }

    /// Stores a new campaign definition; `false` if the id is taken.
    pub async fn create_def(
        &self,
        tenant: &TenantId,
        campaign: &CampaignId,
        json: &str,
    ) -> Result<bool, RedisError> {
        redis::cmd("HSETNX")
            .arg(self.keys.cq_defs(tenant))
            .arg(campaign.as_str())
            .arg(json)
            .query_async(&mut self.conn.clone())
            .await
            .map_err(failed("cq_defs"))
    }

    /// Replaces a campaign definition.
    pub async fn put_def(
        &self,
        tenant: &TenantId,
        campaign: &CampaignId,
        json: &str,
    ) -> Result<(), RedisError> {
        redis::cmd("HSET")
            .arg(self.keys.cq_defs(tenant))
            .arg(campaign.as_str())
            .arg(json)
            .query_async(&mut self.conn.clone())
            .await
            .map_err(failed("cq_defs"))
    }

    /// A campaign definition, as stored.
    pub async fn def(
        &self,
        tenant: &TenantId,
        campaign: &CampaignId,
    ) -> Result<Option<String>, RedisError> {
        redis::cmd("HGET")
            .arg(self.keys.cq_defs(tenant))
            .arg(campaign.as_str())
            .query_async(&mut self.conn.clone())
            .await
            .map_err(failed("cq_defs"))
    }

    /// Ready contacts of campaigns that are not held at `now` (paused, cancelled, outside
    /// their hours), over every tenant: what the dialers could call now. Looks at no more
    /// than `max_campaigns` campaigns (a gauge, not an exact count past that).
    pub async fn dialable(&self, now_ms: u64, max_campaigns: u32) -> Result<u64, RedisError> {
        self.invocation(&DIALABLE_SCRIPT)
            .arg(now_ms)
            .arg(max_campaigns)
            .invoke_async(&mut self.conn.clone())
            .await
            .map_err(failed("cq_dialable"))
    }

    /// Every tenant's queued contacts (ready and delayed), for the depth gauge.
    pub async fn depths(&self) -> Result<Vec<(String, u64)>, RedisError> {
        let raw: Vec<(String, f64)> = redis::cmd("ZRANGE")
            .arg(self.keys.cq_depth())
            .arg(0)
            .arg(-1)
            .arg("WITHSCORES")
            .query_async(&mut self.conn.clone())
            .await
            .map_err(failed("cq_depths"))?;
        Ok(raw
            .into_iter()
            .map(|(t, n)| (t, n.max(0.0) as u64))
            .collect())
    }
}
