//! `agent`: the agent stage as a binary (`agent --help` lists every setting).

fn main() -> anyhow::Result<()> {
    sb_runtime::stage_main::<sb_agent::Agent>()
}
