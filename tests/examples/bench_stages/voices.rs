//! The streaming engines' first-chunk time against Azure's (issue 16): the same sentences
//! through each client, one at a time, against the TTS stand-in's three faces at zero
//! delay (deterministic audio). Request sent → first 8 kHz µ-law piece out of the client:
//! Azure and Deepgram pass µ-law through, OpenAI's 24 kHz PCM is resampled and encoded on
//! the fly, so the difference to Azure is what the streaming path costs.

use std::time::{Duration, Instant};

use anyhow::Context as _;
use futures::StreamExt as _;
use sb_runtime::Secret;
use sb_sim::tts;
use sb_tts::azure::{Azure, Timeouts};
use sb_tts::provider::TextToSpeech;
use sb_tts::streaming::{DeepgramSpeech, OpenAiSpeech};

use crate::{median, pct, serve};

const TIMEOUTS: Timeouts = Timeouts {
    connect: Duration::from_secs(1),
    first_byte: Duration::from_secs(5),
    idle: Duration::from_secs(5),
};

/// One run: [p50, p99] ms of request → first µ-law piece, per engine.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct VoiceRow {
    azure: [f64; 2],
    openai: [f64; 2],
    deepgram: [f64; 2],
}

impl VoiceRow {
    pub(crate) fn median(rows: &[VoiceRow]) -> Self {
        let pair = |f: &dyn Fn(&VoiceRow) -> [f64; 2]| {
            [
                median(rows.iter().map(|r| f(r)[0]).collect()),
                median(rows.iter().map(|r| f(r)[1]).collect()),
            ]
        };
        Self {
            azure: pair(&|r| r.azure),
            openai: pair(&|r| r.openai),
            deepgram: pair(&|r| r.deepgram),
        }
    }

    pub(crate) fn print(&self, label: &str) {
        println!(
            "{label}tts first chunk (request → first µ-law piece): azure p50 {:.2} p99 {:.2} ms | openai (pcm 24k → µ-law 8k) {:.2}/{:.2} ms, +{:.2} ms over azure at p50 | deepgram {:.2}/{:.2} ms, +{:.2} ms",
            self.azure[0],
            self.azure[1],
            self.openai[0],
            self.openai[1],
            self.openai[0] - self.azure[0],
            self.deepgram[0],
            self.deepgram[1],
            self.deepgram[0] - self.azure[0],
        );
    }
}

/// `samples` sentences through each engine.
pub(crate) async fn measure(samples: usize) -> anyhow::Result<VoiceRow> {
    let config = tts::Config {
        api_key: Some("bench".into()),
        deterministic: true,
        ..tts::Config::default()
    };
    let (base, task) = serve(tts::router(tts::Shared::new(config))).await?;
    let key = || Secret::new("bench");
    let azure = Azure::new(
        format!("{base}/cognitiveservices/v1"),
        key(),
        "bench",
        TIMEOUTS,
    )
    .map_err(anyhow::Error::msg)?;
    let openai = OpenAiSpeech::new(
        format!("{base}/v1/audio/speech"),
        key(),
        "gpt-4o-mini-tts".into(),
        TIMEOUTS,
    )
    .map_err(anyhow::Error::msg)?;
    let deepgram = DeepgramSpeech::new(format!("{base}/v1/speak"), key(), TIMEOUTS)
        .map_err(anyhow::Error::msg)?;
    let engines: [(&dyn TextToSpeech, &str); 3] = [
        (&azure, "en-US-JennyNeural"),
        (&openai, "alloy"),
        (&deepgram, "aura-2-thalia-en"),
    ];
    let mut times: [Vec<f64>; 3] = Default::default();
    for n in 0..samples {
        let text = format!("Sentence number {n} tells the caller about the opening hours.");
        for (k, (engine, voice)) in engines.iter().enumerate() {
            let started = Instant::now();
            let mut audio = engine.synthesize(&text, voice).await?;
            audio.next().await.context("no audio")??;
            times[k].push(started.elapsed().as_secs_f64() * 1e3);
            while audio.next().await.is_some() {}
        }
    }
    task.abort();
    let p = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        [pct(v, 0.5), pct(v, 0.99)]
    };
    Ok(VoiceRow {
        azure: p(&mut times[0]),
        openai: p(&mut times[1]),
        deepgram: p(&mut times[2]),
    })
}
