//! Every metric name Switchboard exports, in one enum, and the Prometheus recorder.
//!
//! Names follow `switchboard_<area>_<what>_<unit>[_total]`; labels come from closed sets
//! (stage, outcome, kind, reason) and never carry a call sid. Produces the global recorder
//! and its render handle. State: the process-wide recorder (installed once).

use std::sync::OnceLock;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// A metric of Switchboard. `name()` is the only place the strings exist.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Metric {
    /// Deliveries a stage received. Labels: stage, kind.
    StageReceived,
    /// Deliveries a stage finished, by outcome (ok, retried, rejected, dead_lettered,
    /// handed_back, fatal). Labels: stage, outcome.
    StageProcessed,
    /// Time inside `handle` plus waiting for the outputs' publish acks. Labels: stage.
    StageHandleSeconds,
    /// Deliveries that arrived for the second time or later. Labels: stage.
    StageRedeliveries,
    /// Inputs written to the DLQ. Labels: stage, reason.
    StageDeadLetters,
    /// Deliveries being handled right now. Labels: stage.
    StageInFlight,
    /// Events published, by kind. Labels: kind.
    EventsPublished,
    /// Publishes that failed. Labels: kind, reason.
    PublishFailures,
    /// Publishes sent again after a transient failure (a JetStream failover). Labels: kind.
    PublishRetries,
    /// Redis operations that failed. Labels: op.
    RedisErrors,
    /// Whether this process reached Redis at its last readiness check (1) or not (0).
    RedisUp,
    /// Whether the process is draining (1) or serving (0).
    LifecycleDraining,
    /// NATS refused a publish or subscription of this process (its user lacks the
    /// permission). Labels: op (publish, subscribe).
    NatsPermissionDenied,
    /// Ingress: Twilio webhooks answered, by route (voice, status) and outcome. Labels: route, outcome.
    IngressWebhooks,
    /// Ingress: time to answer a webhook (signature, idempotency, rate limit, publish). Labels: route.
    IngressWebhookSeconds,
    /// Ingress: requests and sockets refused for a bad `X-Twilio-Signature`. Labels: route, reason.
    IngressSignatureFailures,
    /// Ingress: incoming calls declined by the tenant's rate limit. Labels: tier.
    IngressRateLimited,
    /// Ingress: media sockets open right now.
    IngressActiveCalls,
    /// Calls this ingress carries right now (their media started), by tenant and direction
    /// (inbound, outbound). Labels: tenant, direction.
    CallsLive,
    /// Calls admitted (a first `voice` webhook answered with the stream), by tenant and
    /// direction (inbound, outbound). Labels: tenant, direction.
    CallsStarted,
    /// Ingress: caller media frames received from Twilio.
    IngressFramesIn,
    /// Ingress: bot media frames sent to Twilio.
    IngressFramesOut,
    /// Ingress: bot frames sent after Twilio's buffer ran dry mid-sentence (an audible gap).
    IngressLateFrames,
    /// Ingress: bot audio chunks not played. Labels: reason (superseded, stale, duplicate, overflow).
    IngressDroppedChunks,
    /// Ingress: barge-ins (clear sent, token bumped). Labels: trigger.
    IngressBargeIns,
    /// Ingress: the caller's voice onset (its first voiced frame over the bot) → the
    /// `clear` that stopped the bot. Labels: tenant.
    IngressInterruptionSeconds,
    /// Ingress: pauses of the bot for the caller's voice, by how they ended (resumed: a
    /// false interruption; bargein; superseded: a newer turn took over). Labels: tenant, outcome.
    IngressPauses,
    /// Ingress: the end of the caller's voice → the first frame of the bot's next turn sent
    /// to Twilio: the voice-to-voice latency the caller feels. Labels: tenant.
    VoiceToVoiceSeconds,
    /// Ingress: media-stream messages rejected one by one. Labels: reason.
    IngressRejectedMessages,
    /// Ingress: caller-audio publishes whose ack was not checked (too many in flight).
    IngressAcksUnchecked,
    /// Ingress: media sockets refused at `start` (closed with 1008, nothing published).
    /// Labels: reason (no_credential, bad_credential, expired, not_admitted,
    /// tenant_mismatch, ended, already_live).
    IngressSocketsRefused,
    /// Time from a provider request to its first useful byte (LLM: first token; TTS: first
    /// audio). Labels: provider (llm, azure, espeak).
    ProviderTtfbSeconds,
    /// Provider calls that failed. Labels: provider, kind.
    ProviderErrors,
    /// Per-stage turn latency: input published → the stage's first output for it. Labels: stage.
    StageLatencySeconds,
    /// Inputs a stage skipped on purpose (empty transcript, stale turn, …). Labels: stage, reason.
    StageSkipped,
    /// TTS cache lookups. Labels: result (hit, miss, error).
    TtsCacheRequests,
    /// The agent's global AIMD limit on concurrent LLM requests.
    LlmConcurrencyLimit,
    /// Time a turn waited for its tenant's and the global LLM permits.
    LlmQueueSeconds,
    /// LLM responses answered 429.
    LlmRateLimited,
    /// LLM tokens as reported in usage. Labels: kind (prompt, completion).
    LlmTokens,
    /// Fallback phrases or audio used because a provider failed or was too slow. Labels: stage, reason.
    Fallbacks,
    /// Work stopped because the caller barged in (or a newer turn superseded it). Labels: stage.
    BargeInCancellations,
    /// Telephony REST actions (hang up, transfer). Labels: action, outcome.
    TelephonyActions,
    /// STT: calls this worker owns right now.
    SttActiveCalls,
    /// STT: lease events (acquired, takeover, released, handed_off, retried, stale, rejected). Labels: event.
    SttLeases,
    /// STT: provider streams reopened for a live call. Labels: reason.
    SttReconnects,
    /// STT: final utterances published. Labels: outcome (published, stale).
    SttTranscripts,
    /// STT: answers started on a stable interim transcript (`preflight`), by what became
    /// of them: started; used (the final transcript had the same words: same turn);
    /// discarded (it differed, a newer preflight replaced it, or no final followed).
    /// Labels: tenant, outcome.
    SttPreflights,
    /// LLM permits a replica gave from its own in-process limits because the limits it
    /// shares with the other replicas (Redis) failed. Labels: reason (the Redis error kind).
    LlmLimitsDegraded,
    /// Dialer: calls it tried to place, by result (placed, rate_limited, server_error,
    /// refused, unknown, outside_hours, campaign_gone, cps_wait). Labels: result.
    DialerDials,
    /// Dialer: attempts resolved, by outcome (completed, voicemail, busy, …, abandoned). Labels: outcome.
    DialerOutcomes,
    /// Dialer: Twilio callbacks answered, by route (status, amd) and outcome. Labels: route, outcome.
    DialerCallbacks,
    /// Dialer: time from pop to Twilio's answer to `Calls.json`.
    DialerDialSeconds,
    /// Dialer: open dial attempts over every dialer (calls being placed or live).
    DialerOpenAttempts,
    /// Dialer: open attempts the reconciler looked at, by result (resolved, adopted,
    /// abandoned, live, pending). Labels: result.
    DialerReconciled,
    /// Campaign contacts queued (ready and delayed) per tenant: the dialers' scaling signal. Labels: tenant.
    CampaignQueueDepth,
    /// Campaign contacts the dialers could call now: ready, in campaigns neither paused,
    /// cancelled nor outside their calling hours (over every tenant).
    CampaignContactsDialable,
    /// Sessions rebuilt from the call's events after Redis lost them. Labels: service.
    SessionRebuilt,
    /// Gaps in a call's bot audio repaired from the `AUDIO` stream, by outcome (fetched,
    /// skipped, waiting). Labels: outcome.
    IngressGapRepairs,
    /// Live calls moved between ingress replicas on drain, by outcome (redirected, failed,
    /// resumed). Labels: outcome.
    IngressMigrations,
    /// Agent: calls of a tenant's own tools, by how they ended (ok, sent, timeout, status,
    /// invalid, unreachable, refused; after the retry). Labels: outcome.
    ToolCalls,
    /// Agent: a tenant tool's time, first request sent → answer (retry included).
    ToolSeconds,
    /// Webhooks: delivery attempts, by event and outcome (ok, status, timeout,
    /// unreachable, busy, no_secret, expired). Labels: event, outcome.
    WebhookDeliveries,
    /// Webhooks: one attempt's time, request sent → answer.
    WebhookSeconds,
    /// Live tenant configuration: the revision of the `TENANTS` bucket this process serves
    /// new calls with (0: the file, the bucket is empty).
    TenantConfigRevision,
    /// Live tenant configuration: revisions refused (invalid) or unreadable. Labels: reason.
    TenantConfigRejected,
}

impl Metric {
    pub const fn name(self) -> &'static str {
        match self {
            Metric::StageReceived => "switchboard_stage_received_total",
            Metric::StageProcessed => "switchboard_stage_processed_total",
            Metric::StageHandleSeconds => "switchboard_stage_handle_seconds",
            Metric::StageRedeliveries => "switchboard_stage_redeliveries_total",
            Metric::StageDeadLetters => "switchboard_stage_dead_letters_total",
            Metric::StageInFlight => "switchboard_stage_in_flight",
            Metric::EventsPublished => "switchboard_events_published_total",
            Metric::PublishFailures => "switchboard_publish_failures_total",
            Metric::PublishRetries => "switchboard_publish_retries_total",
            Metric::RedisErrors => "switchboard_redis_errors_total",
            Metric::RedisUp => "switchboard_redis_up",
            Metric::LifecycleDraining => "switchboard_lifecycle_draining",
            Metric::NatsPermissionDenied => "switchboard_nats_permission_denied_total",
            Metric::IngressWebhooks => "switchboard_ingress_webhooks_total",
            Metric::IngressWebhookSeconds => "switchboard_ingress_webhook_seconds",
            Metric::IngressSignatureFailures => "switchboard_ingress_signature_failures_total",
            Metric::IngressRateLimited => "switchboard_ingress_rate_limited_total",
            Metric::IngressActiveCalls => "switchboard_ingress_active_calls",
            Metric::CallsLive => "switchboard_calls_live",
            Metric::CallsStarted => "switchboard_calls_started_total",
            Metric::IngressFramesIn => "switchboard_ingress_frames_in_total",
            Metric::IngressFramesOut => "switchboard_ingress_frames_out_total",
            Metric::IngressLateFrames => "switchboard_ingress_late_frames_total",
            Metric::IngressDroppedChunks => "switchboard_ingress_dropped_chunks_total",
            Metric::IngressBargeIns => "switchboard_ingress_bargeins_total",
            Metric::IngressInterruptionSeconds => "switchboard_ingress_interruption_seconds",
            Metric::IngressPauses => "switchboard_ingress_pauses_total",
            Metric::VoiceToVoiceSeconds => "switchboard_voice_to_voice_seconds",
            Metric::IngressRejectedMessages => "switchboard_ingress_rejected_messages_total",
            Metric::IngressAcksUnchecked => "switchboard_ingress_acks_unchecked_total",
            Metric::IngressSocketsRefused => "switchboard_ingress_sockets_refused_total",
            Metric::ProviderTtfbSeconds => "switchboard_provider_ttfb_seconds",
            Metric::ProviderErrors => "switchboard_provider_errors_total",
            Metric::StageLatencySeconds => "switchboard_stage_latency_seconds",
            Metric::StageSkipped => "switchboard_stage_skipped_total",
            Metric::TtsCacheRequests => "switchboard_tts_cache_requests_total",
            Metric::LlmConcurrencyLimit => "switchboard_llm_concurrency_limit",
            Metric::LlmQueueSeconds => "switchboard_llm_queue_seconds",
            Metric::LlmRateLimited => "switchboard_llm_rate_limited_total",
            Metric::LlmTokens => "switchboard_llm_tokens_total",
            Metric::Fallbacks => "switchboard_fallbacks_total",
            Metric::BargeInCancellations => "switchboard_bargein_cancellations_total",
            Metric::TelephonyActions => "switchboard_telephony_actions_total",
            Metric::SttActiveCalls => "switchboard_stt_active_calls",
            Metric::SttLeases => "switchboard_stt_leases_total",
            Metric::SttReconnects => "switchboard_stt_reconnects_total",
            Metric::SttTranscripts => "switchboard_stt_transcripts_total",
            Metric::SttPreflights => "switchboard_stt_preflights_total",
            Metric::LlmLimitsDegraded => "switchboard_llm_limits_degraded_total",
            Metric::DialerDials => "switchboard_dialer_dials_total",
            Metric::DialerOutcomes => "switchboard_dialer_outcomes_total",
            Metric::DialerCallbacks => "switchboard_dialer_callbacks_total",
            Metric::DialerDialSeconds => "switchboard_dialer_dial_seconds",
            Metric::DialerOpenAttempts => "switchboard_dialer_open_attempts",
            Metric::DialerReconciled => "switchboard_dialer_reconciled_total",
            Metric::CampaignQueueDepth => "switchboard_campaign_queue_depth",
            Metric::CampaignContactsDialable => "switchboard_campaign_contacts_dialable",
            Metric::SessionRebuilt => "switchboard_session_rebuilt_total",
            Metric::IngressGapRepairs => "switchboard_ingress_gap_repairs_total",
            Metric::IngressMigrations => "switchboard_ingress_migrations_total",
            Metric::ToolCalls => "switchboard_tool_calls_total",
            Metric::ToolSeconds => "switchboard_tool_seconds",
            Metric::WebhookDeliveries => "switchboard_webhook_deliveries_total",
            Metric::WebhookSeconds => "switchboard_webhook_seconds",
            Metric::TenantConfigRevision => "switchboard_tenant_config_revision",
            Metric::TenantConfigRejected => "switchboard_tenant_config_rejected_total",
        }
    }
}

/// Latency buckets (seconds) for every `_seconds` histogram: 100 µs to 10 s.
const LATENCY_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];

/// Finer buckets for the turn-taking latencies the caller hears (stop within a quarter
/// second; answer within a second or so): 10 ms steps where the targets are.
const TURN_BUCKETS: &[f64] = &[
    0.05, 0.1, 0.15, 0.2, 0.22, 0.24, 0.25, 0.26, 0.27, 0.28, 0.3, 0.35, 0.4, 0.5, 0.6, 0.7, 0.8,
    0.9, 1.0, 1.2, 1.5, 2.0, 3.0, 5.0,
];

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the global Prometheus recorder (once per process) and returns its handle.
pub fn install() -> PrometheusHandle {
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), LATENCY_BUCKETS)
                .and_then(|b| {
                    b.set_buckets_for_metric(
                        Matcher::Full(Metric::IngressInterruptionSeconds.name().into()),
                        TURN_BUCKETS,
                    )
                })
                .and_then(|b| {
                    b.set_buckets_for_metric(
                        Matcher::Full(Metric::VoiceToVoiceSeconds.name().into()),
                        TURN_BUCKETS,
                    )
                })
                .expect("the bucket list is non-empty");
            let recorder = builder.build_recorder();
            let handle = recorder.handle();
            if metrics::set_global_recorder(recorder).is_err() {
                tracing::warn!("a metrics recorder was already installed; /metrics stays empty");
            }
            handle
        })
        .clone()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_convention() {
        let all = [
            Metric::StageReceived,
            Metric::StageProcessed,
            Metric::StageHandleSeconds,
            Metric::StageRedeliveries,
            Metric::StageDeadLetters,
            Metric::StageInFlight,
            Metric::EventsPublished,
            Metric::PublishFailures,
            Metric::RedisErrors,
            Metric::RedisUp,
            Metric::LifecycleDraining,
            Metric::NatsPermissionDenied,
            Metric::IngressSocketsRefused,
            Metric::SessionRebuilt,
        ];
        for m in all {
            let name = m.name();
            assert!(name.starts_with("switchboard_"), "{name}");
            assert!(
                name.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'),
                "{name}"
            );
        }
    }

    #[test]
    fn histograms_render_with_buckets() {
        let handle = install();
        metrics::histogram!(Metric::StageHandleSeconds.name(), "stage" => "unit").record(0.002);
        let text = handle.render();
        assert!(
            text.contains(
                "switchboard_stage_handle_seconds_bucket{stage=\"unit\",le=\"0.0025\"} 1"
            ),
            "{text}"
        );
    }
}
