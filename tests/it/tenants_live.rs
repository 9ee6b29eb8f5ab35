//! Live tenant configuration against a real NATS and Redis (ring 3, issue 16): services
//! logged in as their own users follow the `TENANTS` bucket; a call keeps the revision its
//! session names; a process that never saw that revision reads it back from the bucket;
//! a revision that does not validate is never served.

use std::time::Duration;

use sb_runtime::Runtime;
use sb_runtime::redis::session::Parties;
use sb_schemas::subject::{TENANTS_BUCKET, TENANTS_KEY};
use sb_schemas::{Body, Envelope, Played};
use sb_tests::{TestEnv, eventually, workspace_root};

use crate::support::{sid, tenant};

/// The shipped tenants file with acme's greeting replaced.
fn file_with_greeting(greeting: &str) -> String {
    let text = std::fs::read_to_string(workspace_root().join("deploy/base/tenants.toml")).unwrap();
    let mut doc: toml::Table = toml::from_str(&text).unwrap();
    let tenants = doc["tenant"].as_array_mut().unwrap();
    let acme = tenants
        .iter_mut()
        .find(|t| t["id"].as_str() == Some("acme"))
        .unwrap();
    acme.as_table_mut()
        .unwrap()
        .insert("greeting".into(), greeting.into());
    toml::to_string(&doc).unwrap()
}

async fn put(env: &TestEnv, text: String) -> u64 {
    let kv = env.js.get_key_value(TENANTS_BUCKET).await.unwrap();
    kv.put(TENANTS_KEY, text.into_bytes().into()).await.unwrap()
}

async fn serving(runtime: &Runtime, revision: u64) {
    let tenants = runtime.tenants.clone();
    eventually("the revision applied", Duration::from_secs(10), || {
        let seen = tenants.revision();
        async move { (seen == revision).then_some(()) }
    })
    .await
    .unwrap();
}

fn event_of(n: u128) -> Envelope {
    Envelope::new(
        tenant(),
        sid(n),
        1,
        Body::Played(Played {
            sentence: 0,
            mark: "1:0".into(),
        }),
    )
}

async fn greeting(runtime: &Runtime, n: u128) -> String {
    runtime
        .tenants
        .for_call(&event_of(n))
        .await
        .unwrap()
        .greeting
        .clone()
}

#[tokio::test]
async fn calls_keep_their_revision_and_new_calls_get_the_latest() {
    let env = TestEnv::start().await.unwrap();
    let agent = env.runtime("agent").await.unwrap();
    assert_eq!(agent.tenants.revision(), 0, "an empty bucket: the file");
    let redis = env.redis().await.unwrap();

    let one = put(&env, file_with_greeting("One.")).await;
    serving(&agent, one).await;
    redis
        .session_start(&sid(1), &tenant(), &Parties::default(), one)
        .await
        .unwrap();
    let two = put(&env, file_with_greeting("Two.")).await;
    serving(&agent, two).await;
    redis
        .session_start(&sid(2), &tenant(), &Parties::default(), two)
        .await
        .unwrap();

    assert_eq!(
        greeting(&agent, 1).await,
        "One.",
        "the live call keeps its revision"
    );
    assert_eq!(greeting(&agent, 2).await, "Two.");
    assert_eq!(
        greeting(&agent, 3).await,
        "Two.",
        "no session: the current revision"
    );
    assert_eq!(agent.tenants.by_id(&tenant()).unwrap().greeting, "Two.");

    // A process started after both revisions reads call 1's back from the bucket.
    let tts = env.runtime("tts").await.unwrap();
    assert_eq!(tts.tenants.revision(), two);
    assert_eq!(greeting(&tts, 1).await, "One.");

    // A revision that does not validate is skipped; the next valid one is served.
    let broken = put(&env, file_with_greeting("")).await;
    let three = put(&env, file_with_greeting("Three.")).await;
    serving(&agent, three).await;
    assert_eq!(greeting(&agent, 3).await, "Three.");
    assert_eq!(
        agent
            .tenants
            .at(broken)
            .await
            .by_id(&tenant())
            .unwrap()
            .greeting,
        "Three.",
        "an invalid revision is never served, even to a call that names it"
    );
}
