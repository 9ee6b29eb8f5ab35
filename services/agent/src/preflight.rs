//! Answers started before the final transcript (ARCHITECTURE §2g).
//!
//! Consumes `preflight` events (a stable interim transcript on a turn of its own) and,
//! from [`Agent::answer`], the `transcript` of a turn; produces the preflight's answer
//! exactly as a transcript's (LLM request, `token` and `sentence` events on its turn),
//! while the conversation stays untouched until the transcript confirms it: the record
//! `preflight:{sid}:{turn}` holds the answer; the transcript's arrival puts the user turn
//! into the session, and whichever of "answer finished" and "transcript arrived" comes
//! second the assistant turn (`sb_runtime::redis::preflight`). A transcript that confirms a preflight is not
//! answered again; one without a preflight claims its turn and is answered as always. A
//! discarded preflight (its final differed, so the transcript came on a newer turn) stops
//! at the usual staleness checks and never reaches the session. The tenant's own tools
//! wait for the confirmation: only the caller's final words may act. State: the record in
//! Redis.

use std::time::Duration;

use sb_runtime::redis::preflight::{Confirmation, PreflightStart};
use sb_runtime::redis::session::{Role, Session, Turn};
use sb_runtime::{Emitter, StageError, Tenant};
use sb_schemas::{Envelope, Preflight};
use tokio::time::Instant;

use crate::answer::{Ask, repeat};
use crate::{Agent, redis_retry};

/// How long a preflight's tool call waits for the transcript: the final follows the stable
/// interim within the endpointing and the provider's latency, well inside this.
const CONFIRM_WAIT: Duration = Duration::from_secs(10);
/// How often the confirmation is looked for meanwhile.
const CONFIRM_POLL: Duration = Duration::from_millis(50);

impl Agent {
    /// `preflight`: the interim words answered as a transcript would be, kept aside.
    pub(crate) async fn preflight(
        &self,
        input: &Envelope,
        preflight: &Preflight,
        tenant: &Tenant,
        out: &mut Emitter,
    ) -> Result<(), StageError> {
        let received = Instant::now();
        let (sid, turn) = (&input.call_sid, input.turn);
        let text = preflight.text.trim();
        if text.is_empty() {
            out.skip("empty_transcript");
            return Ok(());
        }
        if !tenant.turn_taking.preemptive {
            out.skip("preemptive_off");
            return Ok(());
        }
        let session = self.session(sid).await?;
        if preflight.epoch < session.stt_epoch {
            out.skip("stale_stt_epoch");
            return Ok(());
        }
        if let Some(stale) = session.progress().stale(turn) {
            out.skip(stale.as_str());
            return Ok(());
        }
        match self
            .sessions
            .preflight_begin(sid, turn, text)
            .await
            .map_err(redis_retry)?
        {
            PreflightStart::Go => {}
            PreflightStart::Claimed => {
                out.skip("preflight_claimed");
                return Ok(());
            }
            PreflightStart::Done(answer) => {
                let answer = Turn {
                    role: Role::Assistant,
                    text: answer,
                    turn,
                    interrupted: false,
                };
                return repeat(&answer, out).await;
            }
        }
        let ask = Ask {
            input,
            text,
            session: &session,
            tenant,
            received,
            preflight: true,
        };
        let answer = self.generate(&ask, out).await?;
        let settled = self
            .sessions
            .preflight_finish(sid, turn, &answer)
            .await
            .map_err(redis_retry)?;
        tracing::info!(
            settled,
            interrupted = answer.interrupted,
            "preflight answered"
        );
        Ok(())
    }

    /// The transcript of `input.turn`: true when a preflight answers the turn (confirmed
    /// now: the user turn is stored, the answer once it is finished), false when the
    /// caller must answer it. A stale turn is left to the usual checks, unconfirmed.
    pub(crate) async fn confirm_preflight(
        &self,
        input: &Envelope,
        text: &str,
        session: &Session,
        out: &mut Emitter,
    ) -> Result<bool, StageError> {
        if session.progress().stale(input.turn).is_some() {
            return Ok(false);
        }
        let found = self
            .sessions
            .preflight_confirm(&input.call_sid, input.turn, text)
            .await
            .map_err(redis_retry)?;
        match found {
            Confirmation::Absent => Ok(false),
            Confirmation::Pending | Confirmation::Settled => {
                tracing::info!(
                    settled = found == Confirmation::Settled,
                    "preflight confirmed"
                );
                out.skip("preflight_confirmed");
                Ok(true)
            }
        }
    }

    /// Waits until the transcript of the preflight turn `input.turn` confirmed it (true),
    /// or the turn went stale or the wait ran out (false: the preflight stops).
    pub(crate) async fn preflight_confirmed(
        &self,
        input: &Envelope,
        out: &mut Emitter,
    ) -> Result<bool, StageError> {
        let deadline = Instant::now() + CONFIRM_WAIT;
        loop {
            let confirmed = self
                .sessions
                .preflight_confirmed(&input.call_sid, input.turn)
                .await
                .map_err(redis_retry)?;
            if confirmed {
                return Ok(true);
            }
            if !out.still_wanted().await {
                return Ok(false);
            }
            if Instant::now() >= deadline {
                out.skip("preflight_unconfirmed");
                return Ok(false);
            }
            tokio::time::sleep(CONFIRM_POLL).await;
        }
    }
}
