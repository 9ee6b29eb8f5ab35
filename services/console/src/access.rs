//! Who is looking at calls, and what they may see (ARCHITECTURE §9, the call inspector).
//!
//! Consumes a presented token (a bearer header on the JSON API, the login cookie on the
//! pages), the operator token and the tenants as they are now; produces a [`Viewer`]: the
//! operator, who sees every tenant's calls, or one tenant, who sees only its own. Another
//! tenant's call is answered exactly like an unknown one (404, never 403), and a tenant's
//! calls list is limited to its tenant whatever it asks for ([`Viewer::scope`]). No state;
//! tokens are never stored or logged here.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use sb_runtime::Tenants;
use sb_runtime::api_error::{ApiError, bearer};
use sb_runtime::tenants::keys::tenant_of_key;
use sb_schemas::TenantId;

use crate::ConsoleState;
use crate::auth::is_operator;

/// Who is looking.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Viewer {
    /// The operator token: every tenant.
    Operator,
    /// A tenant's API key: that tenant's calls only.
    Tenant(TenantId),
}

/// Which calls a list may show.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// Every tenant's, or the one tenant named.
    Tenant(Option<String>),
    /// None at all: a tenant asked for another tenant's calls.
    Nothing,
}

impl Viewer {
    /// The viewer `token` makes: the operator token first, then a tenant's API key (`None`:
    /// neither, or empty).
    pub fn of(token: &str, operator_token: &str, tenants: &Tenants) -> Option<Self> {
        if is_operator(operator_token, Some(token)) {
            return Some(Self::Operator);
        }
        tenant_of_key(tenants, token).map(|t| Self::Tenant(t.id.clone()))
    }

    /// Whether the viewer may see a call of `tenant`.
    pub fn sees(&self, tenant: &TenantId) -> bool {
        match self {
            Self::Operator => true,
            Self::Tenant(own) => own == tenant,
        }
    }

    /// The tenant filter of a calls list when `asked` for one: the operator's choice; a
    /// tenant's own tenant, and nothing when it names another.
    pub fn scope(&self, asked: Option<&str>) -> Scope {
        match (self, asked) {
            (Self::Operator, asked) => Scope::Tenant(asked.map(str::to_owned)),
            (Self::Tenant(own), Some(asked)) if asked != own.as_str() => Scope::Nothing,
            (Self::Tenant(own), _) => Scope::Tenant(Some(own.as_str().to_owned())),
        }
    }

    /// The tenant a viewer is limited to (`None`: the operator).
    pub fn tenant(&self) -> Option<&TenantId> {
        match self {
            Self::Operator => None,
            Self::Tenant(id) => Some(id),
        }
    }

    /// For the pages' header: `operator` or `tenant acme`.
    pub fn label(&self) -> String {
        match self {
            Self::Operator => "operator".into(),
            Self::Tenant(id) => format!("tenant {id}"),
        }
    }
}

impl ConsoleState {
    /// The viewer `token` makes against the tenants as they are now (a key added by a
    /// live change works at once).
    pub fn viewer(&self, token: &str) -> Option<Viewer> {
        Viewer::of(token, self.operator_token.expose(), &self.tenants.tenants())
    }
}

/// A JSON API request with a valid bearer token: the operator token or a tenant's key
/// (401 otherwise).
#[derive(Debug, Clone)]
pub struct ApiViewer(pub Viewer);

impl FromRequestParts<ConsoleState> for ApiViewer {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &ConsoleState,
    ) -> Result<Self, Self::Rejection> {
        bearer(parts)
            .and_then(|token| state.viewer(token))
            .map(Self)
            .ok_or(ApiError::Unauthorized)
    }
}

#[cfg(test)]
mod tests {
    use sb_runtime::tenants::keys::key_hash;
    use sb_runtime::tenants::testing::TenantToml;
    use sb_schemas::testing::tenant_id;

    use super::*;

    fn tenants() -> Tenants {
        TenantToml::new()
            .tier("standard", 4, 60)
            .tenant("acme", "+15005550006", "standard")
            .set("api_key_sha256", vec![key_hash("acme-key")])
            .tenant("globex", "+15005550007", "standard")
            .set("api_key_sha256", vec![key_hash("globex-key")])
            .parse()
            .unwrap()
    }

    /// The operator token sees everything; a tenant key its own tenant; anything else,
    /// and an empty operator token, nobody.
    #[test]
    fn tokens_make_viewers() {
        let t = tenants();
        assert_eq!(Viewer::of("op", "op", &t), Some(Viewer::Operator));
        assert_eq!(
            Viewer::of("acme-key", "op", &t),
            Some(Viewer::Tenant(tenant_id("acme")))
        );
        assert_eq!(Viewer::of("nobody", "op", &t), None);
        assert_eq!(Viewer::of("", "", &t), None);
        assert_eq!(Viewer::of("op ", "op", &t), None);
    }

    /// A tenant sees its own calls only; the operator all of them.
    #[test]
    fn a_tenant_sees_only_its_own_calls() {
        let acme = Viewer::Tenant(tenant_id("acme"));
        assert!(acme.sees(&tenant_id("acme")));
        assert!(!acme.sees(&tenant_id("globex")));
        assert!(Viewer::Operator.sees(&tenant_id("globex")));
    }

    /// A list is forced to the tenant's own calls; naming another tenant shows nothing;
    /// the operator filters as asked.
    #[test]
    fn lists_are_scoped_to_the_viewer() {
        let acme = Viewer::Tenant(tenant_id("acme"));
        let own = Scope::Tenant(Some("acme".into()));
        assert_eq!(acme.scope(None), own);
        assert_eq!(acme.scope(Some("acme")), own);
        assert_eq!(acme.scope(Some("globex")), Scope::Nothing);
        assert_eq!(Viewer::Operator.scope(None), Scope::Tenant(None));
        assert_eq!(
            Viewer::Operator.scope(Some("globex")),
            Scope::Tenant(Some("globex".into()))
        );
    }
}
