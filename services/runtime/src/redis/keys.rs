//! Every Redis key name, in one place, with a configurable prefix.
//!
//! Produces key strings for the patterns of ARCHITECTURE §6 and the live-socket claim.
//! Callers pass validated ids (`TenantId`, `CallSid`), so no input can forge another
//! tenant's key. State: the prefix.

use sb_schemas::{CallSid, TenantId};
use sha2::{Digest, Sha256};

use super::campaigns::model::{AccountSid, CampaignId};
use super::tts_cache::Speech;

#[derive(Debug, Clone, Default)]
pub struct Keys {
    prefix: String,
}

impl Keys {
    /// `prefix` is prepended to every key (empty in production, unique per test).
    pub fn new(prefix: impl Into<String>) -> Self {
        Self {
            prefix: prefix.into(),
        }
    }

    /// `session:{call_sid}`: a hash with the last turns, turn number, barge-in token, STT checkpoint.
    pub fn session(&self, sid: &CallSid) -> String {
        format!("{}session:{sid}", self.prefix)
    }

    /// `preflight:{call_sid}:{turn}`: the answer started on a stable interim transcript for
    /// `turn`, held aside until the turn's final transcript confirms it.
    pub fn preflight(&self, sid: &CallSid, turn: u32) -> String {
        format!("{}preflight:{sid}:{turn}", self.prefix)
    }

    /// `idem:{call_sid}` or `idem:{call_sid}:{scope}`; `scope` names the event
    /// (`status:completed`, …) and is reduced to `[a-z0-9_:-]`.
    pub fn idempotency(&self, sid: &CallSid, scope: Option<&str>) -> String {
        match scope {
            None => format!("{}idem:{sid}", self.prefix),
            Some(scope) => format!("{}idem:{sid}:{}", self.prefix, sanitise(scope)),
        }
    }

    /// `live:{call_sid}`: the one media socket serving the call (a random owner token, with
    /// a TTL its socket keeps refreshing).
    pub fn live_socket(&self, sid: &CallSid) -> String {
        format!("{}live:{sid}", self.prefix)
    }

    /// `handoff:{call_sid}`: a live call moving to another ingress replica (the token
    /// its new socket must bring, where playback stood, the next caller-audio frame).
    pub fn handoff(&self, sid: &CallSid) -> String {
        format!("{}handoff:{sid}", self.prefix)
    }

    /// `rl:{tenant}:{window}`, where `window` is the window's index since the epoch.
    pub fn rate_limit(&self, tenant: &TenantId, window: u64) -> String {
        format!("{}rl:{tenant}:{window}", self.prefix)
    }

    /// `tts:{sha256(engine|format|voice|normalised text)}`.
    pub fn tts(&self, speech: &Speech<'_>) -> String {
        let mut hash = Sha256::new();
        for part in [speech.engine, speech.format, speech.voice] {
            hash.update(part.as_bytes());
            hash.update(b"|");
        }
        hash.update(normalise_tts_text(speech.text).as_bytes());
        format!("{}tts:{}", self.prefix, hex::encode(hash.finalize()))
    }

    /// `llm:slots:{tenant}`: the ZSET of the tenant's LLM requests in flight on every
    /// replica, each scored by its lease's expiry (ms, Redis' clock).
    pub fn llm_slots(&self, tenant: &TenantId) -> String {
        format!("{}llm:slots:{tenant}", self.prefix)
    }

    /// `llm:aimd`: the hash of the global AIMD limit (`limit`, `epoch`, `gate`).
    pub fn llm_aimd(&self) -> String {
        format!("{}llm:aimd", self.prefix)
    }

    /// `llm:aimd:slots`: the ZSET of every LLM request in flight, scored like `llm_slots`.
    pub fn llm_aimd_slots(&self) -> String {
        format!("{}llm:aimd:slots", self.prefix)
    }

    /// `cq:tenants`: the campaign queue's ring of tenants with ready work: lowest score is
    /// next; a tenant served or joining goes one past the highest.
    pub fn cq_tenants(&self) -> String {
        format!("{}cq:tenants", self.prefix)
    }

    /// `cq:due`: `{tenant}|{campaign}` → the earliest not-before time in its delayed ZSET.
    pub fn cq_due(&self) -> String {
        format!("{}cq:due", self.prefix)
    }

    /// `cq:leases`: `{tenant}|{campaign}|{contact}` → its lease's deadline (ms).
    pub fn cq_leases(&self) -> String {
        format!("{}cq:leases", self.prefix)
    }

    /// `cq:depth`: tenant → its queued contacts (ready and delayed).
    pub fn cq_depth(&self) -> String {
        format!("{}cq:depth", self.prefix)
    }

    /// `cq:cps:{account}`: the calls-per-second token bucket of a Twilio account.
    pub fn cq_cps(&self, account: &AccountSid) -> String {
        format!("{}cq:cps:{account}", self.prefix)
    }

    /// `cq:{tenant}:{campaign}:ready`: contact → `model::ready_score` (priority, then FIFO).
    pub fn cq_ready(&self, t: &TenantId, c: &CampaignId) -> String {
        self.cq_campaign(t.as_str(), c.as_str(), "ready")
    }

    /// `cq:{tenant}:{campaign}:delayed`: contact → not-before time (ms).
    pub fn cq_delayed(&self, t: &TenantId, c: &CampaignId) -> String {
        self.cq_campaign(t.as_str(), c.as_str(), "delayed")
    }

    /// `cq:{tenant}:{campaign}:contacts`: contact → its record (`model::ContactRecord`).
    pub fn cq_contacts(&self, t: &TenantId, c: &CampaignId) -> String {
        self.cq_campaign(t.as_str(), c.as_str(), "contacts")
    }

    /// `cq:{tenant}:{campaign}:seq`: the campaign's FIFO counter.
    pub fn cq_seq(&self, t: &TenantId, c: &CampaignId) -> String {
        self.cq_campaign(t.as_str(), c.as_str(), "seq")
    }

    /// `cq:{tenant}:campaigns`: the tenant's ring of campaigns with ready work.
    pub fn cq_campaigns(&self, t: &TenantId) -> String {
        self.cq_tenant(t.as_str(), "campaigns")
    }

    /// `cq:{tenant}:active`: calls in flight, `*` for the tenant and one field per campaign.
    pub fn cq_active(&self, t: &TenantId) -> String {
        self.cq_tenant(t.as_str(), "active")
    }

    /// `cq:{tenant}:caps`: concurrency caps, fields as in `cq_active` (absent: no cap).
    pub fn cq_caps(&self, t: &TenantId) -> String {
        self.cq_tenant(t.as_str(), "caps")
    }

    /// `cq:{tenant}:hold`: campaign → why pops skip it: `p` (paused), `x` (cancelled) or
    /// a time (ms) before which it is outside its calling hours.
    pub fn cq_hold(&self, t: &TenantId) -> String {
        self.cq_tenant(t.as_str(), "hold")
    }

    /// `cq:{tenant}:{campaign}:counts`: contact state code → contacts in that state.
    pub fn cq_counts(&self, t: &TenantId, c: &CampaignId) -> String {
        self.cq_campaign(t.as_str(), c.as_str(), "counts")
    }

    /// `cq:{tenant}:{campaign}:calls`: contact → the call sids of its attempts, comma-separated.
    pub fn cq_calls(&self, t: &TenantId, c: &CampaignId) -> String {
        self.cq_campaign(t.as_str(), c.as_str(), "calls")
    }

    /// `cq:{tenant}:defs`: campaign → its definition (JSON, owned by the dialer).
    pub fn cq_defs(&self, t: &TenantId) -> String {
        self.cq_tenant(t.as_str(), "defs")
    }

    /// `cq:attempts`: open dial attempt id → when the dialer next reconciles it (ms).
    pub fn cq_attempts(&self) -> String {
        format!("{}cq:attempts", self.prefix)
    }

    /// `cq:attempt:{attempt}`: one dial attempt: whose contact, the call sid once known,
    /// and what the ingress and agent need for the call (tenant, rendered prompts).
    pub fn cq_attempt(&self, attempt: &str) -> String {
        format!("{}cq:attempt:{attempt}", self.prefix)
    }

    /// The per-tenant and per-campaign keys above with `{t}` and `{c}` left for the
    /// campaign scripts to fill in: ready, delayed, contacts, seq, campaigns, active, caps,
    /// hold, counts, calls.
    pub fn cq_templates(&self) -> [String; 10] {
        let (t, c) = ("{t}", "{c}");
        [
            self.cq_campaign(t, c, "ready"),
            self.cq_campaign(t, c, "delayed"),
            self.cq_campaign(t, c, "contacts"),
            self.cq_campaign(t, c, "seq"),
            self.cq_tenant(t, "campaigns"),
            self.cq_tenant(t, "active"),
            self.cq_tenant(t, "caps"),
            self.cq_tenant(t, "hold"),
            self.cq_campaign(t, c, "counts"),
            self.cq_campaign(t, c, "calls"),
        ]
    }

    fn cq_campaign(&self, t: &str, c: &str, what: &str) -> String {
        format!("{}cq:{t}:{c}:{what}", self.prefix)
    }

    fn cq_tenant(&self, t: &str, what: &str) -> String {
        format!("{}cq:{t}:{what}", self.prefix)
    }
}

fn sanitise(scope: &str) -> String {
    scope
        .chars()
        .take(64)
        .map(|c| c.to_ascii_lowercase())
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '_' | ':' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// The text part of a TTS cache key: case, whitespace and punctuation variants of one
/// sentence share a key. Punctuation between letters or digits (`don't`, `3.5`, `e-mail`)
/// is kept, since it changes what is spoken.
pub fn normalise_tts_text(text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let mut pending_space = false;
    for (i, &c) in chars.iter().enumerate() {
        let keep = if c.is_alphanumeric() {
            true
        } else if c.is_whitespace() {
            false
        } else {
            let before = i > 0 && chars[i - 1].is_alphanumeric();
            let after = chars.get(i + 1).is_some_and(|n| n.is_alphanumeric());
            before && after
        };
        if keep {
            if pending_space && !out.is_empty() {
                out.push(' ');
            }
            pending_space = false;
            out.extend(c.to_lowercase());
        } else {
            pending_space = true;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalisation_table() {
        for (a, b) in [
            ("Hello, world!", "hello world"),
            ("  HELLO   world. ", "hello world"),
            ("Hello world?", "hello world"),
            ("It's 3.5 dollars.", "it's 3.5 dollars"),
            ("e-mail me", "e-mail me"),
            ("Wait... what?!", "wait what"),
            ("Straße", "straße"),
            ("क्या हाल है।", "क्या हाल है"),
        ] {
            assert_eq!(normalise_tts_text(a), b, "{a:?}");
        }
    }

    /// Case, spacing and punctuation variants share a key; a different voice, engine or
    /// output format never does (espeak-ng audio is never served as Azure's).
    #[test]
    fn variants_share_a_key_and_voices_engines_formats_do_not() {
        let k = Keys::new("t:");
        let speech = |engine, format, voice, text| {
            k.tts(&Speech {
                engine,
                format,
                voice,
                text,
            })
        };
        let azure = |voice, text| speech("azure", "raw-8khz-8bit-mono-mulaw", voice, text);
        assert_eq!(
            azure("jenny", "Hello, world!"),
            azure("jenny", "hello   WORLD")
        );
        assert_ne!(azure("jenny", "Hello"), azure("guy", "Hello"));
        assert_ne!(azure("jenny", "3.5"), azure("jenny", "3 5"));
        assert_ne!(
            azure("jenny", "Hello"),
            speech("espeak", "raw-8khz-8bit-mono-mulaw", "jenny", "Hello")
        );
        assert_ne!(
            azure("jenny", "Hello"),
            speech("azure", "raw-16khz-16bit-mono-pcm", "jenny", "Hello")
        );
        // The separators keep parts from running into each other.
        assert_ne!(speech("ab", "c", "v", "x"), speech("a", "bc", "v", "x"));
        assert!(azure("v", "x").starts_with("t:tts:"));
        assert_eq!(azure("v", "x").len(), "t:tts:".len() + 64);
    }

    #[test]
    fn key_shapes() {
        let k = Keys::new("p:");
        let sid = CallSid::parse("CA0123456789abcdef0123456789abcdef").unwrap();
        let t = TenantId::parse("acme").unwrap();
        assert_eq!(
            k.session(&sid),
            "p:session:CA0123456789abcdef0123456789abcdef"
        );
        assert_eq!(
            k.idempotency(&sid, None),
            "p:idem:CA0123456789abcdef0123456789abcdef"
        );
        assert_eq!(
            k.idempotency(&sid, Some("Status:Completed {x}")),
            "p:idem:CA0123456789abcdef0123456789abcdef:status:completed__x_"
        );
        assert_eq!(k.rate_limit(&t, 42), "p:rl:acme:42");
        assert_eq!(
            k.live_socket(&sid),
            "p:live:CA0123456789abcdef0123456789abcdef"
        );
        assert_eq!(k.llm_slots(&t), "p:llm:slots:acme");
        assert_eq!(k.llm_aimd(), "p:llm:aimd");
        assert_eq!(k.llm_aimd_slots(), "p:llm:aimd:slots");
    }

    /// The templates the campaign scripts fill in give exactly the keys `Keys` builds.
    #[test]
    fn campaign_templates_match_the_keys() {
        let k = Keys::new("p:");
        let t = TenantId::parse("acme").unwrap();
        let c = CampaignId::parse("spring").unwrap();
        let fill = |tpl: &str| tpl.replace("{t}", "acme").replace("{c}", "spring");
        let [
            ready,
            delayed,
            contacts,
            seq,
            campaigns,
            active,
            caps,
            hold,
            counts,
            calls,
        ] = k.cq_templates();
        assert_eq!(fill(&ready), k.cq_ready(&t, &c));
        assert_eq!(k.cq_ready(&t, &c), "p:cq:acme:spring:ready");
        assert_eq!(fill(&delayed), k.cq_delayed(&t, &c));
        assert_eq!(fill(&contacts), k.cq_contacts(&t, &c));
        assert_eq!(fill(&seq), k.cq_seq(&t, &c));
        assert_eq!(fill(&campaigns), k.cq_campaigns(&t));
        assert_eq!(fill(&active), k.cq_active(&t));
        assert_eq!(fill(&caps), k.cq_caps(&t));
        assert_eq!(fill(&hold), k.cq_hold(&t));
        assert_eq!(fill(&counts), k.cq_counts(&t, &c));
        assert_eq!(fill(&calls), k.cq_calls(&t, &c));
        assert_eq!(k.cq_tenants(), "p:cq:tenants");
        assert_eq!(k.cq_attempt("a1"), "p:cq:attempt:a1");
    }
}
