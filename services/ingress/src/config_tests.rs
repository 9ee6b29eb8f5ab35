//! Tests of `config.rs`: every bad setting is named by its variable; secrets stay out of
//! `Debug`. Consumes nothing but constants; no state.

use super::*;

/// Good settings validate; every bad one names its variable.
#[test]
fn validation_names_the_variable() {
    let good = IngressConfig::for_tests("tok", "https://agent.example.com/");
    let settings = Settings::from_config(&good).unwrap();
    assert_eq!(settings.public_base, "https://agent.example.com");
    assert_eq!(settings.stream_url, "wss://agent.example.com/twilio/media");
    assert_eq!(
        settings.public_url_for("/twilio/voice?x=1"),
        "https://agent.example.com/twilio/voice?x=1"
    );

    type Breaker = Box<dyn Fn(&mut IngressConfig)>;
    let cases: Vec<(&str, Breaker)> = vec![
        (
            "SB_TWILIO_AUTH_TOKEN",
            Box::new(|c| c.twilio_auth_token = None),
        ),
        (
            "SB_TWILIO_AUTH_TOKEN",
            Box::new(|c| c.twilio_auth_token = Some(Secret::new(""))),
        ),
        (
            "SB_CALL_CREDENTIAL_SECRET",
            Box::new(|c| c.call_credential_secret = None),
        ),
        (
            "SB_CALL_CREDENTIAL_SECRET",
            Box::new(|c| c.call_credential_secret = Some(Secret::new("short"))),
        ),
        (
            "SB_CALL_CREDENTIAL_TTL_SECS",
            Box::new(|c| c.call_credential_ttl_secs = 0),
        ),
        (
            "SB_CALL_CREDENTIAL_TTL_SECS",
            Box::new(|c| c.call_credential_ttl_secs = 301),
        ),
        ("SB_PUBLIC_URL", Box::new(|c| c.public_url = None)),
        (
            "SB_PUBLIC_URL",
            Box::new(|c| c.public_url = Some("http://a.example".into())),
        ),
        (
            "SB_PUBLIC_URL",
            Box::new(|c| c.public_url = Some("https://a.example/?q=1".into())),
        ),
        (
            "SB_PUBLIC_URL",
            Box::new(|c| c.public_url = Some("https://".into())),
        ),
        ("SB_AUDIO_BATCH_MS", Box::new(|c| c.audio_batch_ms = 30)),
        ("SB_AUDIO_BATCH_MS", Box::new(|c| c.audio_batch_ms = 0)),
        ("SB_AUDIO_ACK_EVERY", Box::new(|c| c.audio_ack_every = 0)),
        ("SB_MEDIA_PATH", Box::new(|c| c.media_path = "media".into())),
        (
            "SB_FAULT_DROP_BOT_CHUNKS",
            Box::new(|c| c.fault_drop_bot_chunks = vec!["1:2".into()]),
        ),
        (
            "SB_WS_MAX_MESSAGE_BYTES",
            Box::new(|c| c.ws_max_message_bytes = 10),
        ),
    ];
    for (var, break_it) in cases {
        let mut config = good.clone();
        break_it(&mut config);
        let error = Settings::from_config(&config).unwrap_err();
        assert_eq!(error.var, var, "{error}");
    }
}

/// Neither the token nor the call credential secret reaches `Debug` output.
#[test]
fn secrets_are_not_printed() {
    let mut config = IngressConfig::for_tests("hunter2", "https://a.example");
    config.call_credential_secret = Some(Secret::new("swordfish-swordfish-swordfish-swordfish"));
    let settings = Settings::from_config(&config).unwrap();
    for shown in [format!("{config:?}"), format!("{settings:?}")] {
        assert!(
            !shown.contains("hunter2") && !shown.contains("swordfish"),
            "{shown}"
        );
    }
}

/// Fault injection names chunks as `turn:sentence:chunk`; none by default.
#[test]
fn dropped_chunks_parse() {
    let mut config = IngressConfig::for_tests("token", "https://a.example");
    assert!(
        Settings::from_config(&config)
            .unwrap()
            .drop_bot_chunks
            .is_empty()
    );
    config.fault_drop_bot_chunks = vec!["1:0:2".into(), " 3:1:0".into()];
    let settings = Settings::from_config(&config).unwrap();
    assert_eq!(settings.drop_bot_chunks, [(1, 0, 2), (3, 1, 0)]);
}
