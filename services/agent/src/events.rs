//! The agent's other inputs: `start` (the greeting), `answered_by` (an outbound call's
//! greeting, or its voicemail and hang-up), `bargein` (keep what was heard), `played`
//! (carry out a pending action), `end` (shorten the session).
//!
//! Consumes those events; produces turn 0's sentence (greeting or voicemail), session updates and
//! Twilio REST calls. Each handler is idempotent, so a redelivery changes nothing twice.
//! State: the session in Redis.

use std::time::Duration;

use sb_runtime::redis::session::{Role, Session, Turn};
use sb_runtime::{Emitter, StageError, Tenant};
use sb_schemas::{AnsweredBy, BargeIn, Body, Envelope, Played, Sentence};

use crate::actions::Action;
use crate::{Agent, redis_retry};

/// A barge-in that arrives before its answer was stored is retried this often, this far
/// apart (the answer's handler stores it as soon as it notices the barge-in).
const BARGEIN_ATTEMPTS: u64 = 4;
const BARGEIN_RETRY: Duration = Duration::from_millis(250);

impl Agent {
    /// `start`: the greeting as turn 0's only sentence: the tenant's, or an outbound
    /// campaign's. An outbound call with machine detection waits for `answered_by` instead
    /// (a machine gets the voicemail, not the greeting).
    pub(crate) async fn greet(
        &self,
        input: &Envelope,
        tenant: &Tenant,
        out: &mut Emitter,
    ) -> Result<(), StageError> {
        let session = self
            .sessions
            .load(&input.call_sid)
            .await
            .map_err(redis_retry)?;
        let session = session.unwrap_or_default();
        if session.outbound.as_ref().is_some_and(|o| o.amd) {
            out.skip("awaiting_answered_by");
            return Ok(());
        }
        let text = greeting_of(&session, tenant);
        self.say_first(input, &session, text, None, out).await
    }

    /// `answered_by` (outbound calls with machine detection): a person gets the greeting;
    /// a machine gets the campaign's voicemail message, then the call is hung up once it
    /// played (a fax: hung up at once).
    pub(crate) async fn answered_by(
        &self,
        input: &Envelope,
        answered: &AnsweredBy,
        tenant: &Tenant,
        out: &mut Emitter,
    ) -> Result<(), StageError> {
        let session = self
            .sessions
            .load(&input.call_sid)
            .await
            .map_err(redis_retry)?;
        let session = session.unwrap_or_default();
        if !answered.machine {
            let text = greeting_of(&session, tenant);
            return self.say_first(input, &session, text, None, out).await;
        }
        if answered.voicemail.trim().is_empty() {
            let Some(telephony) = &self.telephony else {
                tracing::error!("no telephony configured; a machine's call is left to end itself");
                return Ok(());
            };
            if let Err(error) = telephony.hang_up(&input.call_sid).await {
                tracing::warn!(%error, "hanging up on a machine failed");
            }
            return Ok(());
        }
        let hang_up = Action::HangUp {
            turn: 0,
            sentence: 0,
        };
        let text = answered.voicemail.clone();
        self.say_first(input, &session, text, Some(hang_up), out)
            .await
    }

    /// Turn 0's one sentence (a greeting or a voicemail), once per call, unless the caller
    /// already interrupted or spoke; `then` is carried out once it played.
    async fn say_first(
        &self,
        input: &Envelope,
        session: &Session,
        text: String,
        then: Option<Action>,
        out: &mut Emitter,
    ) -> Result<(), StageError> {
        let sid = &input.call_sid;
        if session
            .turns
            .iter()
            .any(|t| t.role == Role::Assistant && t.turn == 0)
        {
            out.skip("already_greeted");
            return Ok(());
        }
        // Interrupted, or the caller already started a turn of their own.
        if let Some(stale) = session.progress().stale(0) {
            out.skip(stale.as_str());
            return Ok(());
        }
        if let Some(action) = &then {
            self.sessions
                .set_action(sid, Some(&action.encode()))
                .await
                .map_err(redis_retry)?;
        }
        let mut event = out.event(Body::Sentence(Sentence {
            index: 0,
            text: text.clone(),
            last: true,
            fallback: false,
        }));
        event.turn = 0;
        out.emit(event).await?;
        let first = Turn {
            role: Role::Assistant,
            text,
            turn: 0,
            interrupted: false,
        };
        self.sessions
            .push_turn(sid, &first)
            .await
            .map_err(redis_retry)
    }

    /// `bargein`: the interrupted answer keeps only what the caller heard: the whole
    /// sentences, then the words of the cut one ([`sb_runtime::heard`]).
    pub(crate) async fn barged_in(
        &self,
        input: &Envelope,
        bargein: &BargeIn,
        out: &mut Emitter,
    ) -> Result<(), StageError> {
        let sid = &input.call_sid;
        let Some(session) = self.sessions.load(sid).await.map_err(redis_retry)? else {
            out.skip("no_session");
            return Ok(());
        };
        let answer = session
            .turns
            .iter()
            .rev()
            .find(|t| t.role == Role::Assistant && t.turn == input.turn);
        let Some(answer) = answer else {
            if out.delivered() < BARGEIN_ATTEMPTS {
                return Err(StageError::retry_after(
                    "answer_pending",
                    "the interrupted answer is not stored yet",
                    BARGEIN_RETRY,
                ));
            }
            out.skip("bargein_answer_missing");
            return Ok(());
        };
        let heard = bargein.sentences_heard;
        let kept = sb_runtime::heard::kept_answer(&answer.text, heard, bargein.cut);
        let found = self
            .sessions
            .truncate_turn(sid, input.turn, &kept)
            .await
            .map_err(redis_retry)?;
        if !found {
            out.skip("bargein_answer_missing");
        }
        tracing::info!(heard, kept = kept.len(), "interrupted answer truncated");
        Ok(())
    }

    /// `played`: if a pending hang-up or transfer waited for this sentence, do it now.
    pub(crate) async fn played(&self, input: &Envelope, played: &Played) -> Result<(), StageError> {
        let sid = &input.call_sid;
        let Some(raw) = self.sessions.action(sid).await.map_err(redis_retry)? else {
            return Ok(());
        };
        let Some(action) = Action::decode(&raw) else {
            tracing::warn!("unreadable pending action dropped");
            return self.clear_action(input).await;
        };
        if !action.due(input.turn, played.sentence) {
            return Ok(());
        }
        let Some(telephony) = &self.telephony else {
            tracing::error!(
                action = action.name(),
                "no telephony configured; action dropped"
            );
            return self.clear_action(input).await;
        };
        let result = match &action {
            Action::HangUp { .. } => telephony.hang_up(sid).await,
            Action::Transfer { to, .. } => telephony.transfer(sid, to).await,
        };
        match result {
            Ok(()) => {
                tracing::info!(action = action.name(), "call updated");
                self.clear_action(input).await
            }
            Err(error) if error.kind() == "status_4xx" || error.kind() == "unconfigured" => {
                tracing::warn!(action = action.name(), %error, "action refused; dropped");
                self.clear_action(input).await
            }
            Err(error) => Err(StageError::retry("telephony", error)),
        }
    }

    async fn clear_action(&self, input: &Envelope) -> Result<(), StageError> {
        self.sessions
            .set_action(&input.call_sid, None)
            .await
            .map_err(redis_retry)
    }

    /// `end`: keep the session a little longer for late events, then let it expire.
    pub(crate) async fn ended(&self, input: &Envelope) -> Result<(), StageError> {
        let keep = Duration::from_secs(self.config.ended_session_ttl_secs);
        self.sessions
            .end(&input.call_sid, keep)
            .await
            .map_err(redis_retry)
    }
}

/// The greeting of a call: an outbound campaign's (variables filled in) or the tenant's.
fn greeting_of(session: &Session, tenant: &Tenant) -> String {
    session
        .outbound
        .as_ref()
        .and_then(|o| o.greeting.clone())
        .unwrap_or_else(|| tenant.greeting.clone())
}
