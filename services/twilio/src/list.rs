//! Listing calls: `GET /2010-04-01/Accounts/{AccountSid}/Calls.json?To=&From=&Status=&PageSize=`
//! and the page JSON the 2010 API answers (`calls` plus `page`, `page_size`, `uri`,
//! `first_page_uri`, `next_page_uri`, `previous_page_uri`, `start`, `end`), newest first.
//!
//! Consumes a query string or typed filters; produces typed filters, the query string and
//! the page JSON. Stateless.

use serde::{Deserialize, Serialize};

use crate::form::{encode_form, first, parse_form};
use crate::resource::CallResource;
use crate::rest::{ApiError, CallStatus, calls_path};

/// Twilio's default page size.
pub const DEFAULT_PAGE_SIZE: u32 = 50;
/// The largest page Twilio serves.
pub const MAX_PAGE_SIZE: u32 = 1000;

/// The filters of a list request (the ones Switchboard uses; Twilio has more).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListCalls {
    pub to: Option<String>,
    pub from: Option<String>,
    pub status: Option<CallStatus>,
    /// 1–1000; Twilio's default 50 when absent.
    pub page_size: Option<u32>,
}

impl ListCalls {
    /// The query string (without `?`), empty when nothing is set.
    pub fn to_query(&self) -> String {
        let mut pairs: Vec<(&str, String)> = Vec::new();
        if let Some(to) = &self.to {
            pairs.push(("To", to.clone()));
        }
        if let Some(from) = &self.from {
            pairs.push(("From", from.clone()));
        }
        if let Some(status) = self.status {
            pairs.push(("Status", status.as_str().to_owned()));
        }
        if let Some(size) = self.page_size {
            pairs.push(("PageSize", size.to_string()));
        }
        encode_form(&pairs)
    }

    /// Reads a query string (with or without `?`). An unknown `Status` or a `PageSize`
    /// outside 1–1000 is 400 / 20001 (Twilio's generic invalid-parameter code; the exact
    /// message is not documented, so the wording here is ours). Unknown keys are ignored.
    pub fn from_query(query: &str) -> Result<Self, ApiError> {
        let params = parse_form(query.trim_start_matches('?').as_bytes())
            .map_err(|e| ApiError::invalid(20001, e.to_string()))?;
        let status = first(&params, "Status")
            .map(|s| {
                CallStatus::parse(s)
                    .ok_or_else(|| ApiError::invalid(20001, format!("Invalid Status: {s}")))
            })
            .transpose()?;
        let page_size = first(&params, "PageSize")
            .map(|s| {
                s.parse::<u32>()
                    .ok()
                    .filter(|n| (1..=MAX_PAGE_SIZE).contains(n))
                    .ok_or_else(|| ApiError::invalid(20001, format!("Invalid PageSize: {s}")))
            })
            .transpose()?;
        Ok(Self {
            to: first(&params, "To").map(str::to_owned),
            from: first(&params, "From").map(str::to_owned),
            status,
            page_size,
        })
    }

    /// Whether `call` passes the filters.
    pub fn matches(&self, call: &CallResource) -> bool {
        self.to.as_ref().is_none_or(|to| *to == call.to)
            && self.from.as_ref().is_none_or(|from| *from == call.from)
            && self.status.is_none_or(|status| status == call.status)
    }

    /// The page size to serve.
    pub fn effective_page_size(&self) -> u32 {
        self.page_size.unwrap_or(DEFAULT_PAGE_SIZE)
    }
}

/// One page of calls, as the 2010 API renders it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallPage {
    pub calls: Vec<CallResource>,
    /// Zero-based page index.
    pub page: u32,
    pub page_size: u32,
    /// This page's path and query.
    pub uri: String,
    pub first_page_uri: String,
    pub next_page_uri: Option<String>,
    pub previous_page_uri: Option<String>,
    /// Index of the first call on the page.
    pub start: u32,
    /// Index of the last call on the page (as Twilio: `start` on an empty page).
    pub end: u32,
}

impl CallPage {
    /// The first (and only) page of `calls` (already filtered and ordered), at most
    /// `list.effective_page_size()` of them; no next page is offered.
    pub fn first(account_sid: &str, list: &ListCalls, mut calls: Vec<CallResource>) -> Self {
        let page_size = list.effective_page_size();
        calls.truncate(page_size as usize);
        let mut query = list.clone();
        query.page_size = Some(page_size);
        let uri = format!("{}?{}&Page=0", calls_path(account_sid), query.to_query());
        let end = (calls.len() as u32).saturating_sub(1);
        Self {
            calls,
            page: 0,
            page_size,
            first_page_uri: uri.clone(),
            uri,
            next_page_uri: None,
            previous_page_uri: None,
            start: 0,
            end,
        }
    }

    /// The JSON body.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("plain struct always serialises")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The query round-trips; bad `Status` / `PageSize` are 400s; filters match exactly.
    #[test]
    fn list_query() {
        let list = ListCalls {
            to: Some("+14155551234".into()),
            from: None,
            status: Some(CallStatus::NoAnswer),
            page_size: Some(20),
        };
        let query = list.to_query();
        assert_eq!(query, "To=%2B14155551234&Status=no-answer&PageSize=20");
        assert_eq!(
            ListCalls::from_query(&format!("?{query}")),
            Ok(list.clone())
        );
        assert_eq!(ListCalls::from_query(""), Ok(ListCalls::default()));
        for bad in ["Status=gone", "PageSize=0", "PageSize=1001", "PageSize=x"] {
            assert_eq!(
                ListCalls::from_query(bad).map_err(|e| e.status),
                Err(400),
                "{bad}"
            );
        }
        let mut call =
            CallResource::queued_outbound("AC1", "CA1", "+14155551234", "+15005550006", "now");
        assert!(!list.matches(&call), "status differs");
        call.status = CallStatus::NoAnswer;
        assert!(list.matches(&call));
        assert!(ListCalls::default().matches(&call));
    }

    /// A page carries Twilio's paging fields, truncated to the page size, no next page.
    #[test]
    fn call_page() {
        let calls: Vec<_> = (0..3)
            .map(|i| CallResource::queued_outbound("AC1", &format!("CA{i}"), "+1", "+2", "now"))
            .collect();
        let list = ListCalls {
            page_size: Some(2),
            ..ListCalls::default()
        };
        let page = CallPage::first("AC1", &list, calls);
        assert_eq!((page.calls.len(), page.start, page.end), (2, 0, 1));
        assert_eq!(
            page.uri,
            "/2010-04-01/Accounts/AC1/Calls.json?PageSize=2&Page=0"
        );
        let json: serde_json::Value = serde_json::from_str(&page.to_json()).expect("json");
        for key in [
            "first_page_uri",
            "next_page_uri",
            "previous_page_uri",
            "page_size",
        ] {
            assert!(json.get(key).is_some(), "{key}");
        }
        assert!(json["next_page_uri"].is_null());
        let empty = CallPage::first("AC1", &ListCalls::default(), Vec::new());
        assert_eq!((empty.page_size, empty.end), (50, 0));
    }
}
