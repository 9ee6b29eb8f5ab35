//! `tts`: the tts stage as a binary (`tts --help` lists every setting).

fn main() -> anyhow::Result<()> {
    sb_runtime::stage_main::<sb_tts::Tts>()
}
