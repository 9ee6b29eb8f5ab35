//! The turns the ingress starts without words: a keypad entry, a silence, the call's
//! length (ARCHITECTURE §2e).
//!
//! Consumes `keypad`, `silence` and `max_duration` events, each the first event of a new
//! turn the ingress allocated; produces that turn's `sentence` events, the user and
//! assistant turns in the session and, for a transfer or a goodbye, the pending
//! [`Action`] (carried out by `played`, so the caller hears the sentence first). Digits
//! reach the model as the caller's words through the transcript's path ([`Agent::reply`]);
//! a key bound to an action (`[tenant.keypad.actions]`) transfers the call or says the last
//! answer again; a silence says the tenant's next prompt and, past the prompts, like the
//! call's length, the goodbye, then hangs up. Skips (counted) as for a transcript: a turn
//! interrupted or superseded; an answered turn's sentences are said again (a
//! redelivery). State: the session in Redis.

use std::time::Duration;

use sb_runtime::redis::session::{Role, Session, Turn, keys_pressed};
use sb_runtime::tenants::KeyAction;
use sb_runtime::{Emitter, StageError, Tenant};
use sb_schemas::{Envelope, Keypad, KeypadEnd, MaxDuration, Silence};
use tokio::time::Instant;

use crate::actions::Action;
use crate::answer::to_answer;
use crate::speaker::{Batching, Speaker};
use crate::{Agent, redis_retry};

/// What the agent says on a turn of its own, and what follows once it played.
struct Said {
    lines: Vec<String>,
    then: Then,
}

enum Then {
    Nothing,
    HangUp,
    Transfer { to: String },
}

impl Agent {
    /// `keypad`: an action key's action, or the digits as the caller's words.
    pub(crate) async fn keypad(
        &self,
        input: &Envelope,
        keypad: &Keypad,
        tenant: &Tenant,
        out: &mut Emitter,
    ) -> Result<(), StageError> {
        let received = Instant::now();
        let digits = keypad.digits.trim();
        if digits.is_empty() {
            out.skip("empty_keypad");
            return Ok(());
        }
        let session = self.session(&input.call_sid).await?;
        let text = keys_pressed(digits);
        let action = match keypad.ended_by {
            KeypadEnd::Action => tenant.keypad.actions.get(digits),
            _ => None,
        };
        // A key whose action cannot be carried out is an ordinary key.
        let said = match action {
            Some(KeyAction::Transfer) => self.transfer(tenant),
            Some(KeyAction::Repeat) => last_answer(&session, input.turn).map(|lines| Said {
                lines,
                then: Then::Nothing,
            }),
            None => None,
        };
        match said {
            Some(said) => self.say(input, &session, Some(text), said, out).await,
            None => {
                self.reply(input, &text, &session, tenant, received, out)
                    .await
            }
        }
    }

    /// `silence`: the tenant's next prompt; past the prompts, the goodbye and a hang-up.
    pub(crate) async fn silence(
        &self,
        input: &Envelope,
        silence: &Silence,
        tenant: &Tenant,
        out: &mut Emitter,
    ) -> Result<(), StageError> {
        let prompts = &tenant.turn_taking.silence_prompts;
        let index = usize::try_from(silence.count.max(1) - 1).unwrap_or(usize::MAX);
        let said = match prompts.get(index) {
            Some(prompt) => Said {
                lines: vec![prompt.clone()],
                then: Then::Nothing,
            },
            None => self.goodbye(tenant),
        };
        tracing::info!(
            count = silence.count,
            after_ms = silence.after_ms,
            "caller silent"
        );
        let session = self.session(&input.call_sid).await?;
        self.say(input, &session, None, said, out).await
    }

    /// `max_duration`: the goodbye, then a hang-up.
    pub(crate) async fn max_duration(
        &self,
        input: &Envelope,
        max: &MaxDuration,
        tenant: &Tenant,
        out: &mut Emitter,
    ) -> Result<(), StageError> {
        tracing::info!(limit_secs = max.limit_secs, "call too long");
        let session = self.session(&input.call_sid).await?;
        self.say(input, &session, None, self.goodbye(tenant), out)
            .await
    }

    /// The transfer key's sentence and transfer; `None` when the call cannot be transferred
    /// (no transfer number, no telephony).
    fn transfer(&self, tenant: &Tenant) -> Option<Said> {
        let to = tenant.transfer_number.clone()?;
        self.telephony.as_ref()?;
        Some(Said {
            lines: vec![self.config.transfer_phrase.clone()],
            then: Then::Transfer { to },
        })
    }

    /// The tenant's goodbye (the agent's own for a tenant that has none), then a hang-up.
    fn goodbye(&self, tenant: &Tenant) -> Said {
        let goodbye = &tenant.turn_taking.goodbye;
        let goodbye = match goodbye.trim().is_empty() {
            true => &self.config.goodbye_phrase,
            false => goodbye,
        };
        Said {
            lines: vec![goodbye.clone()],
            then: Then::HangUp,
        }
    }

    /// Says `said` as turn `input.turn` (after `user`, the caller's input in words, is
    /// stored), its action pending until its last sentence played.
    async fn say(
        &self,
        input: &Envelope,
        session: &Session,
        user: Option<String>,
        said: Said,
        out: &mut Emitter,
    ) -> Result<(), StageError> {
        let (sid, turn) = (&input.call_sid, input.turn);
        if !to_answer(session, turn, out).await? {
            return Ok(());
        }
        let asked = session
            .turns
            .iter()
            .any(|t| t.role == Role::User && t.turn == turn);
        if let Some(text) = user.filter(|_| !asked) {
            let user = Turn {
                role: Role::User,
                text,
                turn,
                interrupted: false,
            };
            self.sessions
                .push_turn(sid, &user)
                .await
                .map_err(redis_retry)?;
        }
        let batching = Batching {
            deltas: self.config.token_batch,
            wait: Duration::from_millis(self.config.token_batch_ms),
        };
        let mut speaker = Speaker::new(turn, 0, batching);
        let sentence = speaker.last_index(&said.lines);
        let action = match said.then {
            Then::Nothing => None,
            Then::HangUp => Some(Action::HangUp { turn, sentence }),
            Then::Transfer { to } => Some(Action::Transfer { turn, sentence, to }),
        };
        if let Some(action) = action {
            // Stored before the sentence exists, so its `played` always finds it.
            tracing::info!(action = action.name(), "action pending until played");
            self.sessions
                .set_action(sid, Some(&action.encode()))
                .await
                .map_err(redis_retry)?;
        }
        speaker.finish(said.lines, out).await?;
        let assistant = Turn {
            role: Role::Assistant,
            text: speaker.sentences().join("\n"),
            turn,
            interrupted: speaker.stopped().is_some(),
        };
        self.sessions
            .push_turn(sid, &assistant)
            .await
            .map_err(redis_retry)
    }
}

/// The sentences of the last answer before `turn` that said something (one per line).
fn last_answer(session: &Session, turn: u32) -> Option<Vec<String>> {
    session
        .turns
        .iter()
        .rev()
        .filter(|t| t.role == Role::Assistant && t.turn < turn)
        .map(|t| {
            t.text
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .map(str::to_owned)
                .collect::<Vec<_>>()
        })
        .find(|lines| !lines.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The last answer said before the turn, line by line; answers of this or later turns,
    /// caller turns and empty answers do not count.
    #[test]
    fn the_last_answer_is_the_latest_non_empty_one_before_the_turn() {
        let turn = |role, text: &str, turn| Turn {
            role,
            text: text.into(),
            turn,
            interrupted: false,
        };
        let session = Session {
            turns: vec![
                turn(Role::Assistant, "Hello.", 0),
                turn(Role::User, "Hours?", 1),
                turn(Role::Assistant, "Nine.\nTo five.", 1),
                turn(Role::User, "Thanks", 2),
                turn(Role::Assistant, "\n", 2),
                turn(Role::Assistant, "Later.", 4),
            ],
            ..Session::default()
        };
        let lines = |l: &[&str]| Some(l.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>());
        assert_eq!(last_answer(&session, 3), lines(&["Nine.", "To five."]));
        assert_eq!(last_answer(&session, 1), lines(&["Hello."]));
        assert_eq!(last_answer(&session, 0), None);
    }
}
