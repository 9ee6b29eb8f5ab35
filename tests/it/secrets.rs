//! No secret reaches a log line or a metric: a whole call (with a barge-in, a bad webhook
//! and a refused socket on the side) through every service logging at debug level, with
//! recognisable secrets everywhere a secret goes (Twilio auth token, call-credential
//! secret, vendor keys, every NATS user's password, Redis' password, the tenants' signing
//! secret, which the agent and the webhooks worker sign with); then every
//! process's output and every service's `/metrics` is searched for each of them.

use sb_schemas::roles::Role;
use sb_stack::stack::{AUTH_TOKEN, CALL_CREDENTIAL_SECRET, VENDOR_KEY};

use crate::e2e::{CONVERSATION, call, stack};

#[tokio::test]
async fn no_secret_in_any_log_line_or_metric() {
    let (stack, dir) = stack(|c| {
        // Debug level everywhere: the libraries' own logging (NATS CONNECT, Redis AUTH,
        // HTTP headers) is searched too.
        c.service_env.push(("RUST_LOG".into(), "debug".into()));
    })
    .await;
    let report = call(&stack, CONVERSATION).await;
    assert!(
        report
            .turns
            .iter()
            .skip(1)
            .any(|t| t.voice_to_voice_ms.is_some()),
        "{report}"
    );

    // A webhook with a forged signature and a socket without a credential: error paths log.
    let http = reqwest::Client::new();
    let forged = http
        .post(format!("{}/twilio/voice", stack.ingress_url()))
        .header("X-Twilio-Signature", "forged")
        .form(&[
            ("CallSid", "CA00000000000000000000000000000001"),
            ("To", "+15005550006"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), 403);

    let mut secrets: Vec<(String, String)> = vec![
        ("twilio auth token".into(), AUTH_TOKEN.into()),
        (
            "call credential secret".into(),
            CALL_CREDENTIAL_SECRET.into(),
        ),
        ("vendor key".into(), VENDOR_KEY.into()),
        ("redis password".into(), stack.redis.password().to_owned()),
        (
            "tenant signing secret".into(),
            sb_stack::service_env::TENANT_SECRET.into(),
        ),
    ];
    for role in Role::ALL {
        let password = stack.nats.nodes[0].credentials.password(role).unwrap();
        secrets.push((
            format!("nats password of {}", role.user()),
            password.expose().to_owned(),
        ));
    }

    let mut outputs = Vec::new();
    for (name, addr) in stack.service_addrs() {
        let metrics = http
            .get(format!("http://{addr}/metrics"))
            .send()
            .await
            .unwrap();
        outputs.push((format!("{name} /metrics"), metrics.text().await.unwrap()));
    }
    stack.stop().await;
    for service in ["ingress", "stt", "agent", "tts"] {
        let log = std::fs::read_to_string(dir.path().join(format!("{service}.log"))).unwrap();
        assert!(log.lines().count() > 20, "{service} logged at debug level");
        outputs.push((format!("{service}.log"), log));
    }
    // The webhooks worker signs every delivery with the tenant's secret.
    let log = std::fs::read_to_string(dir.path().join("webhooks.log")).unwrap();
    assert!(
        log.contains("webhook delivered"),
        "the worker signed and sent"
    );
    outputs.push(("webhooks.log".into(), log));
    for (what, text) in &outputs {
        for (secret, value) in &secrets {
            assert!(!text.contains(value.as_str()), "{secret} found in {what}");
        }
    }
}
