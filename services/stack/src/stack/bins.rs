//! Where the stack's binaries are, and building them for tests.
//!
//! Consumes the running executable's path and cargo; produces the directory of the
//! service and stand-in binaries. State: none.

use std::path::PathBuf;

use anyhow::{Context as _, bail};

use crate::servers::workspace_root;

/// Where the service binaries are: next to the running executable (`target/<profile>/`),
/// or its parent when running from `deps/` (a test).
pub fn binaries_dir() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let mut dir = exe
        .parent()
        .context("executable without a directory")?
        .to_path_buf();
    if dir.file_name().is_some_and(|n| n == "deps") {
        dir.pop();
    }
    let missing: Vec<&str> = [
        "ingress", "stt", "agent", "tts", "dialer", "webhooks", "console", "sim",
    ]
    .into_iter()
    .filter(|b| !dir.join(b).exists())
    .collect();
    if !missing.is_empty() {
        bail!(
            "{} not built in {}: run `cargo build --bins` (or `just build`) first",
            missing.join(", "),
            dir.display()
        );
    }
    Ok(dir)
}

/// Builds the workspace's binaries with cargo (a no-op when they are fresh), for tests that
/// run the stack: the binaries of other packages are not built by `cargo test`.
pub fn ensure_built(release: bool) -> anyhow::Result<()> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut command = std::process::Command::new(cargo);
    command
        .current_dir(workspace_root())
        .args(["build", "--quiet", "--bins"]);
    // Under `cargo test` these describe the test's package; build scripts that watch them
    // (ring's) would see a changed environment and rebuild half the tree here, and again on
    // the next `cargo` run.
    let set_for_tests = [
        "CARGO_MANIFEST_",
        "CARGO_PKG_",
        "CARGO_CRATE_",
        "CARGO_BIN_",
    ];
    for (name, _) in std::env::vars_os() {
        let name = name.to_string_lossy().into_owned();
        if set_for_tests.iter().any(|p| name.starts_with(p))
            || ["CARGO_PRIMARY_PACKAGE", "CARGO_TARGET_TMPDIR"].contains(&name.as_str())
        {
            command.env_remove(name);
        }
    }
    // The whole workspace's binaries, as `just build` and CI build them: the same package
    // set resolves the same features, so binaries CI built are fresh here (a `-p` list
    // resolves its own, and rebuilt every service inside the first end-to-end test).
    command.arg("--workspace");
    if release {
        command.arg("--release");
    }
    let status = command.status().context("cannot run cargo")?;
    if !status.success() {
        bail!("cargo build failed ({status})");
    }
    Ok(())
}
