//! Who is calling the campaigns API: `Authorization: Bearer <key>`, checked against the
//! tenant of the path.
//!
//! Consumes the request's `Authorization` header and `{tenant}` path segment, and the
//! tenants' `api_key_sha256` lists; produces the tenant ([`TenantAuth`]) or a refusal:
//! 401 (with `WWW-Authenticate: Bearer`) when the key is no tenant's, 404 when it is
//! another tenant's or the tenant is unknown (the same answer as an unknown campaign, so a
//! key never learns whether another tenant exists). The key is hashed at once and never
//! stored or logged. No state.

use std::sync::Arc;

use axum::extract::{FromRequestParts, RawPathParams};
use axum::http::request::Parts;
use sb_runtime::tenants::keys::holds;
use sb_runtime::{Tenant, Tenants};
use sb_schemas::TenantId;

use super::ApiState;
use super::error::{ApiError, bearer};

/// The hashing of keys is the runtime's ([`sb_runtime::tenants::keys`]), shared with the
/// console.
pub use sb_runtime::tenants::keys::key_hash;

/// The tenant a request is authorised for (the path's `{tenant}`).
#[derive(Debug, Clone)]
pub struct TenantAuth {
    pub tenant: Arc<Tenant>,
}

impl TenantAuth {
    pub fn id(&self) -> &TenantId {
        &self.tenant.id
    }
}

/// The decision for a presented key (`None`: no usable header) on `tenant`'s path.
pub fn authorise(
    tenants: &Tenants,
    tenant: &str,
    key: Option<&str>,
) -> Result<Arc<Tenant>, ApiError> {
    let Some(key) = key.filter(|k| !k.is_empty()) else {
        return Err(ApiError::Unauthorized);
    };
    let hash = key_hash(key);
    let target = TenantId::parse(tenant)
        .ok()
        .and_then(|id| tenants.by_id(&id).cloned());
    if let Some(target) = target
        && holds(&target, &hash)
    {
        return Ok(target);
    }
    // Not this tenant's key: a key of some tenant gets the 404 an unknown campaign gets;
    // anything else is unauthenticated.
    if tenants.iter().any(|t| holds(t, &hash)) {
        Err(ApiError::NotFound)
    } else {
        Err(ApiError::Unauthorized)
    }
}

impl FromRequestParts<ApiState> for TenantAuth {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &ApiState,
    ) -> Result<Self, Self::Rejection> {
        let params = RawPathParams::from_request_parts(parts, state)
            .await
            .map_err(|_| ApiError::NotFound)?;
        let tenant = params
            .iter()
            .find(|(name, _)| *name == "tenant")
            .map(|(_, value)| value.to_owned())
            .ok_or(ApiError::NotFound)?;
        // The tenants as they are now: a key added by a live change works at once.
        let tenant = authorise(&state.tenants.tenants(), &tenant, bearer(parts))?;
        Ok(Self { tenant })
    }
}

#[cfg(test)]
mod tests {
    use sb_runtime::tenants::testing::TenantToml;

    use super::*;

    fn tenants() -> Tenants {
        TenantToml::new()
            .tier("standard", 4, 60)
            .tenant("acme", "+15005550006", "standard")
            .set(
                "api_key_sha256",
                vec![key_hash("acme-old"), key_hash("acme-key")],
            )
            .tenant("globex", "+15005550007", "standard")
            .set("api_key_sha256", vec![key_hash("globex-key")])
            .tenant("initech", "+15005550008", "standard")
            .parse()
            .unwrap()
    }

    /// Own key: the tenant; another tenant's key, on a known or unknown tenant: 404; no
    /// key or a key of nobody: 401; a tenant without keys admits nothing.
    #[test]
    fn keys_open_only_their_own_tenant() {
        let t = tenants();
        let who = |tenant: &str, key: Option<&str>| {
            authorise(&t, tenant, key).map(|t| t.id.as_str().to_owned())
        };
        assert_eq!(who("acme", Some("acme-key")), Ok("acme".into()));
        assert_eq!(who("acme", Some("acme-old")), Ok("acme".into()));
        assert_eq!(who("globex", Some("globex-key")), Ok("globex".into()));
        assert_eq!(who("globex", Some("acme-key")), Err(ApiError::NotFound));
        assert_eq!(who("nobody", Some("acme-key")), Err(ApiError::NotFound));
        assert_eq!(who("NOT A ID", Some("acme-key")), Err(ApiError::NotFound));
        assert_eq!(who("initech", Some("acme-key")), Err(ApiError::NotFound));
        assert_eq!(who("acme", Some("wrong")), Err(ApiError::Unauthorized));
        assert_eq!(who("nobody", Some("wrong")), Err(ApiError::Unauthorized));
        assert_eq!(who("acme", Some("")), Err(ApiError::Unauthorized));
        assert_eq!(who("acme", None), Err(ApiError::Unauthorized));
    }
}
