//! `just run`: Switchboard against the real vendors, on this machine.
//!
//! Consumes the `SB_*` environment (Twilio auth token and public URL, the call credential
//! secret, Deepgram key, LLM base URL and key, Azure key and region) and a running NATS + Redis (`just up`,
//! whose passwords `just run` reads from .run/secrets.env: each service logs in as its own NATS user);
//! checks every required setting first and names what is missing, then starts the
//! ingress, stt, agent and tts (and the dialer when its public URL and the Twilio account
//! are set) as processes and runs until Ctrl-C. State: the processes.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use anyhow::bail;
use sb_schemas::roles::Role;

use crate::{process::Process, stack::binaries_dir};

/// Settings without which a real call cannot work, and why.
const REQUIRED: [(&str, &str); 5] = [
    (
        "SB_TWILIO_AUTH_TOKEN",
        "validates Twilio's webhook signatures",
    ),
    (
        "SB_CALL_CREDENTIAL_SECRET",
        "signs each call's media-socket credential: 32+ random characters, e.g. `openssl rand -hex 32`",
    ),
    (
        "SB_PUBLIC_URL",
        "the https:// base URL Twilio calls (e.g. an ngrok or load-balancer URL)",
    ),
    ("SB_DEEPGRAM_API_KEY", "speech to text"),
    (
        "SB_LLM_API_KEY",
        "the LLM (Groq by default; SB_LLM_BASE_URL for another OpenAI-compatible server)",
    ),
];

/// Every setting that is missing or malformed, with what it is for.
pub fn missing_settings(get: impl Fn(&str) -> Option<String>) -> Vec<String> {
    let mut problems: Vec<String> = REQUIRED
        .iter()
        .filter(|(name, _)| get(name).is_none_or(|v| v.trim().is_empty()))
        .map(|(name, why)| format!("{name} is not set ({why})"))
        .collect();
    if let Some(url) = get("SB_PUBLIC_URL")
        && !url.starts_with("https://")
    {
        problems.push(format!(
            "SB_PUBLIC_URL must start with https:// (got {url:?})"
        ));
    }
    match (get("SB_AZURE_TTS_KEY"), get("SB_AZURE_TTS_REGION"), get("SB_AZURE_TTS_URL")) {
        (Some(_), None, None) => {
            problems.push("SB_AZURE_TTS_REGION is not set (needed with SB_AZURE_TTS_KEY)".into())
        }
        (None, Some(_), _) => problems.push(
            "SB_AZURE_TTS_KEY is not set but SB_AZURE_TTS_REGION is (unset both to speak with espeak-ng)".into(),
        ),
        _ => {}
    }
    problems
}

pub async fn run(run_dir: PathBuf, ingress_addr: SocketAddr) -> anyhow::Result<()> {
    let problems = missing_settings(|name| std::env::var(name).ok());
    if !problems.is_empty() {
        bail!(
            "cannot run against the real vendors:\n  {}",
            problems.join("\n  ")
        );
    }
    let bins = binaries_dir()?;
    std::fs::create_dir_all(&run_dir)?;
    let passed: Vec<(String, String)> = std::env::vars()
        .filter(|(k, _)| k.starts_with("SB_"))
        .collect();
    let mut processes = Vec::new();
    // Outbound campaigns need the dialer's own public URL (Twilio's callbacks) and the
    // account to place calls on; without them only inbound calls run.
    let outbound = ["SB_DIALER_PUBLIC_URL", "SB_TWILIO_ACCOUNT_SID"]
        .iter()
        .all(|v| std::env::var(v).is_ok_and(|v| !v.trim().is_empty()));
    // The console (the tenant admin API) needs an operator token.
    let console = std::env::var("SB_OPERATOR_TOKEN").is_ok_and(|v| !v.trim().is_empty());
    let mut services = vec!["ingress", "stt", "agent", "tts"];
    if outbound {
        services.push("dialer");
    }
    if console {
        services.push("console");
    }
    for (i, name) in services.into_iter().enumerate() {
        let addr = match name {
            "ingress" => ingress_addr,
            // Where `switchboard tenants get|put` looks by default.
            "console" => SocketAddr::from(([127, 0, 0, 1], 8095)),
            _ => SocketAddr::from(([127, 0, 0, 1], 9101 + i as u16)),
        };
        let mut env = passed.clone();
        env.push(("SB_HTTP_ADDR".into(), addr.to_string()));
        // `just up` keeps every user's NATS password as SB_NATS_PASSWORD_<USER>.
        if let Some(role) = Role::parse(name)
            && let Ok(password) = std::env::var(role.password_env())
        {
            env.push(("SB_NATS_USER".into(), role.user().into()));
            env.push(("SB_NATS_PASSWORD".into(), password));
        }
        processes.push(Process::service(name, &bins.join(name), &env, addr, &run_dir).await?);
    }
    let public = std::env::var("SB_PUBLIC_URL").unwrap_or_default();
    println!(
        "Switchboard is running against the real vendors (logs in {}).",
        run_dir.display()
    );
    println!(
        "  ingress on {ingress_addr}: set your Twilio number's Voice URL to {public}/twilio/voice"
    );
    println!("  and its status callback to {public}/twilio/status.");
    if outbound {
        println!(
            "  dialer on 127.0.0.1:9105: the campaigns API (`switchboard campaign --help`), Twilio's callbacks at $SB_DIALER_PUBLIC_URL/twilio/dial/*"
        );
    } else {
        println!(
            "  (set SB_DIALER_PUBLIC_URL and SB_TWILIO_ACCOUNT_SID to run outbound campaigns too)"
        );
    }
    if console {
        println!(
            "  console on 127.0.0.1:8095: the tenant admin API (`switchboard tenants get|put`)"
        );
    } else {
        println!("  (set SB_OPERATOR_TOKEN to change tenants live through the console)");
    }
    println!("  Ctrl-C stops everything.");
    tokio::signal::ctrl_c().await?;
    futures::future::join_all(
        processes
            .into_iter()
            .map(|p| p.stop(Duration::from_secs(25))),
    )
    .await;
    println!("stopped");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn check(pairs: &[(&str, &str)]) -> Vec<String> {
        let env: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        missing_settings(|name| env.get(name).cloned())
    }

    #[test]
    fn every_missing_setting_is_named() {
        let problems = check(&[]);
        for name in [
            "SB_TWILIO_AUTH_TOKEN",
            "SB_CALL_CREDENTIAL_SECRET",
            "SB_PUBLIC_URL",
            "SB_DEEPGRAM_API_KEY",
            "SB_LLM_API_KEY",
        ] {
            assert!(
                problems.iter().any(|p| p.starts_with(name)),
                "{name}: {problems:?}"
            );
        }
    }

    #[test]
    fn malformed_and_half_configured_settings_are_named() {
        let base = [
            ("SB_TWILIO_AUTH_TOKEN", "t"),
            ("SB_CALL_CREDENTIAL_SECRET", "s"),
            ("SB_DEEPGRAM_API_KEY", "d"),
            ("SB_LLM_API_KEY", "l"),
        ];
        let mut env = base.to_vec();
        env.push(("SB_PUBLIC_URL", "https://voice.example.com"));
        assert!(check(&env).is_empty());
        env.push(("SB_AZURE_TTS_KEY", "k"));
        assert_eq!(check(&env).len(), 1, "a key without a region");
        env.push(("SB_AZURE_TTS_REGION", "eastus"));
        assert!(check(&env).is_empty());
        let mut http = base.to_vec();
        http.push(("SB_PUBLIC_URL", "http://voice.example.com"));
        assert!(check(&http)[0].contains("https://"));
    }
}
