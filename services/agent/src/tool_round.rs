//! One round of tenant tool calls inside an answer (ARCHITECTURE §2b).
//!
//! Consumes the tenant tool calls the model's stream ended with; produces a `tool_call`
//! event per call, says what the model had begun plus the tool's filler phrase when the
//! endpoint is slow, sends the calls at once (in parallel, [`crate::tools`]), then a
//! `tool_result` event per call and the messages the next model request carries. A
//! barge-in while the tools run drops the answer; a tool that failed twice ends the turn
//! in the fallback phrase. State: none beyond the answer's [`Speaker`].

use std::time::Duration;

use futures::future::join_all;
use sb_runtime::{Emitter, StageError, Tenant};
use sb_schemas::{Body, ToolCall, ToolOutcome, ToolResult};

use crate::Agent;
use crate::openai::{CalledTool, Message};
use crate::speaker::Speaker;
use crate::tools::{TenantTools, ToolAnswer, ToolContext};

/// How long a tool may take before its filler phrase is said: a fast tool is answered
/// without one.
pub const FILLER_AFTER: Duration = Duration::from_millis(300);

/// How many rounds of tools one answer may take (a result can ask for another tool).
pub const MAX_TOOL_ROUNDS: u32 = 3;

/// How a round ended.
pub(crate) enum Round {
    /// Every tool answered: the assistant's calls and one `tool` message per result.
    Answered(Vec<Message>),
    /// The caller barged in (or a newer turn started) while the tools ran.
    Stopped,
    /// A waited-for tool failed twice; the reason is a fallback label.
    Failed(&'static str),
}

impl Agent {
    /// Runs `calls` (tenant tools, all of them) as round `round` of the answer, whose
    /// sentences start at `said_from` (what the model said in this round goes back with
    /// its calls).
    pub(crate) async fn tool_round(
        &self,
        tenant: &Tenant,
        calls: &[CalledTool],
        (round, said_from): (u32, usize),
        context: &ToolContext,
        speaker: &mut Speaker,
        out: &mut Emitter,
    ) -> Result<Round, StageError> {
        let Some(tools) = &self.tools else {
            return Ok(Round::Failed("tool_unavailable"));
        };
        // The calls are recorded the moment the model made them.
        let mut ids = Vec::with_capacity(calls.len());
        for call in calls {
            let event = out.event(Body::ToolCall(ToolCall {
                id: call.id.clone(),
                name: call.name.clone(),
                arguments: call.arguments.clone(),
                round,
            }));
            ids.push(event.id.to_string());
            out.emit(event).await?;
        }
        // What the model said before calling is heard first ("Let me check.").
        speaker.interlude(None, out).await?;
        if !speaker.wanted(out).await {
            return Ok(Round::Stopped);
        }
        let filler = calls
            .iter()
            .filter_map(|c| TenantTools::find(tenant, &c.name))
            .filter(|t| t.wait)
            .find_map(|t| t.filler.as_deref());
        let requests = join_all(calls.iter().zip(&ids).map(|(call, id)| async move {
            match TenantTools::find(tenant, &call.name) {
                Some(tool) => tools.call(tenant, tool, id, &call.arguments, context).await,
                None => ToolAnswer::refused(),
            }
        }));
        let answers = with_filler(requests, filler, speaker, out).await?;
        for (call, answer) in calls.iter().zip(&answers) {
            tracing::info!(
                tool = %call.name,
                outcome = answer.outcome.as_str(),
                status = answer.status,
                elapsed_ms = answer.elapsed.as_millis() as u64,
                "tool answered"
            );
            let event = out.event(Body::ToolResult(ToolResult {
                id: call.id.clone(),
                name: call.name.clone(),
                outcome: answer.outcome,
                status: answer.status,
                result: answer.result.clone(),
                attempts: answer.attempts,
                elapsed_ms: answer.elapsed.as_millis() as u64,
            }));
            out.emit(event).await?;
        }
        if !speaker.wanted(out).await {
            return Ok(Round::Stopped);
        }
        if answers
            .iter()
            .any(|a| !matches!(a.outcome, ToolOutcome::Ok | ToolOutcome::Sent))
        {
            return Ok(Round::Failed("tool_failed"));
        }
        let content = speaker.sentences()[said_from.min(speaker.sentences().len())..].join(" ");
        let mut messages = vec![Message::calling(content, calls)];
        messages.extend(
            calls
                .iter()
                .zip(&answers)
                .map(|(call, answer)| Message::tool_result(&call.id, answer.for_model())),
        );
        Ok(Round::Answered(messages))
    }
}

/// Waits for the tools; if they take longer than [`FILLER_AFTER`], says `filler` while
/// they finish.
async fn with_filler<F: std::future::Future<Output = Vec<ToolAnswer>>>(
    requests: F,
    filler: Option<&str>,
    speaker: &mut Speaker,
    out: &mut Emitter,
) -> Result<Vec<ToolAnswer>, StageError> {
    let mut requests = std::pin::pin!(requests);
    let Some(filler) = filler else {
        return Ok(requests.await);
    };
    tokio::select! {
        answers = &mut requests => Ok(answers),
        () = tokio::time::sleep(FILLER_AFTER) => {
            let (answers, said) = tokio::join!(requests, speaker.interlude(Some(filler), out));
            said?;
            Ok(answers)
        }
    }
}
