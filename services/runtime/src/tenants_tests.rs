//! Tests of [`super`]: parsing, validation (every error names the tenant and the field),
//! the tools and webhooks tables, the shipped file.

use super::testing::TenantToml;
use super::*;

/// Two tenants on one tier: acme with real texts and the default barge-in, globex with
/// two numbers and speech barge-in.
fn good() -> TenantToml {
    TenantToml::new()
        .tier("standard", 4, 60)
        .tenant("acme", "+15005550006", "standard")
        .set("system_prompt", "You are a concise phone agent.")
        .set("greeting", "Thanks for calling Acme.")
        .set("fallback_phrase", "Sorry, could you say that again?")
        .set("voice", "en-US-JennyNeural")
        .set("llm_model", "llama-3.1-8b-instant")
        .tenant("globex", "+442071838750", "standard")
        .set("numbers", vec!["+442071838750", "+15005550007"])
        .barge_in_speech()
}

#[test]
fn parses_and_looks_up() {
    let t = good().parse().unwrap();
    assert_eq!(t.len(), 2);
    let acme = t.by_number("+15005550006").unwrap();
    assert_eq!(acme.id.as_str(), "acme");
    assert_eq!(acme.greeting, "Thanks for calling Acme.");
    assert_eq!(acme.tier.llm_concurrency, 4);
    assert_eq!(acme.tier.rate_window_secs, 60);
    assert_eq!(acme.barge_in.mode, BargeInMode::Words);
    assert!(acme.barge_in.backchannel.iter().any(|w| w == "uh-huh"));
    let globex = t.by_id(&TenantId::parse("globex").unwrap()).unwrap();
    assert_eq!(globex.barge_in.mode, BargeInMode::Speech);
    assert_eq!(t.by_number("+15005550007").unwrap().id, globex.id);
    assert!(t.by_number("+19999999999").is_none());
}

/// Each broken file is refused with a message naming the tenant and the field.
#[test]
fn errors_name_tenant_and_field() {
    let cases = [
        (
            good().tenant_set("acme", "id", "ACME"),
            "tenant \"ACME\": field `id`",
        ),
        (
            good().tenant_set("acme", "numbers", vec!["5550006"]),
            "tenant \"acme\": field `numbers[0]`",
        ),
        (
            good().tenant_set("acme", "tier", "gold"),
            "tenant \"acme\": field `tier`: unknown tier \"gold\"",
        ),
        (
            good().tenant_set("globex", "greeting", " "),
            "tenant \"globex\": field `greeting`",
        ),
        (
            good().tenant_set("globex", "numbers", vec!["+442071838750", "+15005550006"]),
            "already belongs to tenant \"acme\"",
        ),
        (
            good().tenant_set("globex", "id", "acme"),
            "tenant \"acme\": field `id`: defined twice",
        ),
        (
            good().tenant_set("globex", "voise", "typo"),
            "unknown field `voise`",
        ),
        (
            good().tier_set("standard", "webhook_rate_limit", 0),
            "tier \"standard\"",
        ),
        (
            good().tool("book", "http://example.com/book"),
            "tenant \"globex\": field `tools[0].url`: \"http://example.com/book\" must be https://",
        ),
        (
            good().tool("end_call", "https://globex.example/t"),
            "field `tools[0].name`: \"end_call\" is already a tool",
        ),
        (
            good()
                .tool("book", "https://globex.example/t")
                .tool("book", "https://globex.example/u"),
            "field `tools[1].name`: \"book\" is already a tool",
        ),
        (
            good()
                .tool("book", "https://globex.example/t")
                .tool_set("timeout_ms", 50),
            "field `tools[0].timeout_ms`",
        ),
        (
            good()
                .tool("book", "https://globex.example/t")
                .tool_set("parameters", toml::Table::new()),
            "field `tools[0].parameters`: must be a JSON Schema",
        ),
        (
            good()
                .tool("book", "https://globex.example/t")
                .tool_set("filler", " "),
            "field `tools[0].filler`",
        ),
        (
            good()
                .tool("book", "https://globex.example/t")
                .set("signing_secret_env", "lower"),
            "field `signing_secret_env`",
        ),
        (
            good()
                .tool("book", "https://globex.example/t")
                .tool_set("urll", "typo"),
            "unknown field `urll`",
        ),
        (
            good().set("webhooks", webhooks_table("https://h.example/w", None)),
            "tenant \"globex\": field `signing_secret_env`: required with tools or webhooks",
        ),
        (
            good()
                .set("signing_secret_env", "S")
                .set("webhooks", webhooks_table("http://h.example/w", None)),
            "field `webhooks.url`",
        ),
        (
            good().set("signing_secret_env", "S").set(
                "webhooks",
                webhooks_table("https://h.example/w", Some("call.answered")),
            ),
            "field `webhooks.events[0]`: \"call.answered\" is not one of",
        ),
        (
            good().set("tts_provider", "polly"),
            "tenant \"globex\": field `tts_provider`: \"polly\" is not one of",
        ),
        (
            good().set("builtin_tools", vec!["hang_up"]),
            "field `builtin_tools[0]`: \"hang_up\" is not a built-in tool",
        ),
    ];
    for (file, expected) in cases {
        let err = file.parse().unwrap_err();
        assert!(
            err.contains(expected),
            "expected {expected:?} in {err:?}\n{file}"
        );
    }
}

/// A tool's fields arrive as written, with the defaults filled in; `builtin_tools`
/// turns Switchboard's own tools off one by one.
#[test]
fn tools_parse_with_defaults() {
    let t = good()
        .tool("book_table", "https://acme.example/book")
        .tool_set("filler", "One moment.")
        .tool("email_offers", "http://127.0.0.1:9/email")
        .tool_set("wait", false)
        .tool_set("timeout_ms", 900)
        .set("builtin_tools", vec!["end_call"])
        .parse()
        .unwrap();
    let globex = t.by_number("+15005550007").unwrap();
    assert_eq!(globex.tools.len(), 2);
    let book = &globex.tools[0];
    assert_eq!(book.name, "book_table");
    assert_eq!(book.url.as_str(), "https://acme.example/book");
    assert_eq!(book.timeout_ms, DEFAULT_TOOL_TIMEOUT_MS);
    assert_eq!(book.filler.as_deref(), Some("One moment."));
    assert!(book.wait);
    assert_eq!(book.parameters["properties"]["day"]["type"], "string");
    assert_eq!(book.parameters["required"][0], "day");
    let email = &globex.tools[1];
    assert!(!email.wait);
    assert_eq!(email.timeout_ms, 900);
    assert_eq!(
        globex.signing_secret_env.as_deref(),
        Some("SB_TENANT_SECRET_GLOBEX")
    );
    assert!(globex.builtin_tools.end_call && !globex.builtin_tools.transfer_call);
    let acme = t.by_number("+15005550006").unwrap();
    assert!(acme.tools.is_empty());
    assert_eq!(acme.builtin_tools, BuiltinTools::default());
}

fn webhooks_table(url: &str, event: Option<&str>) -> toml::Table {
    let mut table = toml::Table::new();
    table.insert("url".into(), url.into());
    if let Some(event) = event {
        table.insert("events".into(), vec![event].into());
    }
    table
}

/// Webhooks go to every event unless listed; `wants` answers per event.
#[test]
fn webhooks_parse() {
    let t = good()
        .set("signing_secret_env", "SB_TENANT_SECRET_GLOBEX")
        .set(
            "webhooks",
            webhooks_table("https://hooks.globex.example/sb", Some("call.ended")),
        )
        .parse()
        .unwrap();
    let hooks = t
        .by_number("+15005550007")
        .unwrap()
        .webhooks
        .clone()
        .unwrap();
    assert!(hooks.wants("call.ended") && !hooks.wants("call.started"));
    let t = good()
        .set("signing_secret_env", "S")
        .set("webhooks", webhooks_table("https://h.example/w", None))
        .parse()
        .unwrap();
    let hooks = t
        .by_number("+15005550007")
        .unwrap()
        .webhooks
        .clone()
        .unwrap();
    assert!(WEBHOOK_EVENTS.iter().all(|e| hooks.wants(e)));
    assert!(t.by_number("+15005550006").unwrap().webhooks.is_none());
}

#[test]
fn the_shipped_file_is_valid() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/base/tenants.toml");
    let tenants = Tenants::load(&path).unwrap();
    assert!(!tenants.is_empty());
}
