use super::*;

fn settings(min_ms: u32, false_ms: u32) -> TurnTaking {
    TurnTaking {
        min_interruption_ms: min_ms,
        false_interruption_ms: false_ms,
        ..TurnTaking::default()
    }
}

/// Feeds `ms` of verdicts (every 16 ms) from `from`; returns the decisions with the time
/// since `from` they came at.
fn feed(
    turns: &mut Turns,
    from: Instant,
    ms: u64,
    voice: bool,
    bot_playing: bool,
) -> Vec<(u64, Decision)> {
    let mut out = Vec::new();
    let mut t = 16;
    while t <= ms {
        let at = from + Duration::from_millis(t);
        let score = if voice { 0.9 } else { 0.1 };
        if let Some(decision) = turns.on_verdict(at, score, bot_playing) {
            out.push((t, decision));
        }
        t += 16;
    }
    out
}

/// Words mode: the pause comes with the first verdict at or past the minimum after the
/// onset, once; the onset is the start of the first voiced frame.
#[test]
fn voice_over_the_bot_pauses_within_the_minimum_plus_a_frame() {
    let start = Instant::now();
    let mut turns = Turns::new(BargeInMode::Words, &settings(250, 1500));
    let decisions = feed(&mut turns, start, 600, true, true);
    assert_eq!(decisions.len(), 1, "{decisions:?}");
    let (at, decision) = decisions[0];
    assert_eq!(decision, Decision::Pause { onset: start });
    assert!((250..250 + 16).contains(&at), "paused at {at} ms");
    assert!(turns.is_paused());
}

/// Speech mode: the same moment is a barge-in, not a pause.
#[test]
fn speech_mode_barges_in_instead() {
    let start = Instant::now();
    let mut turns = Turns::new(BargeInMode::Speech, &settings(250, 1500));
    let decisions = feed(&mut turns, start, 300, true, true);
    assert_eq!(decisions, vec![(256, Decision::BargeIn { onset: start })]);
}

/// Shorter than the minimum (a click, a breath) or with no bot audio: nothing.
#[test]
fn short_voice_or_no_bot_audio_does_nothing() {
    let start = Instant::now();
    let mut turns = Turns::new(BargeInMode::Words, &settings(250, 1500));
    assert!(feed(&mut turns, start, 200, true, true).is_empty());
    assert!(
        feed(
            &mut turns,
            start + Duration::from_millis(200),
            300,
            false,
            true
        )
        .is_empty()
    );
    let later = start + Duration::from_secs(2);
    assert!(feed(&mut turns, later, 1000, true, false).is_empty());
    assert!(!turns.is_paused());
}

/// A pause whose voice stops without words resumes `false_interruption_ms` after the
/// voice's last frame, not before, and not while the caller still speaks.
#[test]
fn a_pause_without_words_resumes_after_the_false_interruption_time() {
    let start = Instant::now();
    let mut turns = Turns::new(BargeInMode::Words, &settings(250, 1500));
    feed(&mut turns, start, 400, true, true);
    assert_eq!(
        turns.deadline(),
        None,
        "no deadline while the caller speaks"
    );
    let quiet_from = start + Duration::from_millis(400);
    feed(&mut turns, quiet_from, 300, false, true);
    let last_voice = start + Duration::from_millis(400);
    assert_eq!(
        turns.deadline(),
        Some(last_voice + Duration::from_millis(1500))
    );
    assert_eq!(turns.poll(last_voice + Duration::from_millis(1499)), None);
    assert_eq!(
        turns.poll(last_voice + Duration::from_millis(1500)),
        Some(Decision::Resume)
    );
    assert!(!turns.is_paused());
    // The caller's voice ended at its last frame: the voice-to-voice clock starts there.
    assert_eq!(turns.take_caller_ended(), Some(last_voice));
    assert_eq!(turns.take_caller_ended(), None);
}

/// Voice coming back during the wait cancels the deadline until it stops again.
#[test]
fn voice_again_during_the_wait_moves_the_deadline() {
    let start = Instant::now();
    let mut turns = Turns::new(BargeInMode::Words, &settings(250, 1000));
    feed(&mut turns, start, 300, true, true);
    feed(
        &mut turns,
        start + Duration::from_millis(300),
        400,
        false,
        true,
    );
    assert!(turns.deadline().is_some());
    let again = start + Duration::from_millis(700);
    feed(&mut turns, again, 200, true, true);
    assert_eq!(turns.deadline(), None);
    feed(
        &mut turns,
        again + Duration::from_millis(192),
        200,
        false,
        true,
    );
    // The voice's last frame came at 192 ms (verdicts every 16 ms).
    assert_eq!(
        turns.deadline(),
        Some(again + Duration::from_millis(192) + Duration::from_millis(1000))
    );
}

/// Gaps between words (under [`VOICE_GAP`]) do not end a voice; the onset stays.
#[test]
fn gaps_between_words_keep_one_voice() {
    let start = Instant::now();
    let mut turns = Turns::new(BargeInMode::Words, &settings(250, 1500));
    feed(&mut turns, start, 160, true, false);
    feed(
        &mut turns,
        start + Duration::from_millis(160),
        96,
        false,
        false,
    );
    assert_eq!(turns.onset(), Some(start));
    let decisions = feed(
        &mut turns,
        start + Duration::from_millis(256),
        64,
        true,
        true,
    );
    assert_eq!(
        decisions.first().map(|d| d.1),
        Some(Decision::Pause { onset: start })
    );
}

/// Qualifying words end the pause: the caller's voice goes on, no resume comes.
#[test]
fn pause_over_keeps_the_voice_and_drops_the_deadline() {
    let start = Instant::now();
    let mut turns = Turns::new(BargeInMode::Words, &settings(250, 1500));
    feed(&mut turns, start, 300, true, true);
    turns.pause_over();
    assert!(!turns.is_paused());
    assert_eq!(turns.onset(), Some(start));
    assert_eq!(turns.poll(start + Duration::from_secs(10)), None);
}

/// A frame just under the threshold followed by a voiced one dates the voice from the
/// first (the detector's context lag); one followed by silence starts nothing.
#[test]
fn a_near_threshold_frame_before_a_voice_is_its_onset() {
    let start = Instant::now();
    let mut turns = Turns::new(BargeInMode::Words, &settings(250, 1500));
    let ms = |n| start + Duration::from_millis(n);
    assert_eq!(turns.on_verdict(ms(16), 0.4, true), None);
    assert_eq!(turns.on_verdict(ms(32), 0.1, true), None);
    assert_eq!(
        turns.onset(),
        None,
        "a lone near-threshold frame is nothing"
    );
    assert_eq!(turns.on_verdict(ms(48), 0.4, true), None);
    assert_eq!(turns.on_verdict(ms(64), 0.9, true), None);
    assert_eq!(
        turns.onset(),
        Some(ms(32)),
        "dated from the near-threshold frame's start"
    );
}
