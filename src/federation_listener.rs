//! The federation listener's TLS: HTTPS (rustls) in front of the Server-Server API. The certificate
//! comes from `federation.tls_cert`/`tls_key`, or is a self-signed one generated on first start
//! and kept under the data directory (peers that verify certificates need a real one).

use std::{path::Path, sync::Arc};

use anyhow::Context;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};

use crate::Config;

fn load(cert: &Path, key: &Path) -> anyhow::Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)> {
    let certs = CertificateDer::pem_file_iter(cert)
        .with_context(|| format!("reading {}", cert.display()))?
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("parsing {}", cert.display()))?;
    let key = PrivateKeyDer::from_pem_file(key).with_context(|| format!("reading {}", key.display()))?;
    Ok((certs, key))
}

/// The configured certificate, or the generated one (created now if missing).
pub fn tls_config(config: &Config) -> anyhow::Result<Arc<rustls::ServerConfig>> {
    let (certs, key) = match (&config.federation.tls_cert, &config.federation.tls_key) {
        (Some(cert), Some(key)) => load(cert, key)?,
        (None, None) => {
            let dir = config.storage.path.join("federation_tls");
            let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
            if !cert.is_file() || !key.is_file() {
                std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
                let host = config.server_name.host().to_owned();
                let generated = rcgen::generate_simple_self_signed(vec![host])
                    .context("generating a self-signed federation certificate")?;
                std::fs::write(&key, generated.signing_key.serialize_pem())
                    .with_context(|| format!("writing {}", key.display()))?;
                #[cfg(unix)]
                {
                    use std::os::unix::fs::PermissionsExt;
                    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600))?;
                }
                std::fs::write(&cert, generated.cert.pem())
                    .with_context(|| format!("writing {}", cert.display()))?;
                tracing::warn!(path = %cert.display(), "generated a self-signed federation certificate");
            }
            load(&cert, &key)?
        }
        _ => anyhow::bail!("invalid configuration: federation.tls_cert and federation.tls_key go together"),
    };
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut server = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .context("the federation certificate and key do not match")?;
    server.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(server))
}
