//! Ring 1: folding a call's events into the session they imply.

use sb_schemas::{
    BargeIn, BargeInTrigger, Body, CallSid, End, EndReason, Envelope, Sentence, TenantId,
    Transcript, Webhook,
};

use super::fold;
use crate::redis::session::{Role, Turn};

fn event(turn: u32, body: Body) -> Envelope {
    Envelope::new(
        TenantId::parse("acme").unwrap(),
        CallSid::parse("CA00000000000000000000000000000001").unwrap(),
        turn,
        body,
    )
}

fn said(turn: u32, text: &str, audio_seq: u64, epoch: u64) -> Envelope {
    event(
        turn,
        Body::Transcript(Transcript {
            epoch,
            text: text.into(),
            confidence: 0.9,
            audio_seq,
            speech_ended_at: 0,
        }),
    )
}

fn sentence(turn: u32, index: u32, text: &str, last: bool) -> Envelope {
    event(
        turn,
        Body::Sentence(Sentence {
            index,
            text: text.into(),
            last,
            fallback: false,
        }),
    )
}

fn turn(role: Role, turn: u32, text: &str, interrupted: bool) -> Turn {
    Turn {
        role,
        text: text.into(),
        turn,
        interrupted,
    }
}

#[test]
fn a_conversation_folds_into_turns_counter_and_checkpoint() {
    // Out of order, as two stages' publishes can land.
    let events = [
        sentence(0, 0, "Hello, Acme here.", true),
        sentence(1, 1, "Weekends we rest.", true),
        said(1, "When are you open?", 120, 1),
        sentence(1, 0, "Nine to five.", false),
        said(2, "And Sunday?", 340, 2),
    ];
    let folded = fold(&events);
    let r = &folded.restore;
    assert_eq!(r.tenant.as_ref().map(|t| t.as_str()), Some("acme"));
    assert_eq!((r.turn, r.bargein), (2, 0));
    assert_eq!((r.stt_epoch, r.stt_checkpoint), (2, Some(340)));
    assert_eq!(
        r.turns,
        vec![
            turn(Role::Assistant, 0, "Hello, Acme here.", false),
            turn(Role::User, 1, "When are you open?", false),
            turn(
                Role::Assistant,
                1,
                "Nine to five.\nWeekends we rest.",
                false
            ),
            turn(Role::User, 2, "And Sunday?", false),
        ]
    );
    assert!(!folded.ended);
}

#[test]
fn an_interrupted_answer_keeps_the_sentences_heard_and_raises_the_token() {
    let events = [
        said(1, "Offers?", 50, 1),
        sentence(1, 0, "Half price.", false),
        sentence(1, 1, "And free delivery.", false),
        event(
            1,
            Body::BargeIn(BargeIn {
                token: 2,
                trigger: BargeInTrigger::Speech,
                sentences_heard: 1,
                cut: None,
            }),
        ),
    ];
    let r = fold(&events).restore;
    assert_eq!(r.bargein, 2);
    assert_eq!(r.turns[1], turn(Role::Assistant, 1, "Half price.", true));
}

#[test]
fn an_answer_still_being_spoken_is_left_to_the_agent() {
    // No `last` sentence and no barge-in: the agent's redelivery answers it whole.
    let events = [said(1, "Hours?", 10, 1), sentence(1, 0, "We open", false)];
    let r = fold(&events).restore;
    assert_eq!(r.turn, 1);
    assert_eq!(r.turns, vec![turn(Role::User, 1, "Hours?", false)]);
}

#[test]
fn an_outbound_call_names_its_attempt_and_an_ended_call_says_so() {
    let events = [
        event(
            0,
            Body::Webhook(Webhook {
                account_sid: "AC1".into(),
                from: "+1".into(),
                to: "+2".into(),
                direction: "outbound-api".into(),
                call_status: "in-progress".into(),
                attempt: Some("0123456789abcdef0123456789abcdef".into()),
            }),
        ),
        event(
            0,
            Body::End(End {
                reason: EndReason::Stop,
            }),
        ),
    ];
    let folded = fold(&events);
    assert_eq!(
        folded.attempt.as_deref(),
        Some("0123456789abcdef0123456789abcdef")
    );
    assert!(folded.ended);
}

#[test]
fn no_events_fold_to_nothing() {
    let folded = fold(&[]);
    assert_eq!(folded.restore.tenant, None);
    assert_eq!(folded.restore.turns, Vec::new());
}

/// The turns the ingress starts count like a transcript's: a keypad entry is the caller's
/// turn in words (as the agent stored it), a silence or the call's length only moves the
/// counter.
#[test]
fn keypad_silence_and_max_duration_start_turns() {
    use sb_schemas::{Keypad, KeypadEnd, MaxDuration, Silence};
    let events = [
        said(1, "My order", 10, 1),
        event(
            2,
            Body::Keypad(Keypad {
                digits: "4417".into(),
                ended_by: KeypadEnd::Terminator,
            }),
        ),
        sentence(2, 0, "Order 4417 ships today.", true),
        event(
            3,
            Body::Silence(Silence {
                count: 1,
                after_ms: 8000,
            }),
        ),
    ];
    let r = fold(&events).restore;
    assert_eq!(r.turn, 3);
    assert_eq!(
        r.turns,
        vec![
            turn(Role::User, 1, "My order", false),
            turn(Role::User, 2, "The caller pressed the keys: 4417", false),
            turn(Role::Assistant, 2, "Order 4417 ships today.", false),
        ]
    );
    let longest = [event(5, Body::MaxDuration(MaxDuration { limit_secs: 600 }))];
    assert_eq!(fold(&longest).restore.turn, 5);
}

/// A preflight turn (an answer started on an interim transcript) is the caller's only once
/// a transcript of the same turn confirmed it: a discarded one (the final differed, so it
/// came on a newer turn) leaves no assistant turn, though its sentences are in the log;
/// either way the counter counts it, so no turn number repeats.
#[test]
fn a_preflight_turn_is_answered_only_when_confirmed() {
    use sb_schemas::Preflight;
    let preflight = |turn, text: &str| {
        event(
            turn,
            Body::Preflight(Preflight {
                epoch: 1,
                text: text.into(),
            }),
        )
    };
    let events = [
        preflight(1, "what are your opening hours"),
        sentence(1, 0, "Nine to five.", true),
        said(1, "What are your opening hours?", 10, 1),
        preflight(2, "and on"),
        sentence(2, 0, "On Sundays we are closed.", true),
        said(3, "And on Saturdays?", 20, 1),
        sentence(3, 0, "Ten to two.", true),
        preflight(4, "thanks"),
    ];
    let r = fold(&events).restore;
    assert_eq!(r.turn, 4);
    assert_eq!(
        r.turns,
        vec![
            turn(Role::User, 1, "What are your opening hours?", false),
            turn(Role::Assistant, 1, "Nine to five.", false),
            turn(Role::User, 3, "And on Saturdays?", false),
            turn(Role::Assistant, 3, "Ten to two.", false),
        ]
    );
}
