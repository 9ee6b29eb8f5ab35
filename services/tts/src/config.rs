//! The tts stage's own settings (`SB_TTS_*`, `SB_AZURE_TTS_*`), checked at start-up.
//!
//! Consumes flags or environment variables (clap); produces a [`TtsConfig`] and the
//! provider choice, with errors naming the variable to fix. The key is a [`Secret`].
//! State: none.

use std::time::Duration;

use std::sync::Arc;

use sb_runtime::Secret;

use crate::azure::{self, Azure};
use crate::provider::{Espeak, TextToSpeech};
use crate::streaming::{DeepgramSpeech, OpenAiSpeech};

/// Which engine speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ProviderChoice {
    /// Azure when a key is configured, else espeak-ng.
    Auto,
    Azure,
    Espeak,
}

/// How the tts stage synthesises and publishes audio.
#[derive(Debug, Clone, clap::Args)]
pub struct TtsConfig {
    /// Speech engine: auto (Azure when SB_AZURE_TTS_KEY is set, else espeak-ng), azure, espeak.
    #[arg(long, env = "SB_TTS_PROVIDER", value_enum, default_value = "auto")]
    pub tts_provider: ProviderChoice,

    /// Azure Speech resource key (`Ocp-Apim-Subscription-Key`).
    #[arg(long, env = "SB_AZURE_TTS_KEY", hide_env_values = true)]
    pub azure_tts_key: Option<Secret>,

    /// Azure region, e.g. `westeurope`: the endpoint is
    /// `https://{region}.tts.speech.microsoft.com/cognitiveservices/v1`.
    #[arg(long, env = "SB_AZURE_TTS_REGION")]
    pub azure_tts_region: Option<String>,

    /// Full Azure TTS endpoint URL, overriding the region (a stand-in in tests).
    #[arg(long, env = "SB_AZURE_TTS_URL")]
    pub azure_tts_url: Option<String>,

    /// Time allowed to open a connection to Azure.
    #[arg(long, env = "SB_AZURE_TTS_CONNECT_TIMEOUT_MS", default_value_t = 1_000)]
    pub azure_tts_connect_timeout_ms: u64,

    /// Time allowed from the request to the first audio byte.
    #[arg(
        long,
        env = "SB_AZURE_TTS_FIRST_BYTE_TIMEOUT_MS",
        default_value_t = 2_000
    )]
    pub azure_tts_first_byte_timeout_ms: u64,

    /// Longest silence between two pieces of the audio body.
    #[arg(long, env = "SB_AZURE_TTS_IDLE_TIMEOUT_MS", default_value_t = 2_000)]
    pub azure_tts_idle_timeout_ms: u64,

    /// `User-Agent` of Azure requests (Azure requires one).
    #[arg(long, env = "SB_TTS_USER_AGENT", default_value = "switchboard-tts")]
    pub tts_user_agent: String,

    /// Bytes per published audio chunk (multiple of 160 = 20 ms of 8 kHz µ-law; 4000 = 0.5 s);
    /// the first chunk of a sentence leaves as soon as one 20 ms frame is synthesised.
    /// Synthesis runs faster than playback, so bigger chunks cost no latency, only fewer
    /// publishes and barge-in checks.
    #[arg(long, env = "SB_TTS_CHUNK_BYTES", default_value_t = 4_000)]
    pub tts_chunk_bytes: usize,

    /// Synthesise every tenant's `prewarm` phrases (and fallback phrase) into the cache at
    /// start-up.
    #[arg(long, env = "SB_TTS_PREWARM", default_value_t = true, action = clap::ArgAction::Set)]
    pub tts_prewarm: bool,

    /// How long start-up waits for the pre-warm before serving (it goes on in the
    /// background after that), so the first calls' greetings are already cached.
    #[arg(long, env = "SB_TTS_PREWARM_WAIT_MS", default_value_t = 10_000)]
    pub tts_prewarm_wait_ms: u64,

    /// When Azure fails, speak the sentence with espeak-ng instead (if installed).
    #[arg(long, env = "SB_TTS_ESPEAK_FALLBACK", default_value_t = true, action = clap::ArgAction::Set)]
    pub tts_espeak_fallback: bool,

    /// OpenAI-compatible speech endpoint, for tenants with `tts_provider = "openai"`.
    #[arg(
        long,
        env = "SB_OPENAI_TTS_URL",
        default_value = "https://api.openai.com/v1/audio/speech"
    )]
    pub openai_tts_url: String,

    /// Its key (`Authorization: Bearer`); the engine exists only with one.
    #[arg(long, env = "SB_OPENAI_TTS_KEY", hide_env_values = true)]
    pub openai_tts_key: Option<Secret>,

    /// Its model.
    #[arg(long, env = "SB_OPENAI_TTS_MODEL", default_value = "gpt-4o-mini-tts")]
    pub openai_tts_model: String,

    /// Deepgram's speech endpoint, for tenants with `tts_provider = "deepgram"`.
    #[arg(
        long,
        env = "SB_DEEPGRAM_TTS_URL",
        default_value = "https://api.deepgram.com/v1/speak"
    )]
    pub deepgram_tts_url: String,

    /// Its key (`Authorization: Token`); the engine exists only with one.
    #[arg(long, env = "SB_DEEPGRAM_TTS_KEY", hide_env_values = true)]
    pub deepgram_tts_key: Option<Secret>,
}

/// The engines the settings choose, as the stage uses them (the tts service, and
/// `replay redrive --stage tts`).
pub struct Engines {
    /// Speaks unless the tenant chose another engine.
    pub primary: Arc<dyn TextToSpeech>,
    /// Speaks when the primary fails (espeak-ng behind Azure).
    pub backup: Option<Arc<dyn TextToSpeech>>,
    /// Engines a tenant may choose instead (`tts_provider`).
    pub others: Vec<Arc<dyn TextToSpeech>>,
}

/// The engine the settings pick.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Provider {
    Azure { url: String, key: Secret },
    Espeak,
}

impl TtsConfig {
    /// Defaults (as `--help` shows them): espeak-ng unless a key is given.
    pub fn local() -> Self {
        Self {
            tts_provider: ProviderChoice::Auto,
            azure_tts_key: None,
            azure_tts_region: None,
            azure_tts_url: None,
            azure_tts_connect_timeout_ms: 1_000,
            azure_tts_first_byte_timeout_ms: 2_000,
            azure_tts_idle_timeout_ms: 2_000,
            tts_user_agent: "switchboard-tts".into(),
            tts_chunk_bytes: 4_000,
            tts_prewarm: true,
            tts_prewarm_wait_ms: 10_000,
            tts_espeak_fallback: true,
            openai_tts_url: "https://api.openai.com/v1/audio/speech".into(),
            openai_tts_key: None,
            openai_tts_model: "gpt-4o-mini-tts".into(),
            deepgram_tts_url: "https://api.deepgram.com/v1/speak".into(),
            deepgram_tts_key: None,
        }
    }

    /// Azure at `url` (the stand-in) with `key`.
    pub fn azure(url: impl Into<String>, key: &str) -> Self {
        Self {
            tts_provider: ProviderChoice::Azure,
            azure_tts_key: Some(Secret::new(key)),
            azure_tts_url: Some(url.into()),
            ..Self::local()
        }
    }

    /// The chosen engine; the error names the variable to set. `espeak_installed` is
    /// passed in so the choice can be tested on any machine.
    pub fn provider(&self, espeak_installed: bool) -> Result<Provider, String> {
        if self.tts_chunk_bytes < sb_audio::FRAME_BYTES
            || !self.tts_chunk_bytes.is_multiple_of(sb_audio::FRAME_BYTES)
        {
            return Err(format!(
                "SB_TTS_CHUNK_BYTES must be a positive multiple of {} (got {})",
                sb_audio::FRAME_BYTES,
                self.tts_chunk_bytes
            ));
        }
        let key = self.azure_tts_key.clone().filter(|k| !k.is_empty());
        let azure = match (self.tts_provider, key) {
            (ProviderChoice::Espeak, _) | (ProviderChoice::Auto, None) => None,
            (ProviderChoice::Azure, None) => {
                return Err("SB_AZURE_TTS_KEY is required with SB_TTS_PROVIDER=azure".into());
            }
            (_, Some(key)) => Some(key),
        };
        let Some(key) = azure else {
            if !espeak_installed {
                return Err("espeak-ng is not installed: install it (.ci/bootstrap does) or set SB_AZURE_TTS_KEY".into());
            }
            return Ok(Provider::Espeak);
        };
        let url = match (&self.azure_tts_url, &self.azure_tts_region) {
            (Some(url), _) => url.clone(),
            (None, Some(region)) if is_region(region) => azure::region_url(region),
            (None, Some(region)) => {
                return Err(format!(
                    "SB_AZURE_TTS_REGION: {region:?} is not a region name"
                ));
            }
            (None, None) => {
                return Err(
                    "SB_AZURE_TTS_REGION or SB_AZURE_TTS_URL is required with SB_AZURE_TTS_KEY"
                        .into(),
                );
            }
        };
        url::Url::parse(&url)
            .ok()
            .filter(|u| matches!(u.scheme(), "http" | "https"))
            .ok_or_else(|| format!("SB_AZURE_TTS_URL: {url:?} is not an http(s) URL"))?;
        Ok(Provider::Azure { url, key })
    }

    /// The engines these settings choose; the error names the variable to fix.
    pub fn engines(&self) -> Result<Engines, String> {
        let espeak_installed = Espeak::available();
        let (primary, backup): (Arc<dyn TextToSpeech>, Option<Arc<dyn TextToSpeech>>) =
            match self.provider(espeak_installed)? {
                Provider::Espeak => (Arc::new(Espeak), None),
                Provider::Azure { url, key } => {
                    let azure = Azure::new(url, key, &self.tts_user_agent, self.azure_timeouts())?;
                    let backup = (self.tts_espeak_fallback && espeak_installed)
                        .then(|| Arc::new(Espeak) as Arc<dyn TextToSpeech>);
                    (Arc::new(azure), backup)
                }
            };
        let mut others = self.streaming_engines()?;
        if espeak_installed && primary.name() != "espeak" {
            others.push(Arc::new(Espeak));
        }
        Ok(Engines {
            primary,
            backup,
            others,
        })
    }

    /// The streaming engines besides Azure that have a key: OpenAI's and Deepgram's
    /// speech endpoints (their timeouts are the `SB_AZURE_TTS_*_TIMEOUT_MS` ones).
    pub fn streaming_engines(&self) -> Result<Vec<Arc<dyn TextToSpeech>>, String> {
        let timeouts = self.azure_timeouts();
        let key = |k: &Option<Secret>| k.clone().filter(|k| !k.is_empty());
        let mut engines: Vec<Arc<dyn TextToSpeech>> = Vec::new();
        if let Some(key) = key(&self.openai_tts_key) {
            let url = http_url("SB_OPENAI_TTS_URL", &self.openai_tts_url)?;
            let model = self.openai_tts_model.clone();
            engines.push(Arc::new(OpenAiSpeech::new(url, key, model, timeouts)?));
        }
        if let Some(key) = key(&self.deepgram_tts_key) {
            let url = http_url("SB_DEEPGRAM_TTS_URL", &self.deepgram_tts_url)?;
            engines.push(Arc::new(DeepgramSpeech::new(url, key, timeouts)?));
        }
        Ok(engines)
    }

    pub fn azure_timeouts(&self) -> azure::Timeouts {
        azure::Timeouts {
            connect: Duration::from_millis(self.azure_tts_connect_timeout_ms.max(1)),
            first_byte: Duration::from_millis(self.azure_tts_first_byte_timeout_ms.max(1)),
            idle: Duration::from_millis(self.azure_tts_idle_timeout_ms.max(1)),
        }
    }
}

/// `raw` if it is an http(s) URL; the error names `var`.
fn http_url(var: &str, raw: &str) -> Result<String, String> {
    url::Url::parse(raw)
        .ok()
        .filter(|u| matches!(u.scheme(), "http" | "https"))
        .map(|_| raw.to_owned())
        .ok_or_else(|| format!("{var}: {raw:?} is not an http(s) URL"))
}

fn is_region(region: &str) -> bool {
    !region.is_empty()
        && region
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (settings, espeak installed, expected provider or error fragment).
    #[test]
    fn provider_table() {
        let with = |f: fn(&mut TtsConfig)| {
            let mut c = TtsConfig::local();
            f(&mut c);
            c
        };
        let cases: Vec<(TtsConfig, bool, Result<Provider, &str>)> = vec![
            (TtsConfig::local(), true, Ok(Provider::Espeak)),
            (TtsConfig::local(), false, Err("espeak-ng is not installed")),
            (
                with(|c| {
                    c.azure_tts_key = Some(Secret::new("k"));
                    c.azure_tts_region = Some("westeurope".into());
                }),
                false,
                Ok(Provider::Azure {
                    url: "https://westeurope.tts.speech.microsoft.com/cognitiveservices/v1".into(),
                    key: Secret::new("k"),
                }),
            ),
            (
                with(|c| c.azure_tts_key = Some(Secret::new("k"))),
                true,
                Err("SB_AZURE_TTS_REGION or SB_AZURE_TTS_URL"),
            ),
            (
                with(|c| {
                    c.azure_tts_key = Some(Secret::new("k"));
                    c.azure_tts_region = Some("west europe/../x".into());
                }),
                true,
                Err("SB_AZURE_TTS_REGION"),
            ),
            (
                with(|c| c.tts_provider = ProviderChoice::Azure),
                true,
                Err("SB_AZURE_TTS_KEY is required"),
            ),
            (
                with(|c| {
                    c.tts_provider = ProviderChoice::Espeak;
                    c.azure_tts_key = Some(Secret::new("k"));
                }),
                true,
                Ok(Provider::Espeak),
            ),
            (
                TtsConfig::azure("http://127.0.0.1:9/cognitiveservices/v1", "k"),
                false,
                Ok(Provider::Azure {
                    url: "http://127.0.0.1:9/cognitiveservices/v1".into(),
                    key: Secret::new("k"),
                }),
            ),
            (
                TtsConfig::azure("ftp://x", "k"),
                true,
                Err("SB_AZURE_TTS_URL"),
            ),
            (
                with(|c| c.tts_chunk_bytes = 100),
                true,
                Err("SB_TTS_CHUNK_BYTES"),
            ),
        ];
        for (i, (config, espeak, expected)) in cases.into_iter().enumerate() {
            match (config.provider(espeak), expected) {
                (Ok(got), Ok(want)) => assert_eq!(got, want, "case {i}"),
                (Err(e), Err(fragment)) => assert!(e.contains(fragment), "case {i}: {e}"),
                (got, want) => panic!("case {i}: got {got:?}, want {want:?}"),
            }
        }
    }
}
