//! Operator authentication: `Authorization: Bearer <token>` where the token is
//! `SB_OPERATOR_TOKEN`, compared in constant time.
//!
//! Consumes request headers; produces [`OperatorAuth`] or a 401. The operator sees and
//! changes every tenant; tenant keys never reach the admin API. State: none (the token is
//! in [`crate::ConsoleState`], never logged).

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use sb_runtime::api_error::{ApiError, bearer};
use subtle::ConstantTimeEq as _;

use crate::ConsoleState;

/// A request made with the operator token.
#[derive(Debug, Clone, Copy)]
pub struct OperatorAuth;

/// Whether `presented` is the operator token (an empty token admits no one).
pub fn is_operator(token: &str, presented: Option<&str>) -> bool {
    let Some(presented) = presented else {
        return false;
    };
    !token.is_empty() && bool::from(token.as_bytes().ct_eq(presented.as_bytes()))
}

impl FromRequestParts<ConsoleState> for OperatorAuth {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &ConsoleState,
    ) -> Result<Self, Self::Rejection> {
        if is_operator(state.operator_token.expose(), bearer(parts)) {
            Ok(Self)
        } else {
            Err(ApiError::Unauthorized)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_operator_token_admits() {
        assert!(is_operator("s3cret", Some("s3cret")));
        assert!(!is_operator("s3cret", Some("s3cre")));
        assert!(!is_operator("s3cret", Some("s3cret ")));
        assert!(!is_operator("s3cret", None));
        assert!(!is_operator("", Some("")));
    }
}
