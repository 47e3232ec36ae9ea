//! HTTPS beside the plain listener: a small TLS-terminating proxy (feature `tls`).
//!
//! The Python compute-module SDK only speaks HTTPS, so the emulator also listens for TLS.
//! Rather than a second HTTP stack, [`TlsProxy`] accepts TLS connections, does the rustls
//! handshake, and pipes the decrypted bytes to the emulator's own plain listener on loopback:
//! every route, limit and lane behaves exactly as over plain HTTP.
//!
//! Each connection gets a thread that does the handshake under a deadline and then pumps
//! client → backend, plus one thread that pumps backend → client. Both block on their socket
//! reads (no polling, so an idle long poll costs no CPU) and share the
//! [`rustls::ServerConnection`] behind a mutex that is never held across a socket read.
//! Writes to the client socket are serialized by a second mutex, taken before the connection's,
//! so TLS records leave in the order rustls produced them. EOF or an error on either side
//! closes both sockets.
//!
//! Without `--tls-cert`/`--tls-key`, start-up makes a throwaway CA and a server certificate
//! for `localhost`, `127.0.0.1` and `::1` signed by it, and writes the CA certificate to
//! `ca.pem` in a fresh private directory under the system temp dir (removed on shutdown).
//! That file is what modules trust (`CONNECTIONS_TO_OTHER_PODS_CA_PATH`, `DEFAULT_CA_PATH`).

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use rustls::{ServerConfig, ServerConnection};

/// Open TLS connections beyond which new ones are closed at once.
pub const MAX_CONNECTIONS: usize = 256;
/// How long a client has to complete the TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// A write to the client that makes no progress for this long ends the connection.
const WRITE_TIMEOUT: Duration = Duration::from_secs(60);
const BACKEND_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long shutdown waits for closed connections' threads to notice.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);
const BUF_SIZE: usize = 16 * 1024;
/// Validity of generated certificates, counted from yesterday.
const CERT_DAYS: i64 = 366;

/// A running TLS listener in front of the plain one. Dropping it shuts it down.
pub struct TlsProxy {
    addr: SocketAddr,
    base_url: String,
    ca_dir: Option<PathBuf>,
    ca_path: Option<PathBuf>,
    stop: Arc<AtomicBool>,
    conns: Arc<Conns>,
    accept: Option<JoinHandle<()>>,
}

impl TlsProxy {
    /// Binds `host:port` (0 picks a free port) and forwards decrypted traffic to `backend`.
    ///
    /// `cert` and `key` are PEM files (a certificate chain, leaf first, and its private key);
    /// give both or neither. With neither, a CA and a server certificate are generated.
    pub fn start(
        host: &str,
        port: u16,
        cert: Option<&Path>,
        key: Option<&Path>,
        backend: SocketAddr,
    ) -> io::Result<TlsProxy> {
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
            (None, None) => Identity::generate(host, &random_hex(&provider)?)?,
            _ => return Err(invalid_input(HALF_A_PAIR)),
        };
        let base_url = identity.base_url(connectable(addr));
        let mut config = ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .and_then(|b| {
                b.with_no_client_auth()
                    .with_single_cert(identity.chain, identity.key)
            })
            .map_err(|e| invalid_input(&format!("cannot use the TLS certificate and key: {e}")))?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        let config = Arc::new(config);

        let (ca_dir, ca_path) = match &identity.ca_pem {
            Some(pem) => {
                let (dir, path) = write_ca(pem, &provider)?;
                (Some(dir), Some(path))
            }
            None => (None, None),
        };
        let stop = Arc::new(AtomicBool::new(false));
        let conns = Arc::new(Conns::default());
        let accept = {
            let (stop, conns) = (stop.clone(), conns.clone());
            std::thread::Builder::new()
                .name("tls-accept".into())
                .spawn(move || accept_loop(listener, config, backend, &stop, &conns))
        };
        let accept = match accept {
            Ok(handle) => handle,
            Err(e) => {
                if let Some(dir) = &ca_dir {
                    let _ = std::fs::remove_dir_all(dir);
                }
                return Err(e);
            }
        };
        Ok(TlsProxy {
            addr,
            base_url,
            ca_dir,
            ca_path,
            stop,
            conns,
            accept: Some(accept),
        })
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

    /// Stops accepting, closes open connections (waiting briefly for their threads), and
    /// removes the generated CA directory.
    pub fn shutdown(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        let Some(accept) = self.accept.take() else {
            return;
        };
        self.stop.store(true, Ordering::SeqCst);
        // Wake the blocking accept(); it sees the flag and returns, dropping the listener.
        match TcpStream::connect_timeout(&connectable(self.addr), Duration::from_secs(1)) {
            Ok(_) => {
                let _ = accept.join();
            }
            Err(e) => log::warn!("tls: cannot wake the accept thread on {}: {e}", self.addr),
        }
        self.conns.close_all(SHUTDOWN_GRACE);
        if let Some(dir) = self.ca_dir.take() {
            if let Err(e) = std::fs::remove_dir_all(&dir) {
                log::warn!("tls: cannot remove {}: {e}", dir.display());
            }
        }
    }
}

impl Drop for TlsProxy {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Encodes DER as PEM with the given label (e.g. `CERTIFICATE`, `PRIVATE KEY`).
pub fn pem(label: &str, der: &[u8]) -> String {
    let body = crate::api::wire::base64_encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in body.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(line));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// The address to connect to for a listener bound to `addr` (unspecified → loopback).
pub fn connectable(addr: SocketAddr) -> SocketAddr {
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
        let today = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| (d.as_secs() / 86_400) as i64);
        let day = |days: i64| {
            let (y, m, d) = civil_date(days);
            rcgen::date_time_ymd(y, m, d)
        };
        let (not_before, not_after) = (day(today - 1), day(today - 1 + CERT_DAYS));

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

/// (year, month, day) of a count of days since 1970-01-01 (proleptic Gregorian, UTC).
fn civil_date(days: i64) -> (i32, u8, u8) {
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year as i32, month as u8, day as u8)
}

/// 16 random hex digits.
fn random_hex(provider: &CryptoProvider) -> io::Result<String> {
    let mut random = [0u8; 8];
    provider
        .secure_random
        .fill(&mut random)
        .map_err(|_| other("the system has no secure random numbers".into()))?;
    Ok(random.iter().map(|b| format!("{b:02x}")).collect())
}

/// Creates `foundry-emulator-<pid>-<random>/ca.pem` under the temp dir, the directory private
/// to this user and new (never an existing one).
fn write_ca(pem: &str, provider: &CryptoProvider) -> io::Result<(PathBuf, PathBuf)> {
    let suffix = random_hex(provider)?;
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

/// Open connections: their sockets, so shutdown can close them, and the count for the cap.
#[derive(Default)]
struct Conns {
    open: Mutex<Open>,
    changed: Condvar,
}

#[derive(Default)]
struct Open {
    next_id: u64,
    closing: bool,
    sockets: HashMap<u64, Vec<TcpStream>>,
}

impl Conns {
    fn lock(&self) -> MutexGuard<'_, Open> {
        self.open.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Registers a new connection, unless shutting down or at the cap.
    fn admit(self: &Arc<Self>, stream: &TcpStream) -> Result<Slot, &'static str> {
        let mut open = self.lock();
        if open.closing {
            return Err("shutting down");
        }
        if open.sockets.len() >= MAX_CONNECTIONS {
            return Err("too many open TLS connections");
        }
        let clone = stream.try_clone().map_err(|_| "cannot clone the socket")?;
        open.next_id += 1;
        let id = open.next_id;
        open.sockets.insert(id, vec![clone]);
        Ok(Slot {
            conns: self.clone(),
            id,
        })
    }

    /// Stops admitting, shuts every open socket down (which ends their threads' blocking
    /// reads and writes), and waits up to `grace` for the threads to release their slots.
    fn close_all(&self, grace: Duration) {
        let mut open = self.lock();
        open.closing = true;
        for stream in open.sockets.values().flatten() {
            let _ = stream.shutdown(Shutdown::Both);
        }
        let (open, wait) = self
            .changed
            .wait_timeout_while(open, grace, |open| !open.sockets.is_empty())
            .unwrap_or_else(PoisonError::into_inner);
        if wait.timed_out() {
            log::warn!(
                "tls: {} connection thread(s) still running at shutdown",
                open.sockets.len()
            );
        }
    }
}

/// One admitted connection; dropping it frees the place.
struct Slot {
    conns: Arc<Conns>,
    id: u64,
}

impl Slot {
    /// Registers the backend socket too, so shutdown closes it; false when shutting down.
    fn attach(&self, stream: &TcpStream) -> bool {
        let mut open = self.conns.lock();
        if open.closing {
            return false;
        }
        match (stream.try_clone(), open.sockets.get_mut(&self.id)) {
            (Ok(clone), Some(sockets)) => {
                sockets.push(clone);
                true
            }
            _ => false,
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.conns.lock().sockets.remove(&self.id);
        self.conns.changed.notify_all();
    }
}

fn accept_loop(
    listener: TcpListener,
    config: Arc<ServerConfig>,
    backend: SocketAddr,
    stop: &AtomicBool,
    conns: &Arc<Conns>,
) {
    for stream in listener.incoming() {
        if stop.load(Ordering::SeqCst) {
            break;
        }
        let stream = match stream {
            Ok(stream) => stream,
            Err(e) => {
                log::warn!("tls: accept failed: {e}");
                if !matches!(
                    e.kind(),
                    io::ErrorKind::ConnectionAborted | io::ErrorKind::Interrupted
                ) {
                    // Out of file descriptors and the like: do not spin.
                    std::thread::sleep(Duration::from_millis(100));
                }
                continue;
            }
        };
        let peer = stream
            .peer_addr()
            .map_or_else(|_| "?".to_string(), |a| a.to_string());
        let slot = match conns.admit(&stream) {
            Ok(slot) => slot,
            Err(why) => {
                log::warn!("tls: closing connection from {peer}: {why} (limit {MAX_CONNECTIONS})");
                continue;
            }
        };
        let config = config.clone();
        let spawned = std::thread::Builder::new()
            .name("tls-conn".into())
            .spawn(move || {
                if let Err(e) = serve_connection(stream, config, backend, &slot, &peer) {
                    log::debug!("tls: connection from {peer} ended: {e}");
                }
                drop(slot);
            });
        if let Err(e) = spawned {
            log::warn!("tls: cannot start a connection thread: {e}");
        }
    }
}

/// The state both pump threads of one connection share.
struct Shared {
    /// Taken before `tls` by whoever writes to the client, so records go out in order.
    client_tx: Mutex<TcpStream>,
    tls: Mutex<ServerConnection>,
}

impl Shared {
    fn tls(&self) -> MutexGuard<'_, ServerConnection> {
        self.tls.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Encrypts `plain` (if any) and sends everything rustls has queued to the client.
    fn send(&self, plain: &[u8], close_notify: bool) -> io::Result<()> {
        let mut tx = self
            .client_tx
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let out = {
            let mut tls = self.tls();
            if !plain.is_empty() {
                tls.writer().write_all(plain)?;
            }
            if close_notify {
                tls.send_close_notify();
            }
            pending_tls(&mut tls)?
        };
        tx.write_all(&out)
    }

    /// Sends a queued alert unless the other pump is busy writing (it may be stuck on a client
    /// that does not read; the connection is closing anyway).
    fn try_send_alert(&self) {
        if let Ok(mut tx) = self.client_tx.try_lock() {
            if let Ok(out) = pending_tls(&mut self.tls()) {
                let _ = tx.write_all(&out);
            }
        }
    }
}

fn pending_tls(tls: &mut ServerConnection) -> io::Result<Vec<u8>> {
    let mut out = Vec::new();
    while tls.wants_write() {
        tls.write_tls(&mut out)?;
    }
    Ok(out)
}

fn tls_error(e: rustls::Error) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e)
}

fn serve_connection(
    mut client: TcpStream,
    config: Arc<ServerConfig>,
    backend: SocketAddr,
    slot: &Slot,
    peer: &str,
) -> io::Result<()> {
    let _ = client.set_nodelay(true);
    let mut tls = ServerConnection::new(config).map_err(tls_error)?;
    if let Err(e) = handshake(&mut tls, &mut client) {
        // Worth seeing: a client that does not trust the CA shows up here.
        log::info!("tls: handshake with {peer} failed: {e}");
        return Ok(());
    }
    // Long polls keep connections quiet for many seconds: no read timeout from here on.
    client.set_read_timeout(None)?;
    client.set_write_timeout(Some(WRITE_TIMEOUT))?;

    let backend = match TcpStream::connect_timeout(&backend, BACKEND_CONNECT_TIMEOUT) {
        Ok(stream) => stream,
        Err(e) => {
            log::warn!("tls: cannot reach the HTTP listener at {backend} for {peer}: {e}");
            return Ok(());
        }
    };
    let _ = backend.set_nodelay(true);
    if !slot.attach(&backend) {
        return Ok(());
    }
    tls.set_buffer_limit(None);
    let shared = Arc::new(Shared {
        client_tx: Mutex::new(client.try_clone()?),
        tls: Mutex::new(tls),
    });
    let closer = Arc::new(Closer(client.try_clone()?, backend.try_clone()?));
    let outbound = {
        let (shared, backend, closer) = (shared.clone(), backend.try_clone()?, closer.clone());
        std::thread::Builder::new()
            .name("tls-out".into())
            .spawn(move || {
                pump_out(&shared, backend);
                closer.close();
            })
    };
    let outbound = match outbound {
        Ok(handle) => handle,
        Err(e) => {
            closer.close();
            return Err(e);
        }
    };
    let result = pump_in(&shared, client, backend);
    closer.close();
    let _ = outbound.join();
    result
}

/// The client and backend sockets of one connection: EOF or an error on either closes both,
/// which ends the other pump's blocking read.
struct Closer(TcpStream, TcpStream);

impl Closer {
    fn close(&self) {
        let _ = self.0.shutdown(Shutdown::Both);
        let _ = self.1.shutdown(Shutdown::Both);
    }
}

/// Drives the handshake on the blocking socket, all of it within [`HANDSHAKE_TIMEOUT`].
fn handshake(tls: &mut ServerConnection, client: &mut TcpStream) -> io::Result<()> {
    let deadline = Instant::now() + HANDSHAKE_TIMEOUT;
    client.set_write_timeout(Some(HANDSHAKE_TIMEOUT))?;
    loop {
        while tls.wants_write() {
            tls.write_tls(client)?;
        }
        if !tls.is_handshaking() {
            return Ok(());
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "not completed within the time limit",
            ));
        }
        client.set_read_timeout(Some(left))?;
        match tls.read_tls(client) {
            Ok(0) => {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the client closed the connection",
                ))
            }
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("no handshake within {} s", HANDSHAKE_TIMEOUT.as_secs()),
                ))
            }
            Err(e) => return Err(e),
        }
        if let Err(e) = tls.process_new_packets() {
            // Tell the client why (an alert), best effort.
            while tls.wants_write() {
                if tls.write_tls(client).is_err() {
                    break;
                }
            }
            return Err(tls_error(e));
        }
    }
}

/// Client → backend: read TLS bytes (no lock held), decrypt them under the lock, forward the
/// plaintext. Ends on EOF, close_notify, or any error.
fn pump_in(shared: &Shared, mut client: TcpStream, mut backend: TcpStream) -> io::Result<()> {
    let mut buf = vec![0u8; BUF_SIZE];
    // Application data may have arrived together with the client's last handshake message.
    let mut input: &[u8] = &[];
    loop {
        let (plain, closed, reply) = {
            let mut tls = shared.tls();
            match decrypt(&mut tls, input) {
                Ok((plain, closed)) => (plain, closed, tls.wants_write()),
                Err(e) => {
                    drop(tls);
                    shared.try_send_alert();
                    return Err(e);
                }
            }
        };
        if !plain.is_empty() {
            backend.write_all(&plain)?;
        }
        if reply {
            // Alerts, KeyUpdate answers and the like.
            shared.send(&[], false)?;
        }
        if closed {
            return Ok(());
        }
        let n = loop {
            match client.read(&mut buf) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                other => break other?,
            }
        };
        if n == 0 {
            return Ok(());
        }
        input = &buf[..n];
    }
}

/// Feeds `input` to rustls and returns the decrypted bytes and whether the peer closed.
fn decrypt(tls: &mut ServerConnection, mut input: &[u8]) -> io::Result<(Vec<u8>, bool)> {
    let mut plain = Vec::new();
    loop {
        let state = tls.process_new_packets().map_err(tls_error)?;
        let ready = state.plaintext_bytes_to_read();
        if ready > 0 {
            let start = plain.len();
            plain.resize(start + ready, 0);
            tls.reader().read_exact(&mut plain[start..])?;
        }
        if state.peer_has_closed() {
            return Ok((plain, true));
        }
        if input.is_empty() {
            return Ok((plain, false));
        }
        // Never loop on input rustls refuses (a zero-length read means an unusable record).
        if tls.read_tls(&mut input)? == 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "the client sent an invalid TLS record",
            ));
        }
    }
}

/// Backend → client: read plaintext (no lock held), encrypt and send it. On the backend's EOF,
/// sends close_notify.
fn pump_out(shared: &Shared, mut backend: TcpStream) {
    let mut buf = vec![0u8; BUF_SIZE];
    loop {
        let n = match backend.read(&mut buf) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => return,
        };
        if n == 0 {
            let _ = shared.send(&[], true);
            return;
        }
        if shared.send(&buf[..n], false).is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_dates() {
        assert_eq!(civil_date(0), (1970, 1, 1));
        assert_eq!(civil_date(59), (1970, 3, 1));
        assert_eq!(civil_date(11_016), (2000, 2, 29));
        assert_eq!(civil_date(19_723), (2024, 1, 1));
        assert_eq!(civil_date(-1), (1969, 12, 31));
    }

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
