//! Speaking one answer: LLM text in, `token` and `sentence` events out, each only after the
//! turn was found still wanted.
//!
//! Consumes the answer's text deltas; produces `Token` events (deltas grouped, at most
//! `token_batch` per event or `token_batch_ms` old) and `Sentence` events (index 0, 1, …,
//! the final one `last: true`) the moment the [`Splitter`] completes them. Before every
//! event it asks the emitter whether the turn is still wanted (one Redis round trip: once
//! the caller interrupted this turn or a newer turn started, nothing more is emitted; the
//! emitter counts the cancellation). State: the splitter, the pending token group and the
//! sentences said so far, for one delivery.

use std::time::Duration;

use sb_runtime::state::Stale;
use sb_runtime::{Emitter, StageError};
use sb_schemas::{Body, Sentence, Token};
use tokio::time::Instant;

use crate::splitter::Splitter;

/// Grouping of token events.
#[derive(Debug, Clone, Copy)]
pub struct Batching {
    pub deltas: usize,
    pub wait: Duration,
}

pub struct Speaker {
    turn: u32,
    splitter: Splitter,
    batching: Batching,
    group: String,
    group_deltas: usize,
    group_since: Option<Instant>,
    token_index: u32,
    /// Every sentence emitted, in index order (possibly an empty closing one).
    sentences: Vec<String>,
    stopped: Option<Stale>,
}

impl Speaker {
    pub fn new(turn: u32, min_first_chars: usize, batching: Batching) -> Self {
        Self {
            turn,
            splitter: Splitter::new(min_first_chars),
            batching,
            group: String::new(),
            group_deltas: 0,
            group_since: None,
            token_index: 0,
            sentences: Vec::new(),
            stopped: None,
        }
    }

    /// Ends sentences also at `ends` (the tenant's `language.sentence_ends`).
    pub fn with_sentence_ends(mut self, ends: &[char]) -> Self {
        self.splitter = self.splitter.with_ends(ends);
        self
    }

    /// The turn being spoken.
    pub fn turn(&self) -> u32 {
        self.turn
    }

    /// Why the turn stopped, if it did.
    pub fn stopped(&self) -> Option<Stale> {
        self.stopped
    }

    /// The sentences emitted so far.
    pub fn sentences(&self) -> &[String] {
        &self.sentences
    }

    /// Whether the answer has produced anything to say (said or waiting for a boundary).
    pub fn has_spoken(&self) -> bool {
        !self.sentences.is_empty() || self.splitter.has_pending()
    }

    /// One streamed delta.
    pub async fn text(&mut self, delta: &str, out: &mut Emitter) -> Result<(), StageError> {
        if self.stopped.is_some() {
            return Ok(());
        }
        self.group.push_str(delta);
        self.group_deltas += 1;
        let since = *self.group_since.get_or_insert_with(Instant::now);
        let complete = self.splitter.push(delta);
        if complete.is_empty() {
            let full = self.group_deltas >= self.batching.deltas;
            if (full || since.elapsed() >= self.batching.wait) && self.current(out).await {
                self.send_tokens(out).await?;
            }
            return Ok(());
        }
        for sentence in complete {
            if !self.current(out).await {
                return Ok(());
            }
            self.send_tokens(out).await?;
            self.send_sentence(sentence, false, false, out).await?;
        }
        Ok(())
    }

    /// Mid-answer, before the model's tool calls run: says what the splitter holds (an
    /// unfinished "Let me check"), then `extra` (a tool's filler phrase), none of them last.
    pub async fn interlude(
        &mut self,
        extra: Option<&str>,
        out: &mut Emitter,
    ) -> Result<(), StageError> {
        let mut said: Vec<String> = self.splitter.finish().into_iter().collect();
        said.extend(extra.map(str::to_owned));
        for sentence in said {
            if !self.current(out).await {
                return Ok(());
            }
            self.send_tokens(out).await?;
            self.send_sentence(sentence, false, false, out).await?;
        }
        Ok(())
    }

    /// Whether the turn is still wanted (one staleness check unless it already stopped).
    pub async fn wanted(&mut self, out: &mut Emitter) -> bool {
        self.current(out).await
    }

    /// The end of the answer: the splitter's rest, then `extra` (a tool's phrase); if
    /// everything was already said, an empty closing sentence marks the end. Say them with
    /// [`Speaker::close`]; the last will have index [`Speaker::last_index`].
    pub fn finals(&mut self, extra: Option<&str>) -> Vec<String> {
        let mut finals: Vec<String> = self.splitter.finish().into_iter().collect();
        finals.extend(extra.map(str::to_owned));
        if finals.is_empty() {
            finals.push(String::new());
        }
        finals
    }

    /// The index the last of `finals` will have.
    pub fn last_index(&self, finals: &[String]) -> u32 {
        u32::try_from(self.sentences.len() + finals.len().max(1) - 1).unwrap_or(u32::MAX)
    }

    /// Says the end of the answer, the last sentence `last: true`.
    pub async fn finish(
        &mut self,
        finals: Vec<String>,
        out: &mut Emitter,
    ) -> Result<(), StageError> {
        self.close(finals, false, out).await
    }

    /// The answer failed: what was not yet said is dropped and `fallback` ends the turn.
    pub async fn fail(&mut self, fallback: &str, out: &mut Emitter) -> Result<(), StageError> {
        let _ = self.splitter.finish();
        self.group.clear();
        self.group_deltas = 0;
        self.close(vec![fallback.to_owned()], true, out).await
    }

    async fn close(
        &mut self,
        finals: Vec<String>,
        fallback: bool,
        out: &mut Emitter,
    ) -> Result<(), StageError> {
        let count = finals.len();
        for (i, sentence) in finals.into_iter().enumerate() {
            if self.stopped.is_some() || !self.current(out).await {
                return Ok(());
            }
            self.send_tokens(out).await?;
            self.send_sentence(sentence, i + 1 == count, fallback, out)
                .await?;
        }
        Ok(())
    }

    /// Whether the turn is still wanted (the emitter's one check); remembers why not.
    async fn current(&mut self, out: &mut Emitter) -> bool {
        if self.stopped.is_some() {
            return false;
        }
        if out.still_wanted().await {
            return true;
        }
        self.stopped = out.stale();
        tracing::info!(sentences = self.sentences.len(), "generation cancelled");
        false
    }

    async fn send_tokens(&mut self, out: &mut Emitter) -> Result<(), StageError> {
        self.group_deltas = 0;
        self.group_since = None;
        if self.group.is_empty() {
            return Ok(());
        }
        let text = std::mem::take(&mut self.group);
        let event = out.event(Body::Token(Token {
            index: self.token_index,
            text,
        }));
        self.token_index += 1;
        out.emit(event).await
    }

    async fn send_sentence(
        &mut self,
        text: String,
        last: bool,
        fallback: bool,
        out: &mut Emitter,
    ) -> Result<(), StageError> {
        let index = u32::try_from(self.sentences.len()).unwrap_or(u32::MAX);
        let event = out.event(Body::Sentence(Sentence {
            index,
            text: text.clone(),
            last,
            fallback,
        }));
        out.emit(event).await?;
        self.sentences.push(text);
        Ok(())
    }
}
