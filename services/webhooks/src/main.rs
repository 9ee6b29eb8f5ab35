//! `webhooks`: the call-webhook worker as a binary (`webhooks --help` lists every setting).

fn main() -> anyhow::Result<()> {
    sb_runtime::stage_main::<sb_webhooks::Webhooks>()
}
