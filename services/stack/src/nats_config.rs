//! What a test nats-server is started with: its configuration file (limits as
//! `nats/dev.conf`, the generated users of `sb_runtime::nats_auth`, TLS and cluster blocks
//! when asked for) and a throw-away CA with a server certificate for 127.0.0.1.
//!
//! Consumes the [`Credentials`] of a server (or a cluster) and the node's place in its
//! cluster; produces the config text and PEM files. State: none (files in the caller's
//! temp dir).

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
};

use sb_runtime::nats_auth;

use crate::nats_server::Credentials;

/// One node of a cluster: its name, route port and every node's route port.
pub(crate) struct Node {
    pub(crate) name: String,
    pub(crate) route: SocketAddr,
    pub(crate) routes: Vec<SocketAddr>,
}

/// The whole configuration of one node: limits as `nats/dev.conf`, the generated users,
/// TLS and cluster blocks when asked for.
pub(crate) fn server_config(
    credentials: &Credentials,
    cluster: Option<&Node>,
    dir: &Path,
) -> String {
    let mut text = format!(
        "max_payload: 1MB\njetstream {{\n  store_dir: {:?}\n  max_memory_store: 256MB\n  max_file_store: 8GB\n}}\n",
        dir.join("store")
    );
    if let Some((cert, key)) = &credentials.tls_files {
        text.push_str(&format!(
            "tls {{\n  cert_file: {cert:?}\n  key_file: {key:?}\n}}\n"
        ));
    }
    if let Some(node) = cluster {
        let routes: Vec<String> = node
            .routes
            .iter()
            .filter(|r| **r != node.route)
            .map(|r| format!("\"nats-route://{r}\""))
            .collect();
        text.push_str(&format!(
            "server_name: {}\ncluster {{\n  name: switchboard\n  listen: \"{}\"\n  routes: [{}]\n}}\n",
            node.name,
            node.route,
            routes.join(", ")
        ));
    }
    if !credentials.passwords.is_empty() {
        text.push_str(&nats_auth::server_config());
    }
    text
}

/// A CA and a server certificate for 127.0.0.1 signed by it: `(ca, cert, key)` PEM files.
pub(crate) fn write_certificates(dir: &Path) -> anyhow::Result<(PathBuf, PathBuf, PathBuf)> {
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate()?)?;
    let key = KeyPair::generate()?;
    let cert = CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])?
        .signed_by(&key, &ca)?;
    let files = (
        dir.join("ca.pem"),
        dir.join("server.pem"),
        dir.join("server-key.pem"),
    );
    std::fs::write(&files.0, ca.pem())?;
    std::fs::write(&files.1, cert.pem())?;
    std::fs::write(&files.2, key.serialize_pem())?;
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nats_server::{NatsOptions, service_env};
    use sb_schemas::roles::Role;

    #[test]
    fn config_has_users_tls_and_routes_when_asked() {
        let credentials = Credentials::new(&NatsOptions {
            tls: true,
            auth: true,
        })
        .unwrap();
        let node = Node {
            name: "n1".into(),
            route: "127.0.0.1:1".parse().unwrap(),
            routes: vec![
                "127.0.0.1:1".parse().unwrap(),
                "127.0.0.1:2".parse().unwrap(),
            ],
        };
        let text = server_config(&credentials, Some(&node), Path::new("/tmp/x"));
        assert!(text.contains("tls {"), "{text}");
        assert!(
            text.contains("routes: [\"nats-route://127.0.0.1:2\"]"),
            "{text}"
        );
        assert!(text.contains("user: ingress"), "{text}");
        for role in Role::ALL {
            let password = credentials.password(role).unwrap();
            assert!(!text.contains(password.expose()), "no password in the file");
        }
        let open = Credentials::new(&NatsOptions {
            tls: false,
            auth: false,
        })
        .unwrap();
        let text = server_config(&open, None, Path::new("/tmp/x"));
        assert!(
            !text.contains("accounts") && !text.contains("tls {"),
            "{text}"
        );
        assert_eq!(service_env("nats://x", &open, Role::Agent).len(), 1);
    }
}
