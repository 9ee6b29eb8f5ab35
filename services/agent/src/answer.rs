//! One final transcript → one spoken answer.
//!
//! Consumes a `transcript` event (and, through [`Agent::reply`], a keypad entry put in
//! words: `crate::prompts`; through [`Agent::generate`], a preflight: `crate::preflight`);
//! produces the answer's `token` and `sentence` events (through [`Speaker`]), the user and
//! assistant turns in the session, and, when the model asks to end or transfer the call,
//! the pending action. A transcript whose preflight answers it produces nothing here. Skips (counted): empty text, a
//! stale STT owner's transcript, a turn already interrupted or superseded, a turn already
//! answered (redelivery). LLM failures, timeouts and a full queue end in the tenant's
//! fallback phrase now, rather than a retried delivery later: the caller is waiting on the
//! line. State: the session in Redis.

use std::time::Duration;

use futures::{FutureExt as _, StreamExt as _};
use sb_runtime::metrics::Metric;
use sb_runtime::redis::session::{Role, Session, Turn};
use sb_runtime::{Emitter, StageError, Tenant};
use sb_schemas::{Body, CallSid, Envelope, Sentence, Transcript};
use tokio::time::Instant;

use crate::actions::{self, Action, Requested};
use crate::limits::LlmPermit;
use crate::openai::{CalledTool, ChatRequest, LlmError, LlmEvent, LlmStream, Message};
use crate::speaker::{Batching, Speaker};
use crate::tool_round::{MAX_TOOL_ROUNDS, Round};
use crate::tools::{TenantTools, ToolContext};
use crate::{Agent, redis_retry};

/// One answer to speak: the caller's words `text` as turn `input.turn`.
pub(crate) struct Ask<'a> {
    pub(crate) input: &'a Envelope,
    pub(crate) text: &'a str,
    pub(crate) session: &'a Session,
    pub(crate) tenant: &'a Tenant,
    /// When the input arrived (the retry budget runs from it).
    pub(crate) received: Instant,
    /// Started on a preflight: nothing is stored, and tools wait for the transcript.
    pub(crate) preflight: bool,
}

/// How the LLM part of an answer ended.
enum Generated {
    /// The stream finished; these tool calls came with it.
    Done { calls: Vec<CalledTool> },
    /// The turn went stale while speaking.
    Stopped,
    /// No (complete) answer: the reason is a metric label.
    Failed { reason: &'static str },
}

impl Agent {
    /// `transcript`: the caller's words, answered by the model, unless a preflight of the
    /// same turn (the same words, as the stt decided) answers it already.
    pub(crate) async fn answer(
        &self,
        input: &Envelope,
        transcript: &Transcript,
        tenant: &Tenant,
        out: &mut Emitter,
    ) -> Result<(), StageError> {
        let received = Instant::now();
        let text = transcript.text.trim();
        if text.is_empty() {
            out.skip("empty_transcript");
            return Ok(());
        }
        let session = self.session(&input.call_sid).await?;
        if transcript.epoch < session.stt_epoch {
            out.skip("stale_stt_epoch");
            return Ok(());
        }
        if tenant.turn_taking.preemptive
            && self.confirm_preflight(input, text, &session, out).await?
        {
            return Ok(());
        }
        self.reply(input, text, &session, tenant, received, out)
            .await
    }

    /// The call's session (empty if it was lost: the answer goes on without history).
    pub(crate) async fn session(&self, sid: &CallSid) -> Result<Session, StageError> {
        let session = self.sessions.load(sid).await.map_err(redis_retry)?;
        Ok(session.unwrap_or_default())
    }

    /// The caller's words `text` (a transcript's, or a keypad entry put in words) as
    /// turn `input.turn`, answered by the model; `received`: when the input arrived (the
    /// retry budget runs from it). The user turn is stored while the request goes out, the
    /// answer once it is said.
    pub(crate) async fn reply(
        &self,
        input: &Envelope,
        text: &str,
        session: &Session,
        tenant: &Tenant,
        received: Instant,
        out: &mut Emitter,
    ) -> Result<(), StageError> {
        if !to_answer(session, input.turn, out).await? {
            return Ok(());
        }
        let ask = Ask {
            input,
            text,
            session,
            tenant,
            received,
            preflight: false,
        };
        let assistant = self.generate(&ask, out).await?;
        self.sessions
            .push_turn(&input.call_sid, &assistant)
            .await
            .map_err(redis_retry)
    }

    /// Speaks the model's answer to `ask` and returns it as the assistant turn (one line
    /// per sentence; interrupted when the turn went stale). An ordinary answer stores the
    /// user turn while the request goes out (one round trip off the critical path; both
    /// finish before anything is said); a preflight stores nothing.
    pub(crate) async fn generate(
        &self,
        ask: &Ask<'_>,
        out: &mut Emitter,
    ) -> Result<Turn, StageError> {
        let (session, tenant, text) = (ask.session, ask.tenant, ask.text);
        let (sid, turn) = (&ask.input.call_sid, ask.input.turn);
        let stored = session
            .turns
            .iter()
            .any(|t| t.role == Role::User && t.turn == turn);
        // An outbound campaign call answers with the campaign's prompt, filled in per contact.
        let prompt = session
            .outbound
            .as_ref()
            .and_then(|o| o.prompt.clone())
            .unwrap_or_else(|| tenant.system_prompt.clone());
        let mut messages = vec![Message::new("system", prompt)];
        messages.extend(session.turns.iter().filter_map(history_message));
        if !stored {
            messages.push(Message::new("user", text));
        }
        let user = (!stored && !ask.preflight).then(|| Turn {
            role: Role::User,
            text: text.to_owned(),
            turn,
            interrupted: false,
        });
        let mut request = ChatRequest {
            model: tenant.llm_model.clone(),
            messages,
            max_completion_tokens: self.config.llm_max_completion_tokens,
            temperature: self.config.llm_temperature,
            tools: actions::tools(tenant, self.telephony.is_some()),
        };
        let push = async {
            match &user {
                Some(user) => self.sessions.push_turn(sid, user).await,
                None => Ok(()),
            }
        };
        let (pushed, opened) = tokio::join!(push, self.open(tenant, &request, ask.received));
        pushed.map_err(redis_retry)?;
        let batching = Batching {
            deltas: self.config.token_batch,
            wait: Duration::from_millis(self.config.token_batch_ms),
        };
        let min_first = self.config.min_first_sentence_chars;
        let mut speaker = Speaker::new(turn, min_first, batching)
            .with_sentence_ends(&tenant.language.sentence_ends);
        let generated = match opened {
            Ok((permit, stream)) => speak(permit, stream, &mut speaker, out).await?,
            Err(reason) => Generated::Failed { reason },
        };
        let generated = self
            .run_tools(generated, ask, &mut request, &mut speaker, out)
            .await?;
        self.conclude(generated, tenant, sid, &mut speaker, out)
            .await?;
        Ok(Turn {
            role: Role::Assistant,
            // One line per sentence, so a barge-in can keep exactly the sentences heard.
            text: speaker.sentences().join("\n"),
            turn,
            interrupted: speaker.stopped().is_some(),
        })
    }

    /// Runs the tenant tools the model asked for, round after round, each round's results
    /// going back to the model, until an answer asks for none (the built-in calls of every
    /// round are kept for [`Self::conclude`]).
    /// A preflight's tools wait for its transcript first: a tool may act (book, send), and
    /// only the caller's confirmed words may make it.
    async fn run_tools(
        &self,
        mut generated: Generated,
        ask: &Ask<'_>,
        request: &mut ChatRequest,
        speaker: &mut Speaker,
        out: &mut Emitter,
    ) -> Result<Generated, StageError> {
        let tenant = ask.tenant;
        let mut builtin = Vec::new();
        let mut round = 0;
        // Where this round's sentences start (the model's words in it go back with its calls).
        let mut said_from = 0;
        loop {
            let Generated::Done { calls } = &mut generated else {
                return Ok(generated);
            };
            let (own, rest): (Vec<_>, Vec<_>) = std::mem::take(calls)
                .into_iter()
                .partition(|c| TenantTools::find(tenant, &c.name).is_some());
            builtin.extend(rest);
            if own.is_empty() {
                return Ok(Generated::Done { calls: builtin });
            }
            if round == MAX_TOOL_ROUNDS {
                tracing::warn!(rounds = round, "the model kept calling tools");
                return Ok(Generated::Failed {
                    reason: "tool_rounds",
                });
            }
            if ask.preflight && round == 0 && !self.preflight_confirmed(ask.input, out).await? {
                return Ok(Generated::Stopped);
            }
            let context = tool_context(ask.input, ask.session);
            match self
                .tool_round(tenant, &own, (round, said_from), &context, speaker, out)
                .await?
            {
                Round::Stopped => return Ok(Generated::Stopped),
                Round::Failed(reason) => return Ok(Generated::Failed { reason }),
                Round::Answered(messages) => request.messages.extend(messages),
            }
            round += 1;
            said_from = speaker.sentences().len();
            generated = match self.open(tenant, request, Instant::now()).await {
                Ok((permit, stream)) => speak(permit, stream, speaker, out).await?,
                Err(reason) => Generated::Failed { reason },
            };
        }
    }

    /// Ends the answer: the rest of the text, the tool's phrase and pending action, or the
    /// fallback phrase.
    async fn conclude(
        &self,
        generated: Generated,
        tenant: &Tenant,
        sid: &CallSid,
        speaker: &mut Speaker,
        out: &mut Emitter,
    ) -> Result<(), StageError> {
        let calls = match generated {
            Generated::Stopped => return Ok(()),
            Generated::Failed { reason } => {
                out.fallback(reason);
                return speaker.fail(&tenant.fallback_phrase, out).await;
            }
            Generated::Done { calls } => calls,
        };
        let requested = actions::requested(&calls, tenant, self.telephony.is_some());
        let Some(requested) = requested else {
            if !speaker.has_spoken() {
                out.fallback("empty_answer");
                return speaker.fail(&tenant.fallback_phrase, out).await;
            }
            let finals = speaker.finals(None);
            return speaker.finish(finals, out).await;
        };
        let phrase = match &requested {
            Requested::EndCall => &self.config.goodbye_phrase,
            Requested::Transfer { .. } => &self.config.transfer_phrase,
        };
        // The model's own words, if any, are the goodbye.
        let extra = (!speaker.has_spoken()).then_some(phrase.as_str());
        let finals = speaker.finals(extra);
        let (turn, sentence) = (speaker.turn(), speaker.last_index(&finals));
        let action = match requested {
            Requested::EndCall => Action::HangUp { turn, sentence },
            Requested::Transfer { to } => Action::Transfer { turn, sentence, to },
        };
        // Stored before the sentence exists, so its `played` always finds it.
        tracing::info!(action = action.name(), "action pending until played");
        self.sessions
            .set_action(sid, Some(&action.encode()))
            .await
            .map_err(redis_retry)?;
        speaker.finish(finals, out).await
    }

    /// Waits for the permits and opens the stream, retrying within the budget; the error is
    /// the fallback's reason.
    async fn open(
        &self,
        tenant: &Tenant,
        request: &ChatRequest,
        received: Instant,
    ) -> Result<(LlmPermit, LlmStream), &'static str> {
        let deadline = Instant::now() + self.config.queue_deadline();
        let mut permit = match self
            .limits
            .acquire_within(&tenant.id, tenant.tier.llm_concurrency, deadline)
            .await
        {
            Ok(permit) => permit,
            Err(waited) => {
                tracing::warn!(reason = waited.kind(), "no llm permit in time");
                return Err(waited.kind());
            }
        };
        let mut attempt = 0;
        loop {
            let error = match self.llm.stream(request).await {
                Ok(stream) => return Ok((permit, stream)),
                Err(error) => error,
            };
            provider_error(&error);
            let delay = match &error {
                LlmError::RateLimited { retry_after } => {
                    metrics::counter!(Metric::LlmRateLimited.name()).increment(1);
                    permit.rate_limited(*retry_after).await;
                    retry_after.unwrap_or(Duration::from_millis(200))
                }
                _ => Duration::from_millis(100 << attempt.min(4)),
            };
            let in_budget = received.elapsed() + delay <= self.config.retry_budget();
            if error.retryable() && attempt < self.config.llm_max_retries && in_budget {
                tracing::info!(%error, delay_ms = delay.as_millis() as u64, "llm retry");
                tokio::time::sleep(delay).await;
                attempt += 1;
                continue;
            }
            tracing::warn!(%error, "llm failed");
            return Err(error.kind());
        }
    }
}

/// Speaks the stream until it finishes, fails, or the turn goes stale. Text that has
/// already arrived is taken together, so a fast stream costs one barge-in check per
/// batch rather than one per delta.
async fn speak(
    permit: LlmPermit,
    mut stream: LlmStream,
    speaker: &mut Speaker,
    out: &mut Emitter,
) -> Result<Generated, StageError> {
    let mut calls = Vec::new();
    let mut next = None;
    loop {
        let event = match next.take() {
            Some(event) => event,
            None => match stream.next().await {
                Some(event) => event,
                None => return Ok(Generated::Failed { reason: "cut" }),
            },
        };
        match event {
            Ok(LlmEvent::Text(mut text)) => {
                while let Some(Some(more)) = stream.next().now_or_never() {
                    match more {
                        Ok(LlmEvent::Text(more)) => text.push_str(&more),
                        other => {
                            next = Some(other);
                            break;
                        }
                    }
                }
                speaker.text(&text, out).await?;
                if speaker.stopped().is_some() {
                    // Dropping the stream closes the connection: the provider stops too.
                    return Ok(Generated::Stopped);
                }
            }
            Ok(LlmEvent::ToolCall(call)) => calls.push(call),
            Ok(LlmEvent::Finished { .. }) => {
                permit.success();
                return Ok(Generated::Done { calls });
            }
            Err(error) => {
                provider_error(&error);
                tracing::warn!(%error, "llm stream failed");
                return Ok(Generated::Failed {
                    reason: error.kind(),
                });
            }
        }
    }
}

/// A session turn as a chat message. An interrupted answer ends in "…" (only "…" when
/// the caller heard none of it), so the model knows it was cut off; other empty turns are
/// left out.
fn history_message(turn: &Turn) -> Option<Message> {
    let text = turn.text.replace('\n', " ");
    let mut text = text.trim().to_owned();
    if turn.interrupted {
        text = format!("{text} …").trim_start().to_owned();
    }
    if text.is_empty() {
        return None;
    }
    let role = match turn.role {
        Role::User => "user",
        Role::Assistant => "assistant",
    };
    Some(Message::new(role, text))
}

/// What a tool's endpoint is told about the call: its numbers and, for a campaign call,
/// the campaign, the contact and the contact's variables.
fn tool_context(input: &Envelope, session: &Session) -> ToolContext {
    let outbound = session.outbound.as_ref();
    let variables = outbound
        .and_then(|o| o.vars.as_deref())
        .and_then(|vars| serde_json::from_str(vars).ok())
        .unwrap_or_default();
    ToolContext {
        tenant: input.tenant.as_str().to_owned(),
        call_sid: input.call_sid.as_str().to_owned(),
        turn: input.turn,
        direction: if outbound.is_some() {
            "outbound"
        } else {
            "inbound"
        },
        from: session.parties.as_ref().map(|p| p.from.clone()),
        to: session.parties.as_ref().map(|p| p.to.clone()),
        campaign: outbound.and_then(|o| o.campaign.clone()),
        contact: outbound.and_then(|o| o.contact.clone()),
        variables,
    }
}

fn provider_error(error: &LlmError) {
    metrics::counter!(Metric::ProviderErrors.name(), "provider" => "llm", "kind" => error.kind())
        .increment(1);
}

/// The checks before answering turn `turn`, whatever its input: a turn the caller
/// interrupted or a newer turn superseded is skipped (counted); a turn already answered (a
/// redelivery) says its stored answer again. `true`: answer it.
pub(crate) async fn to_answer(
    session: &Session,
    turn: u32,
    out: &mut Emitter,
) -> Result<bool, StageError> {
    if let Some(stale) = session.progress().stale(turn) {
        out.skip(stale.as_str());
        return Ok(false);
    }
    let answered = session
        .turns
        .iter()
        .find(|t| t.role == Role::Assistant && t.turn == turn);
    match answered {
        Some(answered) => repeat(answered, out).await.map(|()| false),
        None => Ok(true),
    }
}

/// A redelivery of a turn already answered: the answer is in the session, but its
/// sentences may not all be stored (their publish acks timed out, e.g. while JetStream
/// elected a new leader). Say them again, one line per sentence, under the ids the first
/// delivery used: JetStream keeps one copy of each, and stores the ones it lost.
pub(crate) async fn repeat(answered: &Turn, out: &mut Emitter) -> Result<(), StageError> {
    let lines: Vec<&str> = answered
        .text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .collect();
    for (index, text) in lines.iter().enumerate() {
        let event = out.event(Body::Sentence(Sentence {
            index: u32::try_from(index).unwrap_or(u32::MAX),
            text: (*text).to_owned(),
            last: index + 1 == lines.len(),
            fallback: false,
        }));
        out.emit(event).await?;
    }
    out.skip("answer_repeated");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (stored turn, message the model sees): one line per sentence becomes one line of
    /// text; an interrupted answer is marked as cut off; empty turns are dropped.
    #[test]
    fn history_table() {
        let turn = |role, text: &str, interrupted| Turn {
            role,
            text: text.into(),
            turn: 1,
            interrupted,
        };
        let cases = [
            (
                turn(Role::User, "What time?", false),
                Some(("user", "What time?")),
            ),
            (
                turn(Role::Assistant, "Nine.\nSee you.", false),
                Some(("assistant", "Nine. See you.")),
            ),
            (
                turn(Role::Assistant, "Nine.", true),
                Some(("assistant", "Nine. …")),
            ),
            (turn(Role::Assistant, "", true), Some(("assistant", "…"))),
            (turn(Role::Assistant, "\n", false), None),
        ];
        for (stored, expected) in cases {
            let got = history_message(&stored);
            let got = got.as_ref().map(|m| (m.role, m.content.as_str()));
            assert_eq!(got, expected, "{stored:?}");
        }
    }
}
