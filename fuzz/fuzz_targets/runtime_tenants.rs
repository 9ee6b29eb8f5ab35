//! Fuzz target: the tenants file (`sb_runtime::Tenants::parse`).
//!
//! Consumes arbitrary bytes as `tenants.toml`; checks that parsing never panics and that a
//! file that parses gives tenants found by their id and by each of their numbers, with the
//! limits the parser promises. State: none.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sb_runtime::Tenants;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(tenants) = Tenants::parse(text) else {
        return;
    };
    for tenant in tenants.iter() {
        let by_id = tenants
            .by_id(&tenant.id)
            .expect("a tenant is found by its id");
        assert_eq!(by_id.id, tenant.id);
        assert!(!tenant.numbers.is_empty());
        for number in &tenant.numbers {
            let owner = tenants
                .by_number(number)
                .expect("a number finds its tenant");
            assert_eq!(owner.id, tenant.id);
        }
        assert!(tenant.tier.llm_concurrency > 0 && tenant.tier.webhook_rate_limit > 0);
        assert!((1..=600).contains(&tenant.media_idle_secs));
    }
});
