//! Tenants' API keys (ARCHITECTURE §2a): who a presented `Authorization: Bearer` key
//! belongs to. The campaigns API and the console's call inspector both ask here.
//!
//! Consumes a presented key and the tenants' `api_key_sha256` lists; produces the key's
//! hex SHA-256 ([`key_hash`], as the tenants file stores them) and the tenant holding it.
//! The key is hashed at once and never stored or logged; every stored hash of a tenant is
//! compared in constant time. No state.

use std::sync::Arc;

use sha2::{Digest as _, Sha256};
use subtle::ConstantTimeEq as _;

use super::{Tenant, Tenants};

/// The hex SHA-256 of a presented key, as the tenants file stores them.
pub fn key_hash(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}

/// Whether `hash` is one of `tenant`'s keys. Every stored hash is compared, each in
/// constant time, so the time taken says nothing about how much of a hash matched.
pub fn holds(tenant: &Tenant, hash: &str) -> bool {
    tenant
        .api_key_sha256
        .iter()
        .fold(subtle::Choice::from(0), |acc, stored| {
            acc | stored.as_bytes().ct_eq(hash.as_bytes())
        })
        .into()
}

/// The tenant whose API key `key` is (`None`: an empty key, or nobody's).
pub fn tenant_of_key(tenants: &Tenants, key: &str) -> Option<Arc<Tenant>> {
    if key.is_empty() {
        return None;
    }
    let hash = key_hash(key);
    tenants.iter().find(|t| holds(t, &hash)).cloned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tenants::testing::TenantToml;

    /// A key opens the tenant that lists its hash, old and new keys alike; an empty key,
    /// an unknown key and a tenant without keys open nothing.
    #[test]
    fn a_key_belongs_to_the_tenant_listing_its_hash() {
        let tenants = TenantToml::new()
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
            .unwrap();
        let owner = |key: &str| tenant_of_key(&tenants, key).map(|t| t.id.as_str().to_owned());
        assert_eq!(owner("acme-key").as_deref(), Some("acme"));
        assert_eq!(owner("acme-old").as_deref(), Some("acme"));
        assert_eq!(owner("globex-key").as_deref(), Some("globex"));
        assert_eq!(owner("wrong"), None);
        assert_eq!(owner(""), None);
        assert_eq!(
            key_hash("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
