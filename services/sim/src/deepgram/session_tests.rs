//! Tests of the `/v1/listen` state machine: audio and control frames in, messages out.

use sb_audio::{mulaw, synth, wav};
use serde_json::Value;

use super::*;

fn tuning() -> Tuning {
    Tuning {
        vad: vad::Config::default(),
        segment_hangover_ms: 600,
        silence_final_ms: 0,
        pause_interim_ms: 0,
    }
}

fn session(query: &str, script: &[&str]) -> Session {
    session_with(query, script, tuning())
}

fn session_with(query: &str, script: &[&str], tuning: Tuning) -> Session {
    let params = ListenParams::parse(query).expect("valid query");
    let info = StreamInfo {
        request_id: "req".into(),
        model: params.model.clone(),
        punctuate: params.punctuate,
    };
    let script = Script::new(script.iter().map(|s| (*s).to_owned()).collect(), None);
    Session::new(
        info,
        params,
        tuning,
        script,
        "2024-01-01T00:00:00.000Z".into(),
    )
}

fn reply(control: Control) -> Vec<Value> {
    match control {
        Control::Reply(out) | Control::Close(out) => out.into_iter().map(|o| o.json).collect(),
    }
}

/// Sends `pcm` as µ-law in 20 ms frames; returns every message produced.
fn feed(session: &mut Session, pcm: &[i16]) -> Vec<Value> {
    mulaw::encode_slice(pcm)
        .chunks(160)
        .flat_map(|frame| reply(session.on_audio(frame).expect("decodable")))
        .collect()
}

fn kinds(messages: &[Value]) -> Vec<String> {
    messages
        .iter()
        .map(|m| match m["type"].as_str() {
            Some("Results") if m["speech_final"] == true => "final+speech_final".to_owned(),
            Some("Results") if m["is_final"] == true => "final".to_owned(),
            Some("Results") => "interim".to_owned(),
            other => other.unwrap_or("?").to_owned(),
        })
        .collect()
}

const LIVE: &str = "model=nova-3&encoding=mulaw&sample_rate=8000&interim_results=true&endpointing=300\
                    &vad_events=true&utterance_end_ms=1000&punctuate=true";

/// The production flow: SpeechStarted at the burst start, interims once per second whose
/// transcripts are growing prefixes of the script line, a speech_final 300 ms into the
/// silence covering the whole line, then UtteranceEnd 1 s after the last word.
#[test]
fn speech_started_interims_final_utterance_end() {
    let mut s = session(LIVE, &["Hello there, I would like to book a table."]);
    let mut audio = synth::silence(500);
    audio.extend(synth::tone(2_500, 440.0, 8_000));
    audio.extend(synth::silence(1_500));
    let messages = feed(&mut s, &audio);
    assert_eq!(
        kinds(&messages),
        [
            "SpeechStarted",
            "interim",
            "interim",
            "final+speech_final",
            "UtteranceEnd"
        ]
    );
    assert_eq!(messages[0]["timestamp"], 0.5);
    let transcript = |i: usize| {
        messages[i]["channel"]["alternatives"][0]["transcript"]
            .as_str()
            .unwrap_or("?")
            .to_owned()
    };
    assert_eq!(transcript(1), "Hello there, I");
    assert_eq!(transcript(2), "Hello there, I would like to");
    assert_eq!(transcript(3), "Hello there, I would like to book a table.");
    assert_eq!(
        (
            messages[1]["start"].as_f64(),
            messages[1]["duration"].as_f64()
        ),
        (Some(0.0), Some(1.5))
    );
    let last = &messages[3];
    assert_eq!(
        (last["start"].as_f64(), last["duration"].as_f64()),
        (Some(0.0), Some(3.3))
    );
    let words = last["channel"]["alternatives"][0]["words"]
        .as_array()
        .expect("words");
    assert_eq!(words.len(), 9);
    assert_eq!(
        (words[0]["start"].as_f64(), words[8]["end"].as_f64()),
        (Some(0.5), Some(3.0))
    );
    assert_eq!(messages[4]["last_word_end"], 3.0);
}

/// Once the voice has paused `pause_interim_ms`, one interim holds the whole line, its last
/// word ending where the voice stopped (so its audio runs on past it), before the
/// endpointing's final; a line `interim|final` says its first part in interims, its second
/// in the final.
#[test]
fn a_pause_gets_an_interim_with_the_whole_line() {
    let tuning = Tuning {
        pause_interim_ms: 200,
        ..tuning()
    };
    let line = "Can I book a table|Can I book a table for two?";
    let mut s = session_with(LIVE, &[line, "Thanks."], tuning);
    let mut audio = synth::silence(500);
    audio.extend(synth::tone(1_500, 440.0, 8_000));
    audio.extend(synth::silence(1_200));
    let messages = feed(&mut s, &audio);
    assert_eq!(
        kinds(&messages),
        [
            "SpeechStarted",
            "interim",
            "interim",
            "final+speech_final",
            "UtteranceEnd"
        ]
    );
    let alternative = |i: usize| messages[i]["channel"]["alternatives"][0].clone();
    assert_eq!(alternative(1)["transcript"], "Can I book");
    let paused = alternative(2);
    assert_eq!(paused["transcript"], "Can I book a table");
    let words = paused["words"].as_array().expect("words");
    assert_eq!(words.last().map(|w| w["end"].clone()), Some(2.0.into()));
    assert_eq!(
        (
            messages[2]["start"].as_f64(),
            messages[2]["duration"].as_f64()
        ),
        (Some(0.0), Some(2.2))
    );
    assert_eq!(alternative(3)["transcript"], "Can I book a table for two?");
    // A line without `|` says the same in both; one pause, one pause interim.
    let mut audio = synth::tone(400, 440.0, 8_000);
    audio.extend(synth::silence(600));
    let next = feed(&mut s, &audio);
    let texts: Vec<&Value> = next
        .iter()
        .filter(|m| m["type"] == "Results")
        .map(|m| &m["channel"]["alternatives"][0]["transcript"])
        .collect();
    assert_eq!(texts, ["Thanks.", "Thanks."]);
}

/// Each utterance takes the next script line; a second result's start is the first's end;
/// once the script runs out the last line repeats.
#[test]
fn script_lines_in_order_then_repeat() {
    let mut s = session(
        "encoding=mulaw&sample_rate=8000&endpointing=200",
        &["one", "two"],
    );
    let mut transcripts = Vec::new();
    let mut starts = Vec::new();
    for _ in 0..3 {
        let mut audio = synth::tone(400, 440.0, 8_000);
        audio.extend(synth::silence(400));
        for m in feed(&mut s, &audio) {
            transcripts.push(
                m["channel"]["alternatives"][0]["transcript"]
                    .as_str()
                    .unwrap_or("?")
                    .to_owned(),
            );
            starts.push(m["start"].as_f64().unwrap_or(-1.0));
        }
    }
    assert_eq!(transcripts, ["one", "two", "two"]);
    assert_eq!(starts, [0.0, 0.6, 1.4]);
}

/// Finalize during speech answers at once with the line, marked from_finalize and not
/// speech_final; the endpoint that follows sends an empty speech_final.
#[test]
fn finalize_mid_speech() {
    let mut s = session(LIVE, &["Book a table."]);
    assert!(
        feed(&mut s, &synth::tone(600, 440.0, 8_000))
            .iter()
            .all(|m| m["type"] == "SpeechStarted")
    );
    let flushed = reply(s.on_text(r#"{"type":"Finalize"}"#));
    assert_eq!(kinds(&flushed), ["final"]);
    assert_eq!(flushed[0]["from_finalize"], true);
    assert_eq!(
        flushed[0]["channel"]["alternatives"][0]["transcript"],
        "Book a table."
    );
    let rest = feed(&mut s, &synth::silence(300));
    assert_eq!(kinds(&rest), ["final+speech_final"]);
    assert_eq!(rest[0]["channel"]["alternatives"][0]["transcript"], "");
    // Finalize with nothing new buffered says nothing.
    assert!(reply(s.on_text(r#"{"type":"Finalize","channel":0}"#)).is_empty());
}

/// CloseStream flushes the utterance in progress, then Metadata with the audio's duration
/// and SHA-256, and asks for a close; later frames are ignored.
#[test]
fn close_stream_flushes_then_metadata() {
    let mut s = session(LIVE, &["Goodbye."]);
    feed(&mut s, &synth::tone(500, 440.0, 8_000));
    let Control::Close(out) = s.on_text(r#"{"type":"CloseStream"}"#) else {
        panic!("CloseStream closes")
    };
    let messages: Vec<Value> = out.into_iter().map(|o| o.json).collect();
    assert_eq!(kinds(&messages), ["final+speech_final", "Metadata"]);
    assert_eq!(
        messages[0]["channel"]["alternatives"][0]["transcript"],
        "Goodbye."
    );
    assert_eq!(messages[1]["duration"], 0.5);
    assert_eq!(messages[1]["sha256"].as_str().map(str::len), Some(64));
    assert!(s.is_closed());
    assert!(reply(s.on_audio(&[0xFF; 160]).expect("ignored")).is_empty());
}

/// An empty binary frame is the deprecated close signal: Metadata and close.
#[test]
fn empty_binary_frame_closes() {
    let mut s = session(LIVE, &[]);
    let control = s.on_audio(&[]).expect("close");
    assert!(
        matches!(&control, Control::Close(out) if out.len() == 1 && out[0].json["type"] == "Metadata")
    );
}

/// KeepAlive gets no reply, Configure gets ConfigureSuccess, garbage gets a SchemaError.
#[test]
fn control_frames() {
    let mut s = session(LIVE, &[]);
    assert_eq!(s.on_text(r#"{"type":"KeepAlive"}"#), Control::Reply(vec![]));
    let configured = reply(s.on_text(r#"{"type":"Configure","keyterms":["Switchboard"]}"#));
    assert_eq!(configured[0]["type"], "ConfigureSuccess");
    for garbage in ["not json", r#"{"type":"Dance"}"#, "[]"] {
        let out = reply(s.on_text(garbage));
        assert_eq!(out[0]["variant"], "SchemaError", "{garbage}");
        assert_eq!(out[0]["message"], garbage);
    }
}

/// Stereo 16 kHz linear16 in odd-sized pieces is reassembled and detected on the same
/// timeline; endpointing=false gives a final without speech_final.
#[test]
fn linear16_stereo_odd_pieces() {
    let mut s = session(
        "encoding=linear16&sample_rate=16000&channels=2&endpointing=false",
        &["stereo"],
    );
    let tone = sb_audio::resample::resample(&synth::tone(500, 440.0, 8_000), 8_000, 16_000);
    let mut pcm = vec![0i16; 3_200];
    pcm.extend(tone);
    pcm.extend(vec![0i16; 16_000]);
    let bytes: Vec<u8> = pcm
        .iter()
        .flat_map(|s| [s.to_le_bytes(), s.to_le_bytes()])
        .flatten()
        .collect();
    let messages: Vec<Value> = bytes
        .chunks(333)
        .flat_map(|piece| reply(s.on_audio(piece).expect("audio")))
        .collect();
    assert_eq!(kinds(&messages), ["final"]);
    assert_eq!(
        messages[0]["channel"]["alternatives"][0]["words"][0]["start"],
        0.2
    );
}

/// Without `encoding`, a WAV header is read from the stream; non-audio closes with 1008.
#[test]
fn containerised_wav_and_garbage() {
    let mut s = session("endpointing=100", &["wav"]);
    let mut pcm = synth::tone(300, 440.0, 8_000);
    pcm.extend(synth::silence(300));
    let file = wav::mono(&pcm, 8_000);
    let messages: Vec<Value> = file
        .chunks(20)
        .flat_map(|piece| reply(s.on_audio(piece).expect("wav")))
        .collect();
    assert_eq!(kinds(&messages), ["final+speech_final"]);
    let mut garbage = session("", &[]);
    assert_eq!(garbage.on_audio(&[0x55; 64]).err(), Some(UndecodableAudio));
}

/// Long silence yields empty finals when configured, never SpeechStarted.
#[test]
fn silence_finals() {
    let params = ListenParams::parse(LIVE).expect("valid");
    let info = StreamInfo {
        request_id: "r".into(),
        model: "nova-3".into(),
        punctuate: true,
    };
    let tuning = Tuning {
        silence_final_ms: 1_000,
        ..tuning()
    };
    let mut s = Session::new(
        info,
        params,
        tuning,
        Script::new(vec![], None),
        String::new(),
    );
    let messages = feed(&mut s, &synth::silence(2_500));
    assert_eq!(kinds(&messages), ["final", "final"]);
    assert_eq!(messages[1]["start"], 1.0);
}
