//! The calls list's filters, as the JSON API's query string and the page's form send them.
//!
//! Consumes a raw query string (`tenant`, `direction`, `since`, `until`, `outcome`,
//! `limit`; from the page's form, an empty field counts as absent) and the viewer's
//! [`Scope`]; produces the call index's [`Filter`] or a 400 naming the field. Times are
//! RFC 3339, or `YYYY-MM-DDTHH:MM[:SS]` in UTC (what a `datetime-local` input sends). No
//! I/O, no state.

use chrono::{DateTime, NaiveDateTime};
use sb_replay::index::Filter;
use sb_runtime::api_error::ApiError;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::access::Scope;

/// Calls a list shows unless told otherwise.
pub const DEFAULT_LIMIT: usize = 50;
/// The most calls one list shows.
pub const MAX_LIMIT: usize = 200;
pub use sb_replay::index::{DIRECTIONS, OUTCOMES};

/// A call's direction (documentation of the `direction` values).
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
#[schema(as = Direction)]
pub enum DirectionDoc {
    Inbound,
    Outbound,
}

/// What a list can ask about a call's ending (documentation of the `outcome` values).
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
#[schema(as = OutcomeFilter)]
pub enum OutcomeDoc {
    Completed,
    Transferred,
    EndedByAgent,
    Dropped,
    NotConnected,
    BargedIn,
    Fallback,
}

/// The filters of a calls list, as sent.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct CallQuery {
    /// Only this tenant's calls. A tenant's API key always lists its own tenant's calls
    /// (another tenant named: an empty list).
    pub tenant: Option<String>,
    /// `inbound` or `outbound`.
    #[param(value_type = Option<DirectionDoc>)]
    pub direction: Option<String>,
    /// Calls started at or after this time (RFC 3339).
    #[param(value_type = Option<String>, format = DateTime)]
    pub since: Option<String>,
    /// Calls started before this time (RFC 3339).
    #[param(value_type = Option<String>, format = DateTime)]
    pub until: Option<String>,
    /// How the call ended, or `barged_in` / `fallback`: calls with a barge-in or a
    /// fallback phrase.
    #[param(value_type = Option<OutcomeDoc>)]
    pub outcome: Option<String>,
    /// Calls listed, newest first (1–200, default 50).
    #[param(value_type = Option<u32>, minimum = 1, maximum = 200)]
    pub limit: Option<String>,
}

fn bad(field: &str, message: impl Into<String>) -> ApiError {
    ApiError::InvalidQuery {
        field: field.into(),
        message: message.into(),
    }
}

impl CallQuery {
    /// The JSON API's query string read (an empty value is a value, and checked as one).
    pub fn parse(raw: Option<&str>) -> Result<Self, ApiError> {
        serde_urlencoded::from_str(raw.unwrap_or(""))
            .map_err(|e| bad("query", format!("unreadable query string: {e}")))
    }

    /// The filter form's query string read: a field left empty is absent.
    pub fn form(raw: Option<&str>) -> Result<Self, ApiError> {
        let q = Self::parse(raw)?;
        let present = |v: Option<String>| v.map(|s| s.trim().to_owned()).filter(|s| !s.is_empty());
        Ok(Self {
            tenant: present(q.tenant),
            direction: present(q.direction),
            since: present(q.since),
            until: present(q.until),
            outcome: present(q.outcome),
            limit: present(q.limit),
        })
    }

    /// The index filter for a viewer of `scope` (`None`: the list is empty by scope).
    pub fn filter(&self, scope: &Scope) -> Result<Option<Filter>, ApiError> {
        let one_of = |field: &str, value: &Option<String>, allowed: &[&str]| match value {
            Some(v) if !allowed.contains(&v.as_str()) => {
                Err(bad(field, format!("must be one of {}", allowed.join(", "))))
            }
            _ => Ok(value.clone()),
        };
        let direction = one_of("direction", &self.direction, &DIRECTIONS)?;
        let outcome = one_of("outcome", &self.outcome, &OUTCOMES)?;
        let since = self
            .since
            .as_deref()
            .map(|v| micros("since", v))
            .transpose()?;
        let until = self
            .until
            .as_deref()
            .map(|v| micros("until", v))
            .transpose()?;
        let limit = match &self.limit {
            None => DEFAULT_LIMIT,
            Some(raw) => match raw.parse::<usize>() {
                Ok(n) if (1..=MAX_LIMIT).contains(&n) => n,
                _ => {
                    return Err(bad(
                        "limit",
                        format!("must be a whole number from 1 to {MAX_LIMIT}"),
                    ));
                }
            },
        };
        let tenant = match scope {
            Scope::Nothing => return Ok(None),
            Scope::Tenant(tenant) => tenant.clone(),
        };
        Ok(Some(Filter {
            tenant,
            direction,
            since,
            until,
            outcome,
            limit,
        }))
    }
}

/// µs since the epoch of an RFC 3339 time, or of `YYYY-MM-DDTHH:MM[:SS]` read as UTC;
/// a time before 1970 is 0.
pub fn micros(field: &str, raw: &str) -> Result<u64, ApiError> {
    let utc = DateTime::parse_from_rfc3339(raw)
        .map(|t| t.to_utc())
        .or_else(|_| {
            NaiveDateTime::parse_from_str(raw, "%Y-%m-%dT%H:%M:%S")
                .or_else(|_| NaiveDateTime::parse_from_str(raw, "%Y-%m-%dT%H:%M"))
                .map(|t| t.and_utc())
        })
        .map_err(|_| {
            bad(
                field,
                "must be a time like 2025-06-01T09:30:00Z (RFC 3339) or 2025-06-01T09:30 (UTC)",
            )
        })?;
    Ok(u64::try_from(utc.timestamp_micros()).unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(raw: &str) -> Result<Option<Filter>, ApiError> {
        CallQuery::parse(Some(raw))?.filter(&Scope::Tenant(None))
    }

    fn form(raw: &str) -> Result<Option<Filter>, ApiError> {
        CallQuery::form(Some(raw))?.filter(&Scope::Tenant(None))
    }

    fn field_of(error: ApiError) -> String {
        match error {
            ApiError::InvalidQuery { field, .. } => field,
            other => panic!("not a query error: {other:?}"),
        }
    }

    /// Every filter reaches the index filter; empty form fields are absent (an empty API
    /// value is checked); the limit defaults to 50.
    #[test]
    fn a_query_becomes_the_index_filter() {
        let f = form(
            "direction=inbound&outcome=barged_in&since=2025-06-01T09:30:00Z\
             &until=2025-06-01T10:00&limit=7&tenant=",
        )
        .unwrap()
        .unwrap();
        assert_eq!(f.direction.as_deref(), Some("inbound"));
        assert_eq!(f.outcome.as_deref(), Some("barged_in"));
        assert_eq!(f.since, Some(1_748_770_200_000_000));
        assert_eq!(f.until, Some(1_748_772_000_000_000));
        assert_eq!(f.limit, 7);
        assert_eq!(f.tenant, None);
        assert_eq!(query("").unwrap().unwrap().limit, DEFAULT_LIMIT);
        assert_eq!(
            form("since=&limit=").unwrap().unwrap(),
            query("").unwrap().unwrap()
        );
        assert_eq!(field_of(query("until=").unwrap_err()), "until");
        assert_eq!(
            query("since=1969-01-01T00:00:00%2B00:00")
                .unwrap()
                .unwrap()
                .since,
            Some(0)
        );
    }

    /// A bad value is a 400 naming its field.
    #[test]
    fn bad_values_name_their_field() {
        for (raw, field) in [
            ("direction=sideways", "direction"),
            ("outcome=happy", "outcome"),
            ("since=yesterday", "since"),
            ("until=2025-13-01T00:00", "until"),
            ("limit=0", "limit"),
            ("limit=201", "limit"),
            ("limit=ten", "limit"),
            ("limit=1&limit=2", "query"),
        ] {
            assert_eq!(field_of(query(raw).unwrap_err()), field, "{raw}");
        }
        assert_eq!(query("limit=200").unwrap().unwrap().limit, MAX_LIMIT);
    }

    /// The scope wins over the query's tenant; a scope of nothing lists nothing.
    #[test]
    fn the_scope_decides_the_tenant() {
        let q = CallQuery::parse(Some("tenant=globex")).unwrap();
        let forced = q.filter(&Scope::Tenant(Some("acme".into()))).unwrap();
        assert_eq!(forced.unwrap().tenant.as_deref(), Some("acme"));
        assert_eq!(q.filter(&Scope::Nothing).unwrap(), None);
    }
}
