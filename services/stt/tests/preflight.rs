//! Ring 2: preflights over the Deepgram client and its protocol-faithful stand-in
//! (`sb_sim::deepgram`): the results of one spoken line go through the worker's own
//! assembly ([`Assembler`]) and preflight rules ([`Preflights`]), as `commit` drives them.
//! The interim the stand-in sends once the caller paused is stable and leads the final;
//! the final takes the preflight's turn when the words are the same and a new one when
//! they differ.

#![allow(clippy::unwrap_used)] // a test file: helpers panic on failure by design

use std::time::Duration;

use sb_runtime::tenants::backchannel::Backchannel;
use sb_sim::deepgram;
use sb_stt::preflight::{self, Plan, Preflights, Settled};
use sb_stt::utterance::{Assembled, Assembler};
use sb_stt::{Deepgram, SpeechToText, StreamOptions, SttCommand, SttConfig, SttEvent};

const WAIT: Duration = Duration::from_secs(10);

/// What the worker would publish, in order.
#[derive(Debug, PartialEq)]
enum Published {
    Preflight { turn: u32, text: String },
    Transcript { turn: u32, text: String },
}

/// Speaks `said` to a stand-in that hears `script`, and runs the results through the
/// worker's rules: turns are numbered from 1 as `session_next_turn` would.
async fn run(script: &str, said: &str) -> (Vec<Published>, Vec<Settled>) {
    let server = deepgram::spawn(deepgram::Config {
        script: vec![script.into()],
        ..Default::default()
    })
    .await
    .expect("the stand-in starts");
    let config = SttConfig::for_tests(&server.ws_url(), Some("k")).deepgram;
    let stt = Deepgram::new(&config).expect("valid settings");
    let mut stream = stt
        .open(&StreamOptions::english(300))
        .await
        .expect("the stream opens");
    let mut pcm = sb_audio::synth::silence(300);
    pcm.extend(sb_audio::synth::speechlike(said));
    pcm.extend(sb_audio::synth::silence(800));
    for frame in sb_audio::mulaw::encode_slice(&pcm).chunks(sb_audio::FRAME_BYTES) {
        let audio = SttCommand::Audio(frame.to_vec().into());
        stream.commands.send(audio).await.unwrap();
    }
    let backchannel = Backchannel::new(&["uh-huh".into(), "okay".into()]);
    let (mut assembler, mut preflights) = (Assembler::new(), Preflights::default());
    let (mut published, mut next_turn) = (Vec::new(), 1);
    loop {
        let event = tokio::time::timeout(WAIT, stream.events.recv())
            .await
            .expect("an event in time")
            .expect("the stream is open");
        let SttEvent::Result(result) = event else {
            continue;
        };
        match assembler.on_result(&result) {
            Some(Assembled::Partial(text)) if preflight::paused(&result) => {
                if let Plan::Publish { .. } = preflights.consider(&text, &backchannel) {
                    published.push(Published::Preflight {
                        turn: next_turn,
                        text: text.clone(),
                    });
                    preflights.published(next_turn, text);
                    next_turn += 1;
                }
            }
            Some(Assembled::Utterance(utterance)) => {
                let settled = preflights.settle(&utterance.text);
                let turn = match settled {
                    Settled::Used(turn) => turn,
                    Settled::None | Settled::Discarded(_) => next_turn,
                };
                published.push(Published::Transcript {
                    turn,
                    text: utterance.text,
                });
                return (published, vec![settled]);
            }
            _ => {}
        }
    }
}

/// The stable interim has the final's words: a preflight, then the transcript on its turn.
#[tokio::test]
async fn the_final_confirms_a_preflight_with_the_same_words() {
    let line = "What are your opening hours?";
    let (published, settled) = run(line, line).await;
    assert_eq!(
        published,
        [
            Published::Preflight {
                turn: 1,
                text: line.into()
            },
            Published::Transcript {
                turn: 1,
                text: line.into()
            },
        ]
    );
    assert_eq!(settled, [Settled::Used(1)]);
}

/// The caller's last words change the sentence (the stand-in's `interim|final` line): the
/// preflight is discarded and the transcript takes a new turn.
#[tokio::test]
async fn a_final_with_other_words_takes_a_new_turn() {
    let (published, settled) = run(
        "What are your opening|What are your opening hours on Sunday?",
        "What are your opening hours on Sunday?",
    )
    .await;
    assert_eq!(
        published,
        [
            Published::Preflight {
                turn: 1,
                text: "What are your opening".into()
            },
            Published::Transcript {
                turn: 2,
                text: "What are your opening hours on Sunday?".into()
            },
        ]
    );
    assert_eq!(settled, [Settled::Discarded(1)]);
}

/// Backchannel alone is never worth an answer: no preflight, the transcript as always.
#[tokio::test]
async fn backchannel_gets_no_preflight() {
    let (published, settled) = run("Uh-huh, okay.", "Uh-huh, okay.").await;
    assert_eq!(
        published,
        [Published::Transcript {
            turn: 1,
            text: "Uh-huh, okay.".into()
        }]
    );
    assert_eq!(settled, [Settled::None]);
}
