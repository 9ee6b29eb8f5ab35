//! Ring 2: the tts stage's real `handle` with no servers. Scripted engines stand in for
//! Azure and espeak-ng, `sb_runtime::testing::{MemorySessions, MemoryCache}` for Redis,
//! and `sb_runtime::testing::drive` runs each sentence through the in-memory outbox.
//! Covers the cache (miss then hit, keyed by the engine that spoke), the barge-in paths
//! (before and during a sentence) and the fallback paths (backup engine, cached fallback
//! phrase, nothing left).

#![allow(clippy::unwrap_used)] // a test file: helpers panic on failure by design

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use futures::StreamExt as _;
use futures::future::BoxFuture;
use sb_runtime::redis::tts_cache::{Speech, TTS_CACHE_TTL};
use sb_runtime::state::AudioCache as _;
use sb_runtime::testing::{MemoryCache, MemorySessions, drive};
use sb_runtime::{LiveTenants, StageError, Tenant, Tenants};
use sb_schemas::{Body, CallSid, Envelope, Sentence, TenantId, TtsChunk};
use sb_tts::Tts;
use sb_tts::provider::{AudioStream, TextToSpeech, TtsError};

const FORMAT: &str = "raw-8khz-8bit-mono-mulaw";
const CHUNK_BYTES: usize = 480;

/// What a scripted engine does with every request.
#[derive(Debug, Clone)]
enum Script {
    /// Streams these pieces; with `barge_after: Some(n)`, the caller barges in on the
    /// call's current turn after piece `n` went out.
    Speaks {
        pieces: Vec<Vec<u8>>,
        barge_after: Option<usize>,
    },
    Refuses(TtsError),
}

struct Engine {
    name: &'static str,
    script: Script,
    sessions: Arc<MemorySessions>,
    calls: AtomicUsize,
}

impl Engine {
    fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }
}

impl TextToSpeech for Engine {
    fn name(&self) -> &'static str {
        self.name
    }

    fn format(&self) -> &'static str {
        FORMAT
    }

    fn synthesize<'a>(
        &'a self,
        _text: &'a str,
        _voice: &'a str,
    ) -> BoxFuture<'a, Result<AudioStream, TtsError>> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let script = self.script.clone();
        let sessions = self.sessions.clone();
        Box::pin(async move {
            let (pieces, barge_after) = match script {
                Script::Refuses(error) => return Err(error),
                Script::Speaks {
                    pieces,
                    barge_after,
                } => (pieces, barge_after),
            };
            let stream =
                futures::stream::iter(pieces.into_iter().enumerate()).then(move |(i, piece)| {
                    let sessions = sessions.clone();
                    async move {
                        if barge_after.is_some_and(|n| i == n + 1) {
                            // Let the stage send what came before, then interrupt.
                            tokio::task::yield_now().await;
                            let turn = sessions.session(&sid()).unwrap().turn;
                            sessions.interrupt(&sid(), turn);
                        }
                        Ok(Bytes::from(piece))
                    }
                });
            Ok(Box::pin(stream) as AudioStream)
        })
    }
}

fn sid() -> CallSid {
    CallSid::parse("CA00000000000000000000000000000002").unwrap()
}

fn tenants() -> Arc<LiveTenants> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/base/tenants.toml");
    LiveTenants::fixed(Tenants::load(&path).unwrap())
}

fn acme() -> Arc<Tenant> {
    tenants()
        .by_id(&TenantId::parse("acme").unwrap())
        .unwrap()
        .clone()
}

/// Three pieces of distinct, recognisable audio (not whole frames: 400 bytes each).
fn pieces() -> Vec<Vec<u8>> {
    (1..=3u8).map(|n| vec![n; 400]).collect()
}

fn speaks(barge_after: Option<usize>) -> Script {
    Script::Speaks {
        pieces: pieces(),
        barge_after,
    }
}

fn refuses() -> Script {
    Script::Refuses(TtsError::Status {
        status: 503,
        message: "busy".into(),
    })
}

/// The tts on in-memory sessions and cache with a primary and a backup engine; the call's
/// first caller turn is open.
struct Rig {
    tts: Tts,
    sessions: Arc<MemorySessions>,
    cache: Arc<MemoryCache>,
    primary: Arc<Engine>,
    backup: Arc<Engine>,
}

impl Rig {
    fn new(primary: Script, backup: Script) -> Self {
        let sessions = Arc::new(MemorySessions::default());
        sessions.start(&sid(), &acme().id);
        sessions.next_turn(&sid());
        let cache = Arc::new(MemoryCache::default());
        let engine = |name, script| {
            Arc::new(Engine {
                name,
                script,
                sessions: sessions.clone(),
                calls: AtomicUsize::new(0),
            })
        };
        let (primary, backup) = (engine("primary", primary), engine("backup", backup));
        let tts = Tts::with_providers(
            sessions.clone(),
            cache.clone(),
            tenants(),
            primary.clone(),
            Some(backup.clone() as Arc<dyn TextToSpeech>),
            CHUNK_BYTES,
        );
        Self {
            tts,
            sessions,
            cache,
            primary,
            backup,
        }
    }

    fn cached(&self, engine: &'static str, text: &'static str) -> Option<Bytes> {
        self.cache.audio(&speech(engine, text))
    }
}

fn speech(engine: &'static str, text: &'static str) -> Speech<'static> {
    Speech {
        engine,
        format: FORMAT,
        voice: "en-US-JennyNeural",
        text,
    }
}

const TEXT: &str = "We open at nine on weekdays.";

fn sentence(text: &str, last: bool) -> Envelope {
    let body = Body::Sentence(Sentence {
        index: 2,
        text: text.into(),
        last,
        fallback: false,
    });
    Envelope::new(acme().id.clone(), sid(), 1, body)
}

fn chunks(outputs: &[Envelope]) -> Vec<TtsChunk> {
    outputs
        .iter()
        .map(|e| match &e.body {
            Body::TtsChunk(chunk) => chunk.clone(),
            other => panic!("not a chunk: {other:?}"),
        })
        .collect()
}

fn audio(chunks: &[TtsChunk]) -> Vec<u8> {
    chunks.iter().flat_map(|c| c.payload.0.to_vec()).collect()
}

/// Everything the engine said, padded with µ-law silence to whole 20 ms frames.
fn padded(pieces: &[Vec<u8>]) -> Vec<u8> {
    let mut audio: Vec<u8> = pieces.concat();
    audio.resize(audio.len().div_ceil(160) * 160, 0xFF);
    audio
}

/// A miss streams the primary engine's audio as whole-frame chunks numbered from 0, the
/// last one `last` and `turn_last`; the audio is then cached under that engine, and the
/// same sentence again is served from the cache (the engine is not asked twice), same
/// bytes.
#[tokio::test]
async fn a_miss_streams_then_the_cache_serves() {
    let rig = Rig::new(speaks(None), refuses());
    let driven = drive(&rig.tts, sentence(TEXT, true)).await;
    driven.result.as_ref().unwrap();
    let sent = chunks(&driven.outputs);
    assert_eq!(
        sent.iter().map(|c| c.chunk).collect::<Vec<_>>(),
        (0..sent.len() as u32).collect::<Vec<_>>()
    );
    assert!(
        sent.iter()
            .all(|c| c.sentence == 2 && c.payload.0.len() % 160 == 0)
    );
    let last = sent.last().unwrap();
    assert!(last.last && last.turn_last);
    assert!(
        sent[..sent.len() - 1]
            .iter()
            .all(|c| !c.last && !c.turn_last)
    );
    assert_eq!(audio(&sent), padded(&pieces()));
    assert_eq!(rig.cached("primary", TEXT).unwrap(), padded(&pieces()));

    let again = drive(&rig.tts, sentence(TEXT, false)).await;
    again.result.as_ref().unwrap();
    let sent = chunks(&again.outputs);
    assert_eq!(audio(&sent), padded(&pieces()));
    assert!(
        !sent.last().unwrap().turn_last,
        "not the turn's last sentence"
    );
    assert_eq!(rig.primary.calls(), 1, "a hit never asks the engine");
}

/// A barge-in while the sentence streams: the chunks before it went out, nothing after
/// (no `last` chunk), and the cut sentence is not cached.
#[tokio::test]
async fn a_barge_in_mid_sentence_stops_the_audio() {
    let rig = Rig::new(speaks(Some(0)), refuses());
    let driven = drive(&rig.tts, sentence(TEXT, true)).await;
    driven.result.as_ref().unwrap();
    let sent = chunks(&driven.outputs);
    assert!(!sent.is_empty(), "the first piece was said");
    assert!(
        audio(&sent).iter().all(|&b| b == 1),
        "nothing of the later pieces"
    );
    assert!(sent.iter().all(|c| !c.last));
    assert!(rig.cache.is_empty());
}

/// A sentence of a turn the caller already interrupted, or that a newer turn superseded,
/// is neither synthesised nor sent.
#[tokio::test]
async fn a_stale_sentence_is_not_synthesised() {
    let rig = Rig::new(speaks(None), speaks(None));
    rig.sessions.interrupt(&sid(), 1);
    let driven = drive(&rig.tts, sentence(TEXT, true)).await;
    driven.result.as_ref().unwrap();
    assert!(driven.outputs.is_empty());

    let rig = Rig::new(speaks(None), speaks(None));
    rig.sessions.next_turn(&sid());
    let driven = drive(&rig.tts, sentence(TEXT, true)).await;
    assert!(driven.outputs.is_empty());
    assert_eq!(rig.primary.calls() + rig.backup.calls(), 0);
}

/// The primary engine fails: the backup speaks, and its audio is cached under the
/// backup's name only. The next time the primary is asked again (its own audio is still
/// wanted), rather than being handed the backup's audio from the cache.
#[tokio::test]
async fn a_failed_engine_falls_back_and_never_poisons_the_cache() {
    let rig = Rig::new(refuses(), speaks(None));
    let driven = drive(&rig.tts, sentence(TEXT, true)).await;
    driven.result.as_ref().unwrap();
    assert_eq!(audio(&chunks(&driven.outputs)), padded(&pieces()));
    assert_eq!(rig.cached("backup", TEXT).unwrap(), padded(&pieces()));
    assert_eq!(rig.cached("primary", TEXT), None);

    drive(&rig.tts, sentence(TEXT, true)).await.result.unwrap();
    assert_eq!(rig.primary.calls(), 2, "the primary is tried again");
    assert_eq!(rig.backup.calls(), 2);
}

/// No engine speaks: the tenant's fallback phrase, cached by whichever engine spoke it,
/// is sent instead; when it is not cached either, the sentence is retried later.
#[tokio::test]
async fn no_engine_speaks_the_cached_fallback_phrase() {
    let rig = Rig::new(refuses(), refuses());
    let driven = drive(&rig.tts, sentence(TEXT, true)).await;
    assert!(
        matches!(
            driven.result,
            Err(StageError::Retry {
                kind: "tts_provider",
                ..
            })
        ),
        "{:?}",
        driven.result
    );
    assert!(driven.outputs.is_empty());

    let phrase = acme().fallback_phrase.clone();
    let said = speech("backup", "");
    let said = Speech {
        text: &phrase,
        ..said
    };
    rig.cache
        .put(&said, &[7; 320], TTS_CACHE_TTL)
        .await
        .unwrap();
    let driven = drive(&rig.tts, sentence(TEXT, true)).await;
    driven.result.as_ref().unwrap();
    let sent = chunks(&driven.outputs);
    assert_eq!(audio(&sent), vec![7; 320]);
    assert!(sent.last().unwrap().last);
}

/// A sentence with nothing to say (a turn's closing marker) is one empty last chunk.
#[tokio::test]
async fn an_empty_sentence_is_one_empty_last_chunk() {
    let rig = Rig::new(speaks(None), speaks(None));
    let driven = drive(&rig.tts, sentence(" ... ", true)).await;
    driven.result.as_ref().unwrap();
    let sent = chunks(&driven.outputs);
    assert_eq!(sent.len(), 1);
    assert!(sent[0].last && sent[0].turn_last && sent[0].payload.0.is_empty());
    assert_eq!(rig.primary.calls(), 0);
}
