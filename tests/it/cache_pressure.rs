//! The TTS cache lives on its own Redis (allkeys-lru), so filling it past its memory limit
//! evicts cached audio and never a live session, against real servers.

use redis::aio::MultiplexedConnection;
use sb_runtime::{
    Runtime, Secret,
    redis::tts_cache::{Speech, TTS_CACHE_TTL},
};
use sb_schemas::testing::{sid, tenant_id};
use sb_tests::{RedisServer, RedisSettings, TestEnv};

async fn info_field(conn: &mut MultiplexedConnection, section: &str, field: &str) -> u64 {
    let info: String = redis::cmd("INFO")
        .arg(section)
        .query_async(conn)
        .await
        .unwrap();
    info.lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {field} in {info}"))
}

#[tokio::test]
async fn a_full_tts_cache_evicts_audio_not_sessions() {
    let env = TestEnv::start().await.unwrap();
    let cache_server = RedisServer::start_with(RedisSettings::cache("4mb"))
        .await
        .unwrap();
    let mut config = env.runtime_config();
    config.redis_cache_url = Some(Secret::new(cache_server.url.clone()));
    let rt = Runtime::start("tts", config).await.unwrap();

    let acme = tenant_id("acme");
    let calls: Vec<_> = (0..200).map(sid).collect();
    for call in &calls {
        rt.redis
            .session_start(
                call,
                &acme,
                &sb_runtime::redis::session::Parties::default(),
                0,
            )
            .await
            .unwrap();
    }
    // 400 sentences of 32 KiB audio: three times the cache's 4 MiB, through the handle the
    // tts stage caches with.
    let audio = vec![0x7f_u8; 32 * 1024];
    let texts: Vec<String> = (0..400).map(|i| format!("Sentence number {i}.")).collect();
    for text in &texts {
        let speech = Speech {
            engine: "azure",
            format: "raw-8khz-8bit-mono-mulaw",
            voice: "jenny",
            text,
        };
        rt.cache
            .tts_put(&speech, &audio, TTS_CACHE_TTL)
            .await
            .unwrap();
    }

    let mut cache = redis::Client::open(cache_server.url.as_str())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    assert!(
        info_field(&mut cache, "stats", "evicted_keys").await > 0,
        "the cache was filled past maxmemory and evicted"
    );
    let mut state = env.redis_raw().await.unwrap();
    assert_eq!(info_field(&mut state, "stats", "evicted_keys").await, 0);
    for call in &calls {
        let session = rt.redis.session_load(call).await.unwrap();
        assert!(session.is_some(), "session {call} was evicted");
    }
    let cached_on_state: Vec<String> = redis::cmd("KEYS")
        .arg("tts:*")
        .query_async(&mut state)
        .await
        .unwrap();
    assert!(
        cached_on_state.is_empty(),
        "audio landed on the sessions instance"
    );
}
