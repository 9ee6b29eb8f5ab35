//! The campaigns API's bodies as the OpenAPI document describes them: what handlers
//! answer, and doc mirrors of [`CampaignSpec`] and [`Campaign`] (whose module is pure
//! domain code and stays free of `utoipa`).
//!
//! Consumes the queue's counts and records; produces the JSON the API sends. The mirrors
//! are proven complete by a ring-1 test (a full campaign survives a round trip through
//! them with `deny_unknown_fields`). No state.

use std::collections::BTreeMap;

use sb_runtime::redis::campaigns::{ContactPayload, ContactRow, ContactState};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::campaign::Campaign;
#[cfg(doc)]
use crate::campaign::CampaignSpec;

/// A call outcome (`retry.on`).
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "kebab-case")]
#[schema(as = Outcome)]
pub enum OutcomeDoc {
    Completed,
    Voicemail,
    Busy,
    NoAnswer,
    Failed,
    Canceled,
    Error,
}

/// When calls may be placed: on these days, from–to local time, in `time_zone` unless the
/// contact has a `timezone` variable naming another IANA zone.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = CallingHours)]
pub struct CallingHoursDoc {
    /// `mon` … `sun`, at least one.
    #[schema(example = json!(["mon", "tue", "wed", "thu", "fri"]))]
    pub days: Vec<String>,
    /// `HH:MM`, before `to`.
    #[schema(example = "09:00")]
    pub from: String,
    #[schema(example = "17:00")]
    pub to: String,
    /// IANA name.
    #[schema(example = "America/New_York")]
    pub time_zone: String,
    /// Use each contact's `timezone` variable (IANA) where it has one: such a contact
    /// alone waits for its hours.
    #[serde(default)]
    pub callee_time_zone: bool,
}

/// Which outcomes are tried again, how many attempts in all (1–20), how far apart.
#[derive(Debug, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = RetrySpec)]
pub struct RetryDoc {
    /// Default `busy`, `no-answer`, `failed`; never `completed` or `voicemail`.
    #[serde(default)]
    pub on: Vec<OutcomeDoc>,
    /// Default 3.
    #[serde(default)]
    #[schema(minimum = 1, maximum = 20)]
    pub max_attempts: u32,
    /// Default 1800; at most 30 days.
    #[serde(default)]
    #[schema(maximum = 2592000)]
    pub spacing_secs: u64,
}

/// A campaign definition (`POST /v1/tenants/{tenant}/campaigns`). Fields with a default
/// may be left out but are never null.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = CampaignSpec)]
pub struct SpecDoc {
    /// 1–200 characters.
    #[schema(example = "December reminders")]
    pub name: String,
    /// One of the tenant's numbers (E.164).
    #[schema(example = "+15005550006")]
    pub caller_id: String,
    pub calling_hours: CallingHoursDoc,
    /// 1–1000 calls of this campaign in flight at once.
    #[schema(minimum = 1, maximum = 1000)]
    pub max_concurrent_calls: u32,
    #[serde(default)]
    pub retry: RetryDoc,
    /// 0–65535, higher first; FIFO within one. Default 0.
    #[serde(default)]
    pub priority: u16,
    /// RFC 3339; no calls before.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(format = DateTime)]
    pub starts_at: Option<String>,
    /// RFC 3339, after `starts_at`; no calls after.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(format = DateTime)]
    pub ends_at: Option<String>,
    /// Replaces the tenant's greeting; `{{variable}}` placeholders, 1–4000 characters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub greeting: Option<String>,
    /// Replaces the tenant's system prompt; placeholders as in `greeting`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt: Option<String>,
    /// Left on an answering machine; placeholders as in `greeting`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub voicemail: Option<String>,
    /// Twilio answering-machine detection. Default true.
    #[serde(default)]
    pub machine_detection: bool,
}

/// Where a campaign is in its life.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
#[schema(as = CampaignState)]
pub enum StateDoc {
    Active,
    Paused,
    Canceled,
}

/// A stored campaign (its definition, id, state, creation time) and its contacts per
/// state. Written out field by field: a flattened definition would compose the request
/// schema's `additionalProperties: false` into the answer.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = Campaign)]
pub struct CampaignDoc {
    #[schema(example = "k3v9q2m1x0ab", pattern = "^[a-z0-9]{12}$")]
    pub id: String,
    pub state: StateDoc,
    #[schema(format = DateTime)]
    pub created_at: String,
    /// 1–200 characters.
    #[schema(example = "December reminders")]
    pub name: String,
    /// One of the tenant's numbers (E.164).
    #[schema(example = "+15005550006")]
    pub caller_id: String,
    pub calling_hours: CallingHoursDoc,
    /// 1–1000 calls of this campaign in flight at once.
    #[schema(minimum = 1, maximum = 1000)]
    pub max_concurrent_calls: u32,
    #[serde(default)]
    pub retry: RetryDoc,
    /// 0–65535, higher first; FIFO within one. Default 0.
    #[serde(default)]
    pub priority: u16,
    /// RFC 3339; no calls before.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(format = DateTime)]
    pub starts_at: Option<String>,
    /// RFC 3339, after `starts_at`; no calls after.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(format = DateTime)]
    pub ends_at: Option<String>,
    /// Replaces the tenant's greeting; `{{variable}}` placeholders, 1–4000 characters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub greeting: Option<String>,
    /// Replaces the tenant's system prompt; placeholders as in `greeting`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt: Option<String>,
    /// Left on an answering machine; placeholders as in `greeting`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub voicemail: Option<String>,
    /// Twilio answering-machine detection. Default true.
    #[serde(default)]
    pub machine_detection: bool,
    pub counts: Counts,
}

/// A contact's state.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
#[schema(as = ContactState)]
pub enum ContactStateDoc {
    Queued,
    Leased,
    Calling,
    Done,
    Failed,
    Canceled,
}

/// Contacts per state.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Counts {
    pub queued: u64,
    pub leased: u64,
    pub calling: u64,
    pub done: u64,
    pub failed: u64,
    pub canceled: u64,
}

impl Counts {
    /// From the queue's `counts` (state name → n).
    pub fn from_map(map: &BTreeMap<&'static str, u64>) -> Self {
        let n = |s: ContactState| map.get(s.as_str()).copied().unwrap_or(0);
        Self {
            queued: n(ContactState::Queued),
            leased: n(ContactState::Leased),
            calling: n(ContactState::Calling),
            done: n(ContactState::Done),
            failed: n(ContactState::Failed),
            canceled: n(ContactState::Canceled),
        }
    }
}

/// A campaign and its contacts per state (documented as [`CampaignDoc`]).
#[derive(Debug, Serialize)]
pub struct CampaignView {
    #[serde(flatten)]
    pub campaign: Campaign,
    pub counts: Counts,
}

/// What a cancel did.
#[derive(Debug, Serialize, ToSchema)]
pub struct CancelReport {
    /// Queued contacts that ended `canceled` now (0 when it was cancelled before).
    pub canceled_contacts: u64,
    #[schema(value_type = CampaignDoc)]
    pub campaign: CampaignView,
}

/// One contact of a JSON upload.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ContactIn {
    /// E.164, e.g. `+14155550100`.
    #[schema(example = "+14155550100")]
    pub phone: String,
    /// Template variables (`{{name}}`); `timezone` overrides the calling hours' zone.
    #[serde(default)]
    pub vars: BTreeMap<String, String>,
}

/// A JSON upload.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ContactsUpload {
    pub contacts: Vec<ContactIn>,
}

/// A row or item that was not queued, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct Rejection {
    /// The CSV line (the header is line 1), or the item's place in `contacts` from 1.
    pub line: u64,
    pub reason: String,
}

/// What an upload did. `queued + duplicates + rejected_total` = rows (or items) read.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, ToSchema)]
pub struct UploadReport {
    /// Contacts added to the queue.
    pub queued: u64,
    /// Numbers the campaign already had (re-uploads are harmless).
    pub duplicates: u64,
    /// The first 1,000 rows refused, in order (a number repeated within the upload is one).
    pub rejected: Vec<Rejection>,
    /// Every row refused.
    pub rejected_total: u64,
}

/// One contact as listed.
#[derive(Debug, Serialize, ToSchema)]
pub struct ContactView {
    #[schema(example = "+14155550100")]
    pub phone: String,
    #[schema(value_type = ContactStateDoc)]
    pub state: String,
    pub attempts: u32,
    /// The last attempt's outcome (or why it failed); none before the first.
    pub last_outcome: Option<String>,
    /// Twilio call sids of its attempts, oldest first.
    pub call_sids: Vec<String>,
    pub vars: BTreeMap<String, String>,
}

impl ContactView {
    pub fn from_row(row: ContactRow) -> Self {
        let payload: ContactPayload = serde_json::from_str(&row.record.payload).unwrap_or_default();
        let phone = if payload.phone.is_empty() {
            format!("+{}", row.id)
        } else {
            payload.phone
        };
        Self {
            phone,
            state: row.record.state.as_str().to_owned(),
            attempts: row.record.attempts,
            last_outcome: (!row.record.reason.is_empty()).then_some(row.record.reason),
            call_sids: row.call_sids,
            vars: payload.vars,
        }
    }
}

/// A page of contacts.
#[derive(Debug, Serialize, ToSchema)]
pub struct ContactsPage {
    pub contacts: Vec<ContactView>,
    /// Pass as `cursor` for the next page; null after the last. A page filtered by state
    /// may be short or empty while this is still set.
    #[schema(pattern = "^[0-9]{1,19}$")]
    pub next_cursor: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::campaign::CampaignSpec;

    /// Every field of a campaign, each set: the doc mirrors must read and write all of
    /// them (they deny unknown fields), or the OpenAPI document is missing one.
    #[test]
    fn doc_mirrors_cover_every_campaign_field() {
        let full = serde_json::json!({
            "id": "abcdefabcdef", "state": "paused", "created_at": "2026-12-03T10:00:00Z",
            "name": "n", "caller_id": "+15005550006",
            "calling_hours": {"days": ["mon"], "from": "09:00", "to": "17:00",
                              "time_zone": "UTC"},
            "max_concurrent_calls": 2,
            "retry": {"on": ["busy", "no-answer"], "max_attempts": 2, "spacing_secs": 60},
            "priority": 7, "starts_at": "2026-12-04T00:00:00Z",
            "ends_at": "2026-12-05T00:00:00Z", "greeting": "g", "prompt": "p",
            "voicemail": "v", "machine_detection": false
        });
        let campaign: Campaign = serde_json::from_value(full.clone()).unwrap();
        let view = CampaignView {
            campaign: campaign.clone(),
            counts: Counts::default(),
        };
        let written = serde_json::to_value(&view).unwrap();
        let doc: CampaignDoc = serde_json::from_value(written.clone()).unwrap();
        assert_eq!(serde_json::to_value(&doc).unwrap(), written);
        let spec: SpecDoc =
            serde_json::from_value(serde_json::to_value(&campaign.spec).unwrap()).unwrap();
        let back: CampaignSpec =
            serde_json::from_value(serde_json::to_value(&spec).unwrap()).unwrap();
        assert_eq!(back, campaign.spec);
    }
}
