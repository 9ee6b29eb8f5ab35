//! Reading and deleting a campaign's contacts: `GET …/contacts` (paged, optionally one
//! state) and `DELETE …/contacts/{contact}`.
//!
//! Consumes an authorised tenant, a campaign id, a page request or a number; produces
//! pages of [`ContactView`] from the queue's `HSCAN` (`contacts_page`) and removals
//! through `delete_contact`. State: Redis only; the cursor is the client's.

use axum::Json;
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use sb_runtime::redis::campaigns::{ContactId, ContactState};
use serde::Deserialize;
use utoipa::IntoParams;

use super::ApiState;
use super::auth::TenantAuth;
use super::campaigns::load;
use super::error::{ApiError, ErrorBody};
use super::model::{ContactStateDoc, ContactView, ContactsPage};

const DEFAULT_LIMIT: u32 = 100;
const MAX_LIMIT: u32 = 1000;

/// The page wanted.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PageQuery {
    /// Only contacts in this state.
    #[param(value_type = Option<ContactStateDoc>)]
    pub state: Option<String>,
    /// From the previous page's `next_cursor`; absent: the start.
    #[param(pattern = "^[0-9]{1,19}$")]
    pub cursor: Option<String>,
    /// Contacts looked at (1–1000, default 100).
    #[param(value_type = Option<u32>, minimum = 1, maximum = 1000)]
    pub limit: Option<String>,
}

/// The query checked: state, cursor, limit.
fn parse_query(raw: Option<&str>) -> Result<(Option<ContactState>, u64, u32), ApiError> {
    let bad = |field: &str, message: String| ApiError::InvalidQuery {
        field: field.into(),
        message,
    };
    let q: PageQuery = serde_urlencoded::from_str(raw.unwrap_or(""))
        .map_err(|e| bad("query", format!("unreadable query string: {e}")))?;
    let state = q
        .state
        .map(|s| {
            ContactState::parse(&s).ok_or_else(|| {
                bad(
                    "state",
                    "must be queued, leased, calling, done, failed or canceled".into(),
                )
            })
        })
        .transpose()?;
    let cursor = q
        .cursor
        .map(|c| {
            c.parse::<u64>()
                .map_err(|_| bad("cursor", "must be a next_cursor of an earlier page".into()))
        })
        .transpose()?
        .unwrap_or(0);
    let limit = q
        .limit
        .map(|l| match l.parse::<u32>() {
            Ok(n) if (1..=MAX_LIMIT).contains(&n) => Ok(n),
            _ => Err(bad(
                "limit",
                format!("must be a whole number from 1 to {MAX_LIMIT}"),
            )),
        })
        .transpose()?
        .unwrap_or(DEFAULT_LIMIT);
    Ok((state, cursor, limit))
}

/// One page of the campaign's contacts, in storage order.
#[utoipa::path(get, path = "/v1/tenants/{tenant}/campaigns/{campaign}/contacts", tag = "contacts",
    params(("tenant" = String, Path, description = "Tenant id"),
           ("campaign" = String, Path, description = "Campaign id"),
           PageQuery),
    responses(
        (status = 200, description = "A page", body = ContactsPage),
        (status = 400, description = "Invalid state, cursor or limit", body = ErrorBody),
        (status = 401, description = "No valid API key", body = ErrorBody),
        (status = 404, description = "Unknown tenant or campaign", body = ErrorBody),
        (status = 503, description = "Store unavailable", body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn list(
    State(state): State<ApiState>,
    auth: TenantAuth,
    Path((_, raw)): Path<(String, String)>,
    RawQuery(query): RawQuery,
) -> Result<Json<ContactsPage>, ApiError> {
    let (filter, cursor, limit) = parse_query(query.as_deref())?;
    let (id, _) = load(&state, auth.id(), &raw).await?;
    let page = state
        .queue
        .contacts_page(auth.id(), &id, filter, cursor, limit)
        .await?;
    Ok(Json(ContactsPage {
        contacts: page
            .contacts
            .into_iter()
            .map(ContactView::from_row)
            .collect(),
        next_cursor: page.next.map(|n| n.to_string()),
    }))
}

/// The contact id of a number given with or without its `+`.
fn contact_id(raw: &str) -> Option<ContactId> {
    let digits = raw.strip_prefix('+').unwrap_or(raw);
    crate::campaign::is_e164(&format!("+{digits}"))
        .then(|| ContactId::parse(digits).ok())
        .flatten()
}

/// Remove a queued or finished contact (not one being called).
#[utoipa::path(delete, path = "/v1/tenants/{tenant}/campaigns/{campaign}/contacts/{contact}",
    tag = "contacts",
    params(("tenant" = String, Path, description = "Tenant id"),
           ("campaign" = String, Path, description = "Campaign id"),
           ("contact" = String, Path, description = "The number, with or without `+` (URL-encoded: %2B)")),
    responses(
        (status = 204, description = "Removed"),
        (status = 401, description = "No valid API key", body = ErrorBody),
        (status = 404, description = "Unknown tenant, campaign or contact", body = ErrorBody),
        (status = 409, description = "A call to it is being placed or is live", body = ErrorBody),
        (status = 503, description = "Store unavailable", body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn delete(
    State(state): State<ApiState>,
    auth: TenantAuth,
    Path((_, raw, contact)): Path<(String, String, String)>,
) -> Result<StatusCode, ApiError> {
    let (id, _) = load(&state, auth.id(), &raw).await?;
    let contact = contact_id(&contact).ok_or(ApiError::NotFound)?;
    match state.queue.delete_contact(auth.id(), &id, &contact).await? {
        Some(true) => Ok(StatusCode::NO_CONTENT),
        Some(false) => Err(ApiError::Conflict(
            "a call to this contact is being placed or is live".into(),
        )),
        None => Err(ApiError::NotFound),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Defaults, each parameter checked by name, and numbers with or without `+`.
    #[test]
    fn queries_and_contact_ids_are_checked() {
        assert_eq!(parse_query(None).unwrap(), (None, 0, DEFAULT_LIMIT));
        assert_eq!(
            parse_query(Some("state=done&cursor=42&limit=5")).unwrap(),
            (Some(ContactState::Done), 42, 5)
        );
        for (q, field) in [
            ("state=gone", "state"),
            ("cursor=-1", "cursor"),
            ("limit=0", "limit"),
            ("limit=1001", "limit"),
        ] {
            match parse_query(Some(q)) {
                Err(ApiError::InvalidQuery { field: f, .. }) => assert_eq!(f, field),
                other => panic!("{q}: {other:?}"),
            }
        }
        assert_eq!(contact_id("+14155550100").unwrap().as_str(), "14155550100");
        assert_eq!(contact_id("14155550100").unwrap().as_str(), "14155550100");
        assert!(contact_id("abc").is_none() && contact_id("+").is_none());
    }
}
