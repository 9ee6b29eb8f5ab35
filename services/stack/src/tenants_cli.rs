//! `switchboard tenants validate|diff|get|put`: check a tenants file before it is deployed,
//! see what a change does, tenant by tenant and field by field, and read or change the live
//! tenants file through the console's admin API (ARCHITECTURE §2d).
//!
//! Consumes tenants files (TOML, ARCHITECTURE §2a) and the console's answers; produces the
//! validation verdict (the error names the tenant and the field, as every service would
//! refuse it), a diff (tenants added or removed, each changed field with its old and new
//! value), the live file or one tenant's table as TOML, and new revisions. State: none.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use sb_runtime::Tenants;

/// `switchboard tenants …`.
#[derive(Debug, clap::Args)]
pub struct TenantsArgs {
    #[command(subcommand)]
    command: TenantsCommand,
}

#[derive(Debug, clap::Subcommand)]
enum TenantsCommand {
    /// Check a tenants file as the services will: exit 1 with the tenant and field at fault.
    Validate { file: PathBuf },
    /// What changes from OLD to NEW, per tenant and field (both must be valid).
    Diff { old: PathBuf, new: PathBuf },
    /// Print the live tenants file (TOML) new calls are served with, or one tenant's table.
    Get {
        /// Only this tenant's table.
        tenant: Option<String>,
        #[command(flatten)]
        console: ConsoleArgs,
    },
    /// Store a new revision of the live tenants file: a whole file, or with `--tenant` one
    /// tenant's table (a TOML file of its fields, without the `[[tenant]]` header). New
    /// calls get it; live calls keep the revision they started with.
    Put {
        file: PathBuf,
        #[arg(long)]
        tenant: Option<String>,
        /// Only over this revision (what `get` printed); refused if the file moved on.
        #[arg(long)]
        if_match: Option<u64>,
        #[command(flatten)]
        console: ConsoleArgs,
    },
}

/// Where the console is, and the operator token.
#[derive(Debug, clap::Args)]
pub struct ConsoleArgs {
    #[arg(long, env = "SB_CONSOLE_URL", default_value = "http://127.0.0.1:8095")]
    pub(crate) console_url: String,
    #[arg(long, env = "SB_OPERATOR_TOKEN", hide_env_values = true)]
    pub(crate) operator_token: String,
}

/// Runs the command; `Ok(false)` when the file is invalid or refused (exit 1).
pub async fn run(args: TenantsArgs) -> anyhow::Result<bool> {
    match args.command {
        TenantsCommand::Get { tenant, console } => {
            let (revision, text) = crate::tenants_remote::get(&console, tenant.as_deref()).await?;
            println!("# revision {revision}");
            print!("{text}");
            Ok(true)
        }
        TenantsCommand::Put {
            file,
            tenant,
            if_match,
            console,
        } => {
            let text =
                std::fs::read_to_string(&file).with_context(|| file.display().to_string())?;
            if tenant.is_none()
                && let Err(error) = Tenants::parse(&text)
            {
                eprintln!("{}: {error}", file.display());
                return Ok(false);
            }
            match crate::tenants_remote::put(&console, tenant.as_deref(), &text, if_match).await? {
                Ok(revision) => {
                    println!("stored: revision {revision} (new calls get it)");
                    Ok(true)
                }
                Err(refusal) => {
                    eprintln!("{refusal}");
                    Ok(false)
                }
            }
        }
        TenantsCommand::Validate { file } => match Tenants::load(&file) {
            Ok(tenants) => {
                println!("{}: valid, {} tenants", file.display(), tenants.len());
                Ok(true)
            }
            Err(error) => {
                eprintln!("{error}");
                Ok(false)
            }
        },
        TenantsCommand::Diff { old, new } => {
            for file in [&old, &new] {
                if let Err(error) = Tenants::load(file) {
                    eprintln!("{error}");
                    return Ok(false);
                }
            }
            let changes = diff(&read(&old)?, &read(&new)?);
            if changes.is_empty() {
                println!("no change");
            }
            for change in changes {
                println!("{change}");
            }
            Ok(true)
        }
    }
}

fn read(path: &Path) -> anyhow::Result<toml::Table> {
    let text = std::fs::read_to_string(path).with_context(|| path.display().to_string())?;
    Ok(toml::from_str(&text)?)
}

/// Each tenant's table by id, and each tier's by name (prefixed `tier `).
fn sections(file: &toml::Table) -> BTreeMap<String, toml::Table> {
    let mut out = BTreeMap::new();
    if let Some(toml::Value::Table(tiers)) = file.get("tiers") {
        for (name, tier) in tiers {
            if let toml::Value::Table(tier) = tier {
                out.insert(format!("tier {name}"), tier.clone());
            }
        }
    }
    if let Some(toml::Value::Array(tenants)) = file.get("tenant") {
        for tenant in tenants.iter().filter_map(toml::Value::as_table) {
            let id = tenant
                .get("id")
                .and_then(toml::Value::as_str)
                .unwrap_or("?");
            out.insert(format!("tenant {id}"), tenant.clone());
        }
    }
    out
}

/// One line per change: `+ tenant x`, `- tenant y`, `~ tenant z: field: old → new`.
pub fn diff(old: &toml::Table, new: &toml::Table) -> Vec<String> {
    let (old, new) = (sections(old), sections(new));
    let mut lines = Vec::new();
    for (name, table) in &new {
        let Some(before) = old.get(name) else {
            lines.push(format!("+ {name}"));
            continue;
        };
        let keys: std::collections::BTreeSet<&String> = before.keys().chain(table.keys()).collect();
        for key in keys {
            let (a, b) = (before.get(key), table.get(key));
            if a != b {
                let show =
                    |v: Option<&toml::Value>| v.map_or("(unset)".to_owned(), ToString::to_string);
                lines.push(format!("~ {name}: {key}: {} → {}", show(a), show(b)));
            }
        }
    }
    for name in old.keys().filter(|n| !new.contains_key(*n)) {
        lines.push(format!("- {name}"));
    }
    lines
}

#[cfg(test)]
mod tests {
    use sb_runtime::tenants::testing::TenantToml;

    use super::*;

    fn table(file: &TenantToml) -> toml::Table {
        toml::from_str(&file.to_string()).unwrap()
    }

    /// A changed prompt, an added tenant, a removed one and a tier's limit, each named.
    #[test]
    fn the_diff_names_each_change() {
        let old = TenantToml::new()
            .tier("standard", 4, 60)
            .tenant("acme", "+15005550006", "standard")
            .set("system_prompt", "Be brief.")
            .tenant("gone", "+15005550008", "standard");
        let new = TenantToml::new()
            .tier("standard", 8, 60)
            .tenant("acme", "+15005550006", "standard")
            .set("system_prompt", "Be brief and kind.")
            .tenant("globex", "+15005550007", "standard");
        let lines = diff(&table(&old), &table(&new));
        assert_eq!(
            lines,
            [
                "~ tenant acme: system_prompt: \"Be brief.\" → \"Be brief and kind.\"",
                "+ tenant globex",
                "~ tier standard: llm_concurrency: 4 → 8",
                "- tenant gone",
            ]
        );
        assert!(diff(&table(&old), &table(&old)).is_empty());
    }
}
