//! The `replay` command: parses arguments, connects to NATS, runs one command.
//!
//! Consumes the arguments and JetStream (`CALLS`/`AUDIO`, or an import's `P_CALLS`/
//! `P_AUDIO`; `DLQ` for `dlq`, every stream of a call for `delete`); produces text on the
//! writer it is given (stdout from `main`, a buffer in tests), WAV and `.sbcall` files, and
//! for `import` and `redrive` the published events. Logs in as `replay` (read only) for the
//! live streams and as `ops` for imports, prefixed copies, `redrive`, `dlq redrive|purge`
//! and `delete`, unless `--nats-user` says otherwise. State: none. docs/REPLAY.md is the
//! user's guide.

use std::{io::Write, path::PathBuf};

use anyhow::{Context as _, bail};
use async_nats::jetstream;
use clap::Parser;
use sb_schemas::{CallSid, Kind, subject};

use crate::{
    AudioScope, CallLog, Prefix, Streams,
    dlq_cli::{self, DlqCommand},
    erase::{self, Outcome},
    follow,
    format::Export,
    json::{self, Payloads},
    latency, timeline, transfer, utc, wav,
};

/// Replay one call from the CALLS and AUDIO streams; work the dead-letter queue; erase a call.
#[derive(Debug, Parser)]
#[command(name = "replay", version)]
pub struct Cli {
    /// NATS: URL, user (default `replay`: read-only; `ops` for import and --prefix),
    /// password, TLS.
    #[command(flatten)]
    pub nats: sb_runtime::NatsConfig,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Print the call's timeline and per-turn latency waterfall (or JSON lines, or follow it).
    Show {
        /// The call sid (CA + 32 hex digits).
        call_sid: CallSid,
        /// Show every token and partial transcript too; with --json, audio payloads in base64.
        #[arg(long)]
        full: bool,
        /// One event per line as JSON, every event including audio (fields: docs/REPLAY.md).
        #[arg(long)]
        json: bool,
        /// Print the call as it happens (what is stored, then each new event); stops at
        /// the call's `end` event.
        #[arg(long)]
        follow: bool,
        /// With --follow: the call's audio messages too.
        #[arg(long, requires = "follow")]
        audio: bool,
        /// Read the copy imported under this prefix (streams P_CALLS, P_AUDIO).
        #[arg(long)]
        prefix: Option<Prefix>,
    },
    /// Write the call as a stereo WAV (caller left, bot right).
    Wav {
        call_sid: CallSid,
        /// Where to write the WAV.
        out: PathBuf,
        /// Read the copy imported under this prefix.
        #[arg(long)]
        prefix: Option<Prefix>,
    },
    /// Write every event of the call, audio included, to one checksummed `.sbcall` file.
    Export {
        call_sid: CallSid,
        /// Where to write the export.
        #[arg(short = 'o', long = "out")]
        out: PathBuf,
        /// Export the copy imported under this prefix.
        #[arg(long)]
        prefix: Option<Prefix>,
    },
    /// Check a `.sbcall` file whole, then publish its events: under --prefix P into the
    /// isolated streams P_CALLS / P_AUDIO (created if missing), or with --live back into
    /// CALLS / AUDIO. Events already there are not stored again.
    Import {
        /// The export file.
        file: PathBuf,
        /// Publish on `P.call.…` / `P.audio.…`, which no live stream or stage sees.
        #[arg(long, conflicts_with = "live")]
        prefix: Option<Prefix>,
        /// Publish on the live subjects: the pipeline's consumers (agent, tts, webhooks)
        /// see the events again.
        #[arg(long)]
        live: bool,
    },
    /// Run one stage (agent or tts) again on the call's recorded inputs, isolated (in
    /// process, in-memory state, no telephony), with a changed prompt, voice or model;
    /// store its new outputs under a prefix and print them beside the recorded ones.
    Redrive(Box<crate::rerun_cli::RedriveArgs>),
    /// Recent ended calls, newest first, from the call index (filters: tenant, direction,
    /// time range, outcome).
    Calls(crate::calls::CallsArgs),
    /// The dead-letter queue: list, show, redrive and purge what the stages gave up on.
    Dlq {
        #[command(subcommand)]
        command: DlqCommand,
    },
    /// Right to erasure: remove every stored message of the calls (CALLS, AUDIO, their
    /// dead letters and STT lease) and leave a tombstone saying when, by whom and how many.
    /// Logs in as `ops`.
    Delete {
        /// The call sids.
        #[arg(required = true)]
        call_sids: Vec<CallSid>,
        /// Who asked for it, recorded in the tombstone (default: the OS user).
        #[arg(long)]
        by: Option<String>,
        /// Erase a call that has no `end` stored (one whose ingress died), though it may
        /// still be live.
        #[arg(long)]
        force: bool,
    },
}

/// Runs one command, printing to `out`.
pub async fn run<W: Write + Send>(cli: Cli, out: &mut W) -> anyhow::Result<()> {
    match cli.command {
        Command::Show {
            call_sid,
            full,
            json,
            follow,
            audio,
            prefix,
        } => {
            let streams = Streams::new(prefix);
            let js = connect(&cli.nats, &streams).await?;
            let payloads = match full {
                true => Payloads::Base64,
                false => Payloads::Length,
            };
            match follow {
                true => follow_call(&js, &streams, &call_sid, audio, json, payloads, out).await,
                false => show(&js, &streams, &call_sid, json, full, payloads, out).await,
            }
        }
        Command::Wav {
            call_sid,
            out: path,
            prefix,
        } => {
            let streams = Streams::new(prefix);
            let js = connect(&cli.nats, &streams).await?;
            let log = load(&js, &streams, &call_sid).await?;
            std::fs::write(&path, wav::render(log.not_erased()?))
                .with_context(|| format!("cannot write {}", path.display()))?;
            writeln!(out, "wrote {}", path.display())?;
            Ok(())
        }
        Command::Export {
            call_sid,
            out: path,
            prefix,
        } => {
            let streams = Streams::new(prefix);
            let js = connect(&cli.nats, &streams).await?;
            let (export, skipped) = transfer::export(&js, &streams, &call_sid)
                .await
                .with_context(|| reading(&streams))?;
            let bytes = export.encode();
            write_whole(&path, &bytes)?;
            let h = &export.header;
            writeln!(
                out,
                "exported call {} ({}): {} events ({} CALLS, {} AUDIO), {} bytes to {}",
                h.call_sid,
                h.tenant,
                h.events,
                h.calls_events,
                h.audio_events,
                bytes.len(),
                path.display()
            )?;
            if skipped > 0 {
                eprintln!("{skipped} stored messages did not decode and were left out");
            }
            Ok(())
        }
        Command::Import { file, prefix, live } => {
            if prefix.is_none() && !live {
                bail!(
                    "refusing to import into the live streams: the pipeline's consumers (agent, \
                     tts, webhooks) would act on the call again. Pass --prefix P for an isolated \
                     copy (streams P_CALLS, P_AUDIO), or --live to restore it into CALLS and \
                     AUDIO on purpose"
                );
            }
            // Everything is checked before anything is written (or NATS is even reached).
            let bytes =
                std::fs::read(&file).with_context(|| format!("cannot read {}", file.display()))?;
            let export = Export::parse(&bytes)
                .with_context(|| format!("{} cannot be imported", file.display()))?;
            let streams = Streams::new(prefix);
            let login = cli.nats.login("ops");
            let js = jetstream::new(sb_runtime::nats::connect(&login).await?);
            let done = transfer::import(&js, &streams, &export).await?;
            writeln!(
                out,
                "imported call {} ({}) into {}: {} events stored, {} already there",
                export.header.call_sid,
                export.header.tenant,
                done.streams.join(" and "),
                done.stored,
                done.present
            )?;
            Ok(())
        }
        Command::Redrive(args) => crate::rerun_cli::run(&cli.nats, *args, out).await,
        Command::Calls(args) => {
            let js = connect(&cli.nats, &Streams::live()).await?;
            let calls = crate::index::recent(&js, &args.filter()).await?;
            crate::calls::render(&calls, args.json, out)?;
            Ok(())
        }
        Command::Dlq { command } => dlq_cli::run(&cli.nats, command, out).await,
        Command::Delete {
            call_sids,
            by,
            force,
        } => delete(&cli.nats, &call_sids, by, force, out).await,
    }
}

/// `replay delete`: erases each call, reporting each; fails if any was not erased.
async fn delete<W: Write>(
    nats: &sb_runtime::NatsConfig,
    sids: &[CallSid],
    by: Option<String>,
    force: bool,
    out: &mut W,
) -> anyhow::Result<()> {
    let by = match by.or_else(os_user) {
        Some(by) if !by.trim().is_empty() => by.trim().to_owned(),
        _ => bail!("who asks for the erasure? No OS user is set: pass --by"),
    };
    let js = jetstream::new(sb_runtime::nats::connect(&nats.login("ops")).await?);
    let mut failed = Vec::new();
    for sid in sids {
        match erase::erase(&js, sid, &by, force).await {
            Ok(Outcome::Erased(erasures)) => {
                for e in erasures {
                    let removed: Vec<String> = (e.tombstone.removed.iter())
                        .map(|(stream, n)| format!("{n} from {stream}"))
                        .collect();
                    writeln!(
                        out,
                        "erased call {} ({}) for {by}: removed messages {}; its tombstone {} \
                         (CALLS seq {}) is all that is left",
                        e.sid,
                        e.tenant,
                        removed.join(", "),
                        subject::event(&e.tenant, &e.sid, Kind::Erased),
                        e.tombstone_seq
                    )?;
                }
            }
            Ok(Outcome::AlreadyErased { at, by }) => writeln!(
                out,
                "call {sid} was erased already, at {} by {by}: only its tombstone is stored",
                utc(at)
            )?,
            Err(e) => failed.push(format!("{sid}: {e}")),
        }
    }
    match failed.as_slice() {
        [] => Ok(()),
        [one] => bail!("not erased: {one}"),
        many => bail!(
            "{} of {} calls not erased:\n{}",
            many.len(),
            sids.len(),
            many.join("\n")
        ),
    }
}

/// The operator's OS user name.
fn os_user() -> Option<String> {
    ["USER", "LOGNAME", "USERNAME"]
        .into_iter()
        .find_map(|v| std::env::var(v).ok())
}

async fn show<W: Write>(
    js: &jetstream::Context,
    streams: &Streams,
    sid: &CallSid,
    json: bool,
    full: bool,
    payloads: Payloads,
    out: &mut W,
) -> anyhow::Result<()> {
    let log = load(js, streams, sid).await?;
    // An erased call: its tombstone, and nothing else to render.
    if let (false, Some((tombstone, _))) = (json, log.erased()) {
        writeln!(out, "{}", timeline::line(tombstone, tombstone.at))?;
        return Ok(());
    }
    if json {
        for stored in &log.events {
            writeln!(out, "{}", json::line(stored, payloads))?;
        }
        if log.undecodable > 0 {
            eprintln!("({} stored messages did not decode)", log.undecodable);
        }
        return Ok(());
    }
    let detail = match full {
        true => timeline::Detail::Full,
        false => timeline::Detail::Summary,
    };
    write!(out, "{}", timeline::render(&log, detail))?;
    writeln!(out)?;
    write!(out, "{}", latency::render(&latency::turns(&log)))?;
    Ok(())
}

async fn follow_call<W: Write>(
    js: &jetstream::Context,
    streams: &Streams,
    sid: &CallSid,
    audio: bool,
    json: bool,
    payloads: Payloads,
    out: &mut W,
) -> anyhow::Result<()> {
    let mut zero = None;
    let seen = follow::follow(js, streams, sid, audio, |stored| {
        let text = match json {
            true => json::line(stored, payloads),
            false => timeline::line(&stored.event, *zero.get_or_insert(stored.event.at)),
        };
        writeln!(out, "{text}")?;
        out.flush()
    })
    .await
    .with_context(|| reading(streams))?;
    if seen.undecodable > 0 {
        eprintln!("({} stored messages did not decode)", seen.undecodable);
    }
    Ok(())
}

async fn load(
    js: &jetstream::Context,
    streams: &Streams,
    sid: &CallSid,
) -> anyhow::Result<CallLog> {
    CallLog::load_in(js, streams, sid, AudioScope::All)
        .await
        .with_context(|| reading(streams))
}

/// Logs in as the configured user, or `replay` (live streams) / `ops` (a prefixed copy,
/// which the read-only `replay` user may not read).
async fn connect(
    nats: &sb_runtime::NatsConfig,
    streams: &Streams,
) -> anyhow::Result<jetstream::Context> {
    let user = match streams.prefix() {
        Some(_) => "ops",
        None => "replay",
    };
    Ok(jetstream::new(
        sb_runtime::nats::connect(&nats.login(user)).await?,
    ))
}

fn reading(streams: &Streams) -> String {
    match streams.prefix() {
        Some(p) => format!("reading the copy imported under prefix {p} ({p}_CALLS, {p}_AUDIO)"),
        None => "reading the live streams CALLS and AUDIO".to_owned(),
    }
}

/// Writes `bytes` to a sibling file and renames it over `path`: never half a file at `path`.
fn write_whole(path: &std::path::Path, bytes: &[u8]) -> anyhow::Result<()> {
    let mut partial = path.as_os_str().to_owned();
    partial.push(".partial");
    let partial = PathBuf::from(partial);
    std::fs::write(&partial, bytes)
        .with_context(|| format!("cannot write {}", partial.display()))?;
    std::fs::rename(&partial, path)
        .with_context(|| format!("cannot move {} to {}", partial.display(), path.display()))
}
