//! `replay dlq`: the dead-letter queue as an operator reads and works it.
//!
//! Consumes the parsed `dlq` subcommand and the `DLQ` stream through [`crate::dlq`]: `list`
//! and `show` log in as the read-only `replay` user, `redrive` and `purge` as `ops`.
//! Produces text, or JSON (fields: docs/REPLAY.md; [`crate::dlq_render`]), on the writer it
//! is given. State: none.

use std::{
    io::Write,
    time::{Duration, SystemTime},
};

use anyhow::{Context as _, bail};
use async_nats::jetstream;
use sb_schemas::subject::{AUDIO_STREAM, CALLS_STREAM};

use crate::{
    dlq::{self, Content, DlqError, Filter, Letter},
    dlq_render::{age_text, letter_json, list, original, show},
    redrive::{self, Redriven},
};

#[derive(Debug, clap::Subcommand)]
pub enum DlqCommand {
    /// One line per dead letter, newest first: DLQ sequence, age, deliveries, stream and
    /// consumer, original subject, reason. Max-deliveries advisories are marked.
    List {
        /// Only those of this stream (of the original message: CALLS, STT_ASSIGN).
        #[arg(long, value_parser = dlq::name)]
        stream: Option<String>,
        /// Only those of this durable consumer (agent, tts, webhooks, stt).
        #[arg(long, value_parser = dlq::name)]
        consumer: Option<String>,
        /// At most this many, the newest.
        #[arg(long, default_value_t = 100)]
        limit: usize,
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
    },
    /// Everything about one: the record, its payload and the event it decodes to.
    Show {
        /// Its DLQ sequence (from `list`).
        seq: u64,
        /// One JSON object, the payload in base64.
        #[arg(long)]
        json: bool,
    },
    /// Publish dead letters again on their original subjects, with the event id as
    /// `Nats-Msg-Id`, then delete them from DLQ. Every consumer whose filter takes the
    /// subject sees the event again.
    Redrive {
        /// DLQ sequences (from `list`).
        #[arg(required_unless_present = "all", conflicts_with = "all")]
        seqs: Vec<u64>,
        /// Every dead letter (advisories are skipped: they carry no payload).
        #[arg(long)]
        all: bool,
        /// With --all: only those of this stream.
        #[arg(long, conflicts_with = "seqs", value_parser = dlq::name)]
        stream: Option<String>,
        /// With --all: only those of this durable consumer.
        #[arg(long, conflicts_with = "seqs", value_parser = dlq::name)]
        consumer: Option<String>,
    },
    /// Delete dead letters and advisories.
    Purge {
        /// DLQ sequences (from `list`).
        #[arg(required_unless_present = "all", conflicts_with = "all")]
        seqs: Vec<u64>,
        /// Every one (of --stream / --consumer, and older than --older-than, if given).
        #[arg(long)]
        all: bool,
        /// With --all: only those stored longer ago than this (`90s`, `30m`, `12h`, `7d`).
        #[arg(long, conflicts_with = "seqs", value_parser = parse_age)]
        older_than: Option<Duration>,
        /// With --all: only those of this stream.
        #[arg(long, conflicts_with = "seqs", value_parser = dlq::name)]
        stream: Option<String>,
        /// With --all: only those of this durable consumer.
        #[arg(long, conflicts_with = "seqs", value_parser = dlq::name)]
        consumer: Option<String>,
    },
}

/// Runs one `dlq` command against `nats`, printing to `out`.
pub async fn run<W: Write>(
    nats: &sb_runtime::NatsConfig,
    command: DlqCommand,
    out: &mut W,
) -> anyhow::Result<()> {
    let connect = |user: &'static str| async move {
        let client = sb_runtime::nats::connect(&nats.login(user)).await?;
        anyhow::Ok(jetstream::new(client))
    };
    match command {
        DlqCommand::List {
            stream,
            consumer,
            limit,
            json,
        } => {
            let js = connect("replay").await?;
            let letters = dlq::list(&js, &Filter { stream, consumer }).await?;
            list(&letters, limit, json, out)
        }
        DlqCommand::Show { seq, json } => {
            let js = connect("replay").await?;
            let letter = dlq::get(&js, seq).await?;
            // The `replay` user reads CALLS and AUDIO only (an advisory of STT_ASSIGN: not).
            let original = match &letter.content {
                Content::Advisory(a)
                    if [CALLS_STREAM, AUDIO_STREAM].contains(&a.stream.as_str()) =>
                {
                    Some(original(&js, &a.stream, a.stream_seq).await)
                }
                _ => None,
            };
            match json {
                true => writeln!(out, "{}", letter_json(&letter, true, original)),
                false => write!(out, "{}", show(&letter, original)),
            }?;
            Ok(())
        }
        DlqCommand::Redrive {
            seqs,
            all,
            stream,
            consumer,
        } => {
            let js = connect("ops").await?;
            let targets = match all {
                true => Targets::Letters(dlq::list(&js, &Filter { stream, consumer }).await?),
                false => Targets::Seqs(seqs),
            };
            redrive_each(&js, targets, out).await
        }
        DlqCommand::Purge {
            seqs,
            all,
            older_than,
            stream,
            consumer,
        } => {
            let js = connect("ops").await?;
            if all {
                // Older than the epoch: nothing is.
                let before = older_than.map(|age| {
                    SystemTime::now()
                        .checked_sub(age)
                        .unwrap_or(SystemTime::UNIX_EPOCH)
                });
                let n = dlq::purge(&js, &Filter { stream, consumer }, before).await?;
                writeln!(out, "purged {n} messages from DLQ")?;
                return Ok(());
            }
            let mut gone = 0;
            for seq in &seqs {
                match dlq::delete(&js, *seq).await {
                    Ok(()) => writeln!(out, "purged {seq}")?,
                    Err(e @ DlqError::Gone(_)) => {
                        gone += 1;
                        writeln!(out, "not purged {seq}: {e}")?;
                    }
                    Err(e) => return Err(e).context(format!("purging {seq}")),
                }
            }
            if gone > 0 {
                bail!("{gone} of {} not purged: not in DLQ", seqs.len());
            }
            Ok(())
        }
    }
}

enum Targets {
    Seqs(Vec<u64>),
    /// From `list` (`--all`): advisories among them are skipped.
    Letters(Vec<Letter>),
}

/// Redrives each target, printing what happened to each as it goes, then a tally; fails
/// if any dead letter was kept or refused (advisories skipped by `--all` do not count).
async fn redrive_each<W: Write>(
    js: &jetstream::Context,
    targets: Targets,
    out: &mut W,
) -> anyhow::Result<()> {
    let mut tally = Tally::default();
    match targets {
        Targets::Seqs(seqs) => {
            for seq in seqs {
                tally.report(out, seq, redrive::redrive(js, seq).await)?;
            }
        }
        Targets::Letters(letters) => {
            for letter in letters {
                if let Content::Advisory(_) = letter.content {
                    tally.skipped += 1;
                    writeln!(out, "skipped {}: an advisory, no payload", letter.seq)?;
                    continue;
                }
                let outcome = redrive::redrive_letter(js, &letter).await;
                tally.report(out, letter.seq, outcome)?;
            }
        }
    }
    let Tally {
        redriven,
        kept,
        skipped,
        failed,
    } = tally;
    writeln!(
        out,
        "{redriven} redriven, {kept} kept, {skipped} advisories skipped, {failed} failed"
    )?;
    if kept + failed > 0 {
        bail!("{} dead letters not redriven (above)", kept + failed);
    }
    Ok(())
}

#[derive(Default)]
struct Tally {
    redriven: usize,
    kept: usize,
    skipped: usize,
    failed: usize,
}

impl Tally {
    /// Prints one redrive's outcome and counts it.
    fn report<W: Write>(
        &mut self,
        out: &mut W,
        seq: u64,
        outcome: Result<Redriven, DlqError>,
    ) -> std::io::Result<()> {
        match outcome {
            Ok(Redriven::Stored {
                subject,
                stream,
                seq: at,
            }) => {
                self.redriven += 1;
                let seen_by = redrive::consumers_of(&stream, &subject).join(", ");
                writeln!(
                    out,
                    "redriven {seq}: {subject} stored again as {stream} seq {at} (consumers: \
                     {seen_by}); the dead letter is deleted"
                )
            }
            Ok(Redriven::Earlier {
                subject,
                stream,
                seq: at,
            }) => {
                self.redriven += 1;
                writeln!(
                    out,
                    "redriven {seq}: {subject} was stored by an earlier redrive ({stream} seq \
                     {at}); the dead letter is deleted"
                )
            }
            Ok(Redriven::Deduplicated {
                subject,
                stream,
                seq: at,
                window,
            }) => {
                self.kept += 1;
                writeln!(
                    out,
                    "kept {seq}: {stream} still holds {subject} (seq {at}) inside its {} \
                     duplicate window, so the publish was dropped as a duplicate and no consumer \
                     saw it; redrive it once the window has passed",
                    age_text(window)
                )
            }
            Err(e) => {
                self.failed += 1;
                writeln!(out, "not redriven {seq}: {e}")
            }
        }
    }
}

/// `90s`, `30m`, `12h`, `7d`, `2w`, or several (`1h30m`).
pub fn parse_age(raw: &str) -> Result<Duration, String> {
    let bad = || format!("{raw:?} is not an age such as 90s, 30m, 12h, 7d or 1h30m");
    let (mut total, mut digits) = (0u64, String::new());
    for c in raw.chars() {
        if c.is_ascii_digit() {
            digits.push(c);
            continue;
        }
        let unit = match c {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            'd' => 86_400,
            'w' => 604_800,
            _ => return Err(bad()),
        };
        let n: u64 = digits.parse().map_err(|_| bad())?;
        total = n
            .checked_mul(unit)
            .and_then(|s| total.checked_add(s))
            .ok_or_else(bad)?;
        digits.clear();
    }
    match digits.is_empty() && !raw.is_empty() {
        true => Ok(Duration::from_secs(total)),
        false => Err(bad()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_parse() {
        for (raw, secs) in [
            ("90s", 90),
            ("30m", 1800),
            ("12h", 43_200),
            ("7d", 604_800),
            ("2w", 1_209_600),
            ("1h30m", 5400),
        ] {
            assert_eq!(parse_age(raw), Ok(Duration::from_secs(secs)), "{raw}");
        }
        for bad in ["", "7", "d", "7x", "-1d", "1.5h", "99999999999999999999d"] {
            assert!(parse_age(bad).is_err(), "{bad:?}");
        }
    }
}
