//! HTTPS beside the plain listener (feature `tls`): the certificate, and the start-up CA.
//!
//! The Python compute-module SDK only speaks HTTPS, so the emulator also listens for TLS.
//! A TLS connection is an ordinary connection of the vendored tiny_http (its `listen_tls`):
//! the connection thread does the rustls handshake and then reads and writes plaintext
//! through rustls, feeding the same request queue and workers as the plain listener. This
//! module only binds the listener and makes the rustls `ServerConfig`.
//!
//! Without `--tls-cert`/`--tls-key`, start-up makes a throwaway CA and a server certificate
//! for `localhost`, `127.0.0.1` and `::1` signed by it, and writes the CA certificate to
//! `ca.pem` in a fresh private directory under the system temp dir (removed on shutdown).
//! That file is what modules trust (`CONNECTIONS_TO_OTHER_PODS_CA_PATH`, `DEFAULT_CA_PATH`).

use std::io::{self, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use rustls::ServerConfig;

/// Validity of generated certificates, counted from yesterday.
const CERT_DAYS: i64 = 366;

/// A bound TLS listener with its rustls configuration and, when generated, its CA file.
/// Dropping it removes the generated CA directory.
pub(crate) struct TlsListener {
    listener: Option<TcpListener>,
    config: Arc<ServerConfig>,
    addr: SocketAddr,
    base_url: String,
    ca_dir: Option<PathBuf>,
    ca_path: Option<PathBuf>,
}

impl TlsListener {
    /// Binds `host:port` (0 picks a free port).
    ///
    /// `cert` and `key` are PEM files (a certificate chain, leaf first, and its private key);
    /// give both or neither. With neither, a CA and a server certificate are generated.
    pub fn bind(
        host: &str,
        port: u16,
        cert: Option<&Path>,
        key: Option<&Path>,
    ) -> io::Result<TlsListener> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let listener = TcpListener::bind((host, port)).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("cannot listen for TLS on {host}:{port}: {e}"),
            )
        })?;
        #[cfg(unix)]
        crate::sys::widen_backlog(&listener)
            .unwrap_or_else(|e| log::warn!("listen backlog stays 128: {e}"));
        let addr = listener.local_addr()?;
        let identity = match (cert, key) {
            (Some(cert), Some(key)) => Identity::load(cert, key)?,
            (None, None) => Identity::generate(host, &random_hex()?)?,
            _ => return Err(invalid_input(HALF_A_PAIR)),
        };
        let base_url = identity.base_url(connectable(addr));
        let mut config = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .and_then(|b| {
                b.with_no_client_auth()
                    .with_single_cert(identity.chain, identity.key)
            })
            .map_err(|e| invalid_input(&format!("cannot use the TLS certificate and key: {e}")))?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        let (ca_dir, ca_path) = match &identity.ca_pem {
            Some(pem) => {
                let (dir, path) = write_ca(pem)?;
                (Some(dir), Some(path))
            }
            None => (None, None),
        };
        Ok(TlsListener {
            listener: Some(listener),
            config: Arc::new(config),
            addr,
            base_url,
            ca_dir,
            ca_path,
        })
    }

    /// The listener and configuration for the HTTP server to serve; `None` once taken.
    pub fn take_listener(&mut self) -> Option<(TcpListener, Arc<ServerConfig>)> {
        let listener = self.listener.take()?;
        Some((listener, self.config.clone()))
    }

    /// The bound address (useful with port 0).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `https://HOST:PORT` with a loopback host the certificate is valid for (an IP address
    /// when it covers one, else `localhost`).
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// The generated CA certificate (PEM) that clients should trust; `None` with a
    /// user-provided certificate.
    pub fn ca_path(&self) -> Option<&Path> {
        self.ca_path.as_deref()
    }
}

impl Drop for TlsListener {
    fn drop(&mut self) {
        if let Some(dir) = self.ca_dir.take() {
            if let Err(e) = std::fs::remove_dir_all(&dir) {
                log::warn!("tls: cannot remove {}: {e}", dir.display());
            }
        }
    }
}

/// Encodes DER as PEM with the given label (e.g. `CERTIFICATE`, `PRIVATE KEY`), base64 in
/// lines of 64 (RFC 7468). rcgen's `pem()` is not used: it needs rcgen's `pem` feature, which
/// would compile the `pem` crate, not otherwise in the tree.
pub fn pem(label: &str, der: &[u8]) -> String {
    let body = crate::api::wire::base64_encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    // Base64 is ASCII, so every 64-byte cut is a character boundary.
    for line in body.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).unwrap_or_default());
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// The address to connect to for a listener bound to `addr` (unspecified → loopback).
pub(crate) fn connectable(addr: SocketAddr) -> SocketAddr {
    match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => (Ipv4Addr::LOCALHOST, addr.port()).into(),
        IpAddr::V6(ip) if ip.is_unspecified() => (Ipv6Addr::LOCALHOST, addr.port()).into(),
        _ => addr,
    }
}

const HALF_A_PAIR: &str =
    "a TLS certificate and key must be given together (--tls-cert and --tls-key)";

fn invalid_input(message: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, message.to_string())
}

fn other(message: String) -> io::Error {
    io::Error::other(message)
}

/// The server's certificate chain and key, and the CA to publish when generated.
struct Identity {
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    ca_pem: Option<String>,
}

impl Identity {
    fn load(cert: &Path, key: &Path) -> io::Result<Identity> {
        let pem_error = |path: &Path, what: &str, e: rustls::pki_types::pem::Error| {
            invalid_input(&format!("cannot read {what} from {}: {e}", path.display()))
        };
        let chain = CertificateDer::pem_file_iter(cert)
            .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
            .map_err(|e| pem_error(cert, "a PEM certificate", e))?;
        if chain.is_empty() {
            return Err(invalid_input(&format!(
                "{} contains no PEM CERTIFICATE",
                cert.display()
            )));
        }
        let key = PrivateKeyDer::from_pem_file(key)
            .map_err(|e| pem_error(key, "a PEM private key", e))?;
        Ok(Identity {
            chain,
            key,
            ca_pem: None,
        })
    }

    /// A fresh CA (CA:TRUE, keyCertSign) and a leaf signed by it (CA:FALSE, serverAuth, SANs
    /// `localhost`, `127.0.0.1`, `::1` and the bind host when it names a specific address).
    ///
    /// `tag` makes the CA's name unique, so a client trusting another run's CA gets
    /// "unknown issuer" rather than a signature error.
    fn generate(host: &str, tag: &str) -> io::Result<Identity> {
        use rcgen::{
            BasicConstraints, CertificateParams, DistinguishedName, DnType,
            ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose,
        };
        let fail =
            |what: &str, e: rcgen::Error| other(format!("cannot generate the TLS {what}: {e}"));
        let yesterday = time::OffsetDateTime::now_utc().replace_time(time::Time::MIDNIGHT)
            - time::Duration::days(1);
        let (not_before, not_after) = (yesterday, yesterday + time::Duration::days(CERT_DAYS));

        let ca_key = KeyPair::generate().map_err(|e| fail("CA key", e))?;
        let mut ca = CertificateParams::default();
        ca.distinguished_name = DistinguishedName::new();
        ca.distinguished_name.push(
            DnType::CommonName,
            format!("foundry-emulator local CA {tag}"),
        );
        ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        ca.use_authority_key_identifier_extension = true;
        ca.not_before = not_before;
        ca.not_after = not_after;
        let ca_cert = ca
            .self_signed(&ca_key)
            .map_err(|e| fail("CA certificate", e))?;

        let mut names = vec![
            "localhost".to_string(),
            "127.0.0.1".to_string(),
            "::1".to_string(),
        ];
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let specific = match host.parse::<IpAddr>() {
            Ok(ip) => !ip.is_unspecified(),
            Err(_) => !host.is_empty(),
        };
        if specific && !names.iter().any(|n| n.eq_ignore_ascii_case(host)) {
            names.push(host.to_string());
        }
        let leaf_key = KeyPair::generate().map_err(|e| fail("server key", e))?;
        let mut leaf = CertificateParams::new(names).map_err(|e| fail("server certificate", e))?;
        leaf.distinguished_name = DistinguishedName::new();
        leaf.distinguished_name
            .push(DnType::CommonName, "foundry-emulator");
        leaf.is_ca = IsCa::ExplicitNoCa;
        leaf.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        leaf.use_authority_key_identifier_extension = true;
        leaf.not_before = not_before;
        leaf.not_after = not_after;
        let issuer = Issuer::new(ca, ca_key);
        let leaf_cert = leaf
            .signed_by(&leaf_key, &issuer)
            .map_err(|e| fail("server certificate", e))?;

        Ok(Identity {
            chain: vec![leaf_cert.der().clone()],
            key: PrivatePkcs8KeyDer::from(leaf_key.serialize_der()).into(),
            ca_pem: Some(pem("CERTIFICATE", ca_cert.der())),
        })
    }

    /// `https://` plus the first of (the listener's IP, `localhost`) the leaf is valid for.
    fn base_url(&self, addr: SocketAddr) -> String {
        let ip_url = format!("https://{addr}");
        let Some(parsed) = self
            .chain
            .first()
            .and_then(|leaf| rustls::server::ParsedCertificate::try_from(leaf).ok())
        else {
            return ip_url;
        };
        let covers =
            |name: ServerName<'_>| rustls::client::verify_server_name(&parsed, &name).is_ok();
        if covers(ServerName::IpAddress(addr.ip().into())) {
            return ip_url;
        }
        if ServerName::try_from("localhost").is_ok_and(covers) {
            return format!("https://localhost:{}", addr.port());
        }
        log::warn!(
            "tls: the certificate is valid for neither {} nor localhost; clients will reject it",
            addr.ip()
        );
        ip_url
    }
}

/// 16 random hex digits, from the same source as ids and tokens.
fn random_hex() -> io::Result<String> {
    let mut tag = String::with_capacity(16);
    crate::ids::push_hex(&mut tag, &crate::ids::try_random_bytes()?[..8]);
    Ok(tag)
}

/// Creates `foundry-emulator-<pid>-<random>/ca.pem` under the temp dir, the directory private
/// to this user and new (never an existing one).
fn write_ca(pem: &str) -> io::Result<(PathBuf, PathBuf)> {
    let suffix = random_hex()?;
    let dir =
        std::env::temp_dir().join(format!("foundry-emulator-{}-{suffix}", std::process::id()));
    let mut builder = std::fs::DirBuilder::new();
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder
        .create(&dir)
        .map_err(|e| io::Error::new(e.kind(), format!("cannot create {}: {e}", dir.display())))?;
    let path = dir.join("ca.pem");
    let written = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&path)
        .and_then(|mut file| file.write_all(pem.as_bytes()));
    if let Err(e) = written {
        let _ = std::fs::remove_dir_all(&dir);
        return Err(io::Error::new(
            e.kind(),
            format!("cannot write {}: {e}", path.display()),
        ));
    }
    Ok((dir, path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pem_wraps_at_64() {
        let text = pem("CERTIFICATE", &[0u8; 100]);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "-----BEGIN CERTIFICATE-----");
        assert_eq!(lines[1].len(), 64);
        assert_eq!(lines.last(), Some(&"-----END CERTIFICATE-----"));
        let der = CertificateDer::from_pem_slice(text.as_bytes()).unwrap();
        assert_eq!(der.as_ref(), &[0u8; 100][..]);
    }
}
