//! The tts stage: speaks each sentence as bot audio chunks.
//!
//! Consumes the durable consumer `tts` on `CALLS` (`sentence`, `bargein`); produces
//! `TtsChunk`s on `audio.{tenant}.{sid}.out`, tagged (turn, sentence, chunk, last), whole
//! 20 ms frames of 8 kHz µ-law. Audio comes from the TTS cache (ARCHITECTURE §6:
//! `tts:{sha256(engine|format|voice|normalised text)}`, 24 h) or, on a miss, from the
//! speech engine — Azure TTS ([`azure`]) or espeak-ng ([`provider::Espeak`], the default
//! without an Azure key), or the tenant's own choice of OpenAI's or Deepgram's streaming
//! speech ([`streaming`]) — streamed, so the first chunk leaves as soon as one frame
//! exists, then cached under the engine that spoke. Before every chunk the emitter's
//! staleness check runs; the sentences of a turn are synthesised in parallel (the runner
//! handles deliveries concurrently; the ingress restores the order). When the engine
//! fails, espeak-ng speaks instead, and failing that the tenant's cached fallback phrase:
//! the caller is never left in silence. The tenants' `prewarm` phrases are synthesised
//! into the cache at start-up ([`Tts::prewarm`]). State: none of its own; the cache and
//! the session live in Redis (behind `sb_runtime::state`).

pub mod azure;
pub mod chunker;
pub mod config;
mod http_audio;
pub mod provider;
mod speak;
pub mod streaming;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt as _;
use sb_runtime::http::ReadyNeeds;
use sb_runtime::metrics::Metric;
use sb_runtime::redis::tts_cache::{Speech, TTS_CACHE_TTL};
use sb_runtime::state::{AudioCache, Sessions};
use sb_runtime::{Emitter, LiveTenants, Runtime, Stage, StageError, StageMain};
use sb_schemas::{Body, Envelope, Kind};

pub use config::{Engines, Provider, ProviderChoice, TtsConfig};

use crate::provider::{Espeak, TextToSpeech, TtsError};

/// The tts stage. Build it with [`Tts::new`] (engines from the config) or
/// [`Tts::with_providers`]. Cheap to clone (handles only).
#[derive(Clone)]
pub struct Tts {
    sessions: Arc<dyn Sessions>,
    cache: Arc<dyn AudioCache>,
    tenants: Arc<LiveTenants>,
    primary: Arc<dyn TextToSpeech>,
    /// Speaks when the primary engine fails (espeak-ng behind Azure).
    backup: Option<Arc<dyn TextToSpeech>>,
    /// Engines a tenant may choose instead of the primary (`tts_provider`), by name.
    engines: Vec<Arc<dyn TextToSpeech>>,
    chunk_bytes: usize,
}

/// What [`Tts::prewarm`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Prewarmed {
    /// Phrases already in the cache.
    pub cached: usize,
    /// Phrases synthesised and stored.
    pub synthesised: usize,
    /// Phrases that could not be synthesised or stored.
    pub failed: usize,
}

impl Tts {
    /// The stage with the engines the settings choose ([`TtsConfig::engines`]); the error
    /// names the variable to fix.
    pub fn new(runtime: &Runtime, config: &TtsConfig) -> Result<Self, String> {
        let Engines {
            primary,
            backup,
            others,
        } = config.engines()?;
        tracing::info!(
            provider = primary.name(),
            backup = backup.as_ref().map(|b| b.name()),
            others = ?others.iter().map(|e| e.name()).collect::<Vec<_>>(),
            "tts engines chosen"
        );
        let tts = Self::with_providers(
            Arc::new(runtime.redis.clone()),
            Arc::new(runtime.cache.clone()),
            runtime.tenants.clone(),
            primary,
            backup,
            config.tts_chunk_bytes,
        )
        .with_engines(others);
        tts.check_tenants()?;
        Ok(tts)
    }

    /// Adds engines tenants may choose (`tts_provider`).
    pub fn with_engines(mut self, engines: Vec<Arc<dyn TextToSpeech>>) -> Self {
        self.engines = engines;
        self
    }

    /// Every tenant's `tts_provider` is an engine this process has; the error names the
    /// tenant and what to set.
    pub fn check_tenants(&self) -> Result<(), String> {
        for tenant in self.tenants.tenants().iter() {
            if let Some(name) = &tenant.tts_provider
                && self.engine(tenant).name() != name
            {
                let hint = match name.as_str() {
                    "openai" => "SB_OPENAI_TTS_KEY",
                    "deepgram" => "SB_DEEPGRAM_TTS_KEY",
                    "azure" => "SB_AZURE_TTS_KEY",
                    _ => "espeak-ng (install it)",
                };
                return Err(format!(
                    "tenant {:?}: tts_provider {name:?} needs {hint}",
                    tenant.id.as_str()
                ));
            }
        }
        Ok(())
    }

    /// The engine that speaks for `tenant`: its `tts_provider`, else the primary.
    pub(crate) fn engine(&self, tenant: &sb_runtime::Tenant) -> &Arc<dyn TextToSpeech> {
        self.engine_named(tenant.tts_provider.as_deref())
    }

    /// The engine called `name`, else the primary.
    fn engine_named(&self, name: Option<&str>) -> &Arc<dyn TextToSpeech> {
        name.and_then(|name| {
            std::iter::once(&self.primary)
                .chain(&self.engines)
                .find(|e| e.name() == name)
        })
        .unwrap_or(&self.primary)
    }

    /// The stage with the given call state, cache and engines.
    pub fn with_providers(
        sessions: Arc<dyn Sessions>,
        cache: Arc<dyn AudioCache>,
        tenants: Arc<LiveTenants>,
        primary: Arc<dyn TextToSpeech>,
        backup: Option<Arc<dyn TextToSpeech>>,
        chunk_bytes: usize,
    ) -> Self {
        Self {
            sessions,
            cache,
            tenants,
            primary,
            backup,
            engines: Vec::new(),
            chunk_bytes,
        }
    }

    /// Synthesises every tenant's `prewarm` phrases and fallback phrase into the cache
    /// (skipping those already there), two at a time.
    pub async fn prewarm(&self) -> Prewarmed {
        let jobs: BTreeSet<(Option<String>, String, String)> = self
            .tenants
            .tenants()
            .iter()
            .flat_map(|t| {
                t.prewarm
                    .iter()
                    .chain(std::iter::once(&t.fallback_phrase))
                    .filter(|p| !p.trim().is_empty())
                    .map(|p| (t.tts_provider.clone(), t.voice.clone(), p.clone()))
            })
            .collect();
        let results: Vec<Result<bool, String>> = futures::stream::iter(jobs)
            .map(|(engine, voice, phrase)| async move {
                let engine = self.engine_named(engine.as_deref());
                self.prewarm_one(engine, &voice, &phrase).await
            })
            .buffer_unordered(2)
            .collect()
            .await;
        let mut done = Prewarmed::default();
        for result in results {
            match result {
                Ok(true) => done.synthesised += 1,
                Ok(false) => done.cached += 1,
                Err(error) => {
                    tracing::warn!(%error, "prewarm failed");
                    done.failed += 1;
                }
            }
        }
        tracing::info!(?done, "tts cache prewarmed");
        done
    }

    async fn prewarm_one(
        &self,
        engine: &Arc<dyn TextToSpeech>,
        voice: &str,
        phrase: &str,
    ) -> Result<bool, String> {
        let wanted = self.speech(engine, voice, phrase);
        if self
            .cache
            .get(&wanted)
            .await
            .map_err(|e| e.to_string())?
            .is_some()
        {
            return Ok(false);
        }
        let (engine, stream) = self
            .open(engine, phrase, voice)
            .await
            .ok_or("no engine could speak")?;
        let audio = speak::whole(stream)
            .await
            .map_err(|e| format!("{}: {e}", engine.name()))?;
        let spoken = self.speech(engine, voice, phrase);
        self.cache
            .put(&spoken, &audio, TTS_CACHE_TTL)
            .await
            .map_err(|e| e.to_string())?;
        Ok(true)
    }

    /// What identifies `text` spoken by `engine` in `voice` in the cache.
    fn speech<'a>(
        &self,
        engine: &'a Arc<dyn TextToSpeech>,
        voice: &'a str,
        text: &'a str,
    ) -> Speech<'a> {
        Speech {
            engine: engine.name(),
            format: engine.format(),
            voice,
            text,
        }
    }
}

impl Stage for Tts {
    const CONSUMER: &'static str = "tts";
    const FIRST_OUTPUT: Option<Kind> = Some(Kind::TtsChunk);
    /// Ready without Redis: the tts degrades instead. A cache read that fails is a miss
    /// (the sentence is synthesised), a failed write is logged, and the staleness check
    /// keeps speaking when it cannot read the barge-in token (the ingress still drops a
    /// stale turn's audio).
    const READY_NEEDS: ReadyNeeds = ReadyNeeds::NATS_ONLY;

    fn sessions(&self) -> Option<Arc<dyn Sessions>> {
        Some(self.sessions.clone())
    }

    async fn handle(&self, input: Envelope, out: &mut Emitter) -> Result<(), StageError> {
        // The tenant as the call started with it (a live change applies to the next call).
        let tenant = self.tenants.for_call(&input).await?;
        // The runner's span already names the tenant, call and turn.
        match &input.body {
            Body::Sentence(sentence) => self.speak(sentence, &tenant, out).await,
            // Nothing to undo: every chunk checks the barge-in token itself.
            Body::BargeIn(_) => Ok(()),
            other => Err(StageError::reject(
                "unexpected_kind",
                format!("the tts stage does not handle {}", other.kind().as_str()),
            )),
        }
    }
}

fn provider_error(provider: &'static str, error: &TtsError) {
    metrics::counter!(Metric::ProviderErrors.name(), "provider" => provider, "kind" => error.kind())
        .increment(1);
}

impl StageMain for Tts {
    type Config = TtsConfig;
    const ABOUT: &'static str =
        "Switchboard tts: speaks each sentence as 8 kHz µ-law chunks (Azure TTS or espeak-ng).";

    fn check(config: &TtsConfig) -> Result<(), String> {
        config.provider(Espeak::available()).map(|_| ())
    }

    /// The engine the settings choose; then the cache pre-warm, waited for a bounded time
    /// before serving (it goes on in the background after that).
    async fn build(runtime: &Runtime, config: TtsConfig) -> Result<Self, String> {
        let tts = Tts::new(runtime, &config)?;
        if config.tts_prewarm {
            let warm = tts.clone();
            let prewarm = tokio::spawn(async move { warm.prewarm().await });
            let wait = Duration::from_millis(config.tts_prewarm_wait_ms);
            if tokio::time::timeout(wait, prewarm).await.is_err() {
                tracing::warn!(
                    wait_ms = wait.as_millis() as u64,
                    "pre-warm goes on in the background"
                );
            }
        }
        Ok(tts)
    }
}
