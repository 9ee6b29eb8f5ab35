//! Identifiers for tests: call sids by number and tenant ids by name, so no test spells
//! their formats out again.
//!
//! Built only with the cargo feature `testing` (and for this crate's own tests); the test
//! suites of the other crates turn it on. Consumes numbers and names; produces validated
//! ids. State: none.

use crate::ids::{CallSid, TenantId};

/// The tenant tests call for unless they name another: `acme`, as in `deploy/base/tenants.toml`.
pub fn tenant() -> TenantId {
    tenant_id("acme")
}

/// The tenant `id`; a malformed one is a mistake in the test and panics.
pub fn tenant_id(id: &str) -> TenantId {
    TenantId::parse(id).expect("a test's tenant id is well-formed")
}

/// The call sid `CA` followed by `n` as 32 hex digits.
pub fn sid(n: u128) -> CallSid {
    CallSid::parse(&format!("CA{n:032x}")).expect("CA + 32 hex digits is a call sid")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_valid_ids() {
        assert_eq!(sid(0x2a).as_str(), "CA0000000000000000000000000000002a");
        assert_eq!(sid(u128::MAX).as_str().len(), 34);
        assert_eq!(tenant().as_str(), "acme");
        assert_eq!(tenant_id("globex").as_str(), "globex");
    }
}
