//! HTTPS: the TLS listener serving the same routes, with the generated CA and with
//! user-provided certificates, against a rustls client that trusts only what it is given.
//!
//! Every socket has read and write timeouts, so a hang fails a test instead of hanging it.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use foundry_emulator::tls::pem;
use foundry_emulator::{Config, Emulator, Running, TlsOptions};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};
use serde_json::{json, Value};

const IO_TIMEOUT: Duration = Duration::from_secs(20);
const RUNTIMES: &str = "/_emulate/foundry/compute-modules/runtimes";

fn start(tls: TlsOptions) -> Running {
    let config = Config {
        port: 0,
        tls: Some(tls),
        ..Config::default()
    };
    Emulator::start(config).expect("the emulator starts")
}

fn start_generated() -> Running {
    start(TlsOptions::default())
}

/// A client config that trusts exactly the certificates in `ca` (a PEM file).
fn trusting(ca: &Path) -> Arc<ClientConfig> {
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca).expect("the CA file opens") {
        roots
            .add(cert.expect("the CA file is PEM"))
            .expect("the CA is usable");
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    let mut config = config;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(config)
}

fn tcp(addr: SocketAddr) -> TcpStream {
    let sock = TcpStream::connect_timeout(&addr, IO_TIMEOUT).expect("connect");
    sock.set_read_timeout(Some(IO_TIMEOUT))
        .expect("read timeout");
    sock.set_write_timeout(Some(IO_TIMEOUT))
        .expect("write timeout");
    sock
}

/// One HTTP/1.1 keep-alive connection over TLS.
struct Https {
    io: BufReader<StreamOwned<ClientConnection, TcpStream>>,
}

#[derive(Debug)]
struct Resp {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Resp {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "expected JSON ({e}); status {}, body {}",
                self.status,
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

impl Https {
    /// Connects to `addr` and completes the handshake for `name`.
    fn connect(config: &Arc<ClientConfig>, addr: SocketAddr, name: &str) -> std::io::Result<Https> {
        let name = ServerName::try_from(name.to_string()).expect("a server name");
        let conn = ClientConnection::new(config.clone(), name).expect("a client connection");
        let mut stream = StreamOwned::new(conn, tcp(addr));
        while stream.conn.is_handshaking() {
            stream.conn.complete_io(&mut stream.sock)?;
        }
        Ok(Https {
            io: BufReader::new(stream),
        })
    }

    fn conn(&self) -> &ClientConnection {
        &self.io.get_ref().conn
    }

    fn send(&mut self, head: &str, body: &[u8]) {
        let stream = self.io.get_mut();
        stream.write_all(head.as_bytes()).expect("write head");
        stream.write_all(body).expect("write body");
        stream.flush().expect("flush");
    }

    /// Sends a request with a Content-Length body and reads the response.
    fn request(&mut self, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Resp {
        let mut head = format!("{method} {path} HTTP/1.1\r\nHost: localhost\r\n");
        for (name, value) in headers {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        if !body.is_empty() || method == "POST" {
            head.push_str(&format!("Content-Length: {}\r\n", body.len()));
        }
        head.push_str("\r\n");
        self.send(&head, body);
        self.response()
    }

    fn get(&mut self, path: &str) -> Resp {
        self.request("GET", path, &[], b"")
    }

    fn line(&mut self) -> String {
        let mut line = String::new();
        let n = self.io.read_line(&mut line).expect("read a response line");
        assert!(n > 0, "the server closed the connection mid-response");
        line.trim_end_matches(['\r', '\n']).to_string()
    }

    /// Reads one response: Content-Length, chunked, or no body (204).
    fn response(&mut self) -> Resp {
        let status_line = self.line();
        let status: u16 = status_line
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("bad status line {status_line:?}"));
        let mut headers = Vec::new();
        loop {
            let line = self.line();
            if line.is_empty() {
                break;
            }
            let (name, value) = line.split_once(':').expect("a header line");
            headers.push((name.trim().to_ascii_lowercase(), value.trim().to_string()));
        }
        let mut resp = Resp {
            status,
            headers,
            body: Vec::new(),
        };
        if let Some(len) = resp.header("content-length") {
            let mut body = vec![0; len.parse().expect("a length")];
            self.io.read_exact(&mut body).expect("read the body");
            resp.body = body;
        } else if resp
            .header("transfer-encoding")
            .is_some_and(|te| te.eq_ignore_ascii_case("chunked"))
        {
            loop {
                let size = usize::from_str_radix(self.line().split(';').next().unwrap_or(""), 16)
                    .expect("a chunk size");
                let mut chunk = vec![0; size];
                self.io.read_exact(&mut chunk).expect("read a chunk");
                resp.body.extend(chunk);
                assert_eq!(self.line(), "", "CRLF after a chunk");
                if size == 0 {
                    break;
                }
            }
        }
        resp
    }
}

fn ca_of(running: &Running) -> PathBuf {
    running.ca_path().expect("a generated CA")
}

#[test]
fn generated_ca_serves_every_route_over_one_keep_alive_connection() {
    let running = start_generated();
    let addr = running.tls_addr().expect("a TLS listener");
    assert_eq!(addr.ip().to_string(), "127.0.0.1");
    assert_ne!(addr.port(), running.addr().port());
    assert_eq!(
        running.tls_base_url().as_deref(),
        Some(format!("https://127.0.0.1:{}", addr.port()).as_str())
    );
    let ca = ca_of(&running);
    let pem_text = std::fs::read_to_string(&ca).expect("the CA file is readable");
    assert!(
        pem_text.starts_with("-----BEGIN CERTIFICATE-----\n"),
        "{pem_text}"
    );
    let config = trusting(&ca);

    let mut https = Https::connect(&config, addr, "127.0.0.1").expect("handshake with the IP");
    assert_eq!(https.conn().alpn_protocol(), Some(&b"http/1.1"[..]));
    let health = https.get("/_emulate/health");
    assert_eq!(health.status, 200);
    assert_eq!(health.json(), json!({"status": "ok"}));

    let created = https.request(
        "POST",
        RUNTIMES,
        &[("Content-Type", "application/json")],
        br#"{"runtimeId":"t"}"#,
    );
    assert_eq!(
        created.status,
        200,
        "{:?}",
        String::from_utf8_lossy(&created.body)
    );
    let session = created.json();
    assert_eq!(session["runtimeId"], "t");
    assert_eq!(
        session["getJobUri"],
        format!("{}{RUNTIMES}/t/job", running.base_url())
    );
    assert!(session["moduleAuthToken"]
        .as_str()
        .is_some_and(|t| !t.is_empty()));

    let missing = https.get("/no/such/route");
    assert_eq!(missing.status, 404);
    // Still the same connection: a fourth request on it.
    assert_eq!(https.get("/_emulate/health").status, 200);

    // The certificate also covers localhost.
    let mut by_name = Https::connect(&config, addr, "localhost").expect("handshake as localhost");
    let health = by_name.get("/_emulate/health");
    assert_eq!(
        (health.status, health.json()),
        (200, json!({"status": "ok"}))
    );

    let dir = ca.parent().expect("the CA directory").to_path_buf();
    running.shutdown();
    assert!(!ca.exists(), "{} is removed at shutdown", ca.display());
    assert!(!dir.exists(), "{} is removed at shutdown", dir.display());
}

#[test]
fn each_emulator_has_its_own_ca_and_clients_trusting_another_are_refused() {
    let a = start_generated();
    let b = start_generated();
    assert_ne!(ca_of(&a), ca_of(&b));
    let trusts_a = trusting(&ca_of(&a));
    let addr_b = b.tls_addr().expect("a TLS listener");
    let refused = Https::connect(&trusts_a, addr_b, "127.0.0.1").err();
    let refused = refused.expect("a client trusting another CA is refused");
    assert!(
        refused.to_string().contains("UnknownIssuer"),
        "unexpected error: {refused}"
    );
    // A name the certificate does not cover is refused too.
    let trusts_b = trusting(&ca_of(&b));
    let wrong_name = Https::connect(&trusts_b, addr_b, "example.com").err();
    assert!(
        wrong_name
            .as_ref()
            .is_some_and(|e| format!("{e:?}").contains("NotValidForName")),
        "a certificate for localhost/127.0.0.1 is not valid for example.com: {wrong_name:?}"
    );
    // And b still serves its own clients.
    let mut ok = Https::connect(&trusts_b, addr_b, "localhost").expect("handshake");
    assert_eq!(ok.get("/_emulate/health").status, 200);
}

#[test]
fn bad_clients_on_the_tls_port_do_not_affect_good_ones() {
    let running = start_generated();
    let addr = running.tls_addr().expect("a TLS listener");
    let config = trusting(&ca_of(&running));

    // A silent client holds a connection open through everything below.
    let silent = tcp(addr);
    // A good client already connected keeps working while the bad ones come and go.
    let mut before = Https::connect(&config, addr, "127.0.0.1").expect("handshake");

    // Plain HTTP to the TLS port: the server answers with an alert (or nothing) and closes.
    let mut plain = tcp(addr);
    plain
        .write_all(b"GET /_emulate/health HTTP/1.1\r\nHost: x\r\n\r\n")
        .expect("write");
    let mut junk = Vec::new();
    plain
        .read_to_end(&mut junk)
        .expect("the server closes a plain-HTTP connection");
    assert!(
        !junk.starts_with(b"HTTP/"),
        "no plaintext answer on the TLS port"
    );

    // Binary garbage that looks like the start of a TLS record with an absurd length.
    let mut garbage = tcp(addr);
    garbage
        .write_all(&[0x16, 0x03, 0x01, 0xff, 0xff, 0x00, 0x01, 0x02])
        .expect("write");
    garbage.write_all(&[0xAB; 4096]).expect("write");
    let mut rest = Vec::new();
    let _ = garbage.read_to_end(&mut rest);

    // A handshake abandoned halfway: a real ClientHello, then the socket is dropped.
    {
        let name = ServerName::try_from("localhost").expect("a name");
        let mut conn = ClientConnection::new(config.clone(), name).expect("a client");
        let mut sock = tcp(addr);
        conn.write_tls(&mut sock).expect("send the ClientHello");
    }

    // Zero bytes and an immediate close.
    drop(tcp(addr));

    let mut after = Https::connect(&config, addr, "127.0.0.1").expect("handshake after junk");
    assert_eq!(after.get("/_emulate/health").status, 200);
    assert_eq!(before.get("/_emulate/health").status, 200);
    drop(silent);
}

#[test]
fn silent_tls_clients_cost_only_their_own_connection() {
    let running = Emulator::start(Config {
        port: 0,
        tls: Some(TlsOptions::default()),
        io_timeout: Duration::from_secs(2),
        ..Config::default()
    })
    .expect("the emulator starts");
    let addr = running.tls_addr().expect("a TLS listener");
    let config = trusting(&ca_of(&running));
    // More silent clients than the old TLS proxy admitted (256): each holds only its own
    // connection thread, until the handshake deadline (`--io-timeout`) closes it.
    let held: Vec<TcpStream> = (0..300).map(|_| tcp(addr)).collect();
    let mut good = Https::connect(&config, addr, "127.0.0.1").expect("a handshake beside them");
    assert_eq!(good.get("/_emulate/health").status, 200);

    let mut silent = held.into_iter().next().expect("a held connection");
    let mut rest = Vec::new();
    match silent.read_to_end(&mut rest) {
        Ok(_) => assert!(rest.is_empty(), "nothing but a close for a silent client"),
        Err(e) => assert_eq!(
            e.kind(),
            std::io::ErrorKind::ConnectionReset,
            "the server closes a client that never starts its handshake: {e}"
        ),
    }
    assert_eq!(good.get("/_emulate/health").status, 200);
}

#[test]
fn an_abandoned_tls_poll_gives_its_job_to_the_next_poller() {
    let running = start_generated();
    let addr = running.tls_addr().expect("a TLS listener");
    let config = trusting(&ca_of(&running));
    let mut module = Https::connect(&config, addr, "127.0.0.1").expect("handshake");
    let created = module.request(
        "POST",
        RUNTIMES,
        &[("Content-Type", "application/json")],
        br#"{"runtimeId":"t"}"#,
    );
    let token = created.json()["moduleAuthToken"]
        .as_str()
        .expect("a token")
        .to_string();
    let poll = |https: &mut Https| {
        let head = format!(
            "GET {RUNTIMES}/t/job HTTP/1.1\r\nHost: localhost\r\nModule-Auth-Token: {token}\r\n\r\n"
        );
        https.send(&head, b"");
    };
    // The first poll of a session is answered at once; the second is held.
    poll(&mut module);
    assert_eq!(module.response().status, 204);
    poll(&mut module);
    let polls = |running: &Running| running.runtimes()[0].last_poll_at;
    let first_seen = polls(&running);
    let deadline = Instant::now() + IO_TIMEOUT;
    while polls(&running) == first_seen && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    // The module is killed while its poll is held: its TCP connection closes, no close_notify.
    drop(module);
    let id = running
        .enqueue_direct("t", "q", &json!({"n": 1}))
        .expect("a job");

    let mut live = Https::connect(&config, addr, "127.0.0.1").expect("handshake");
    let got = loop {
        poll(&mut live);
        let resp = live.response();
        if resp.status == 200 {
            break resp;
        }
        assert_eq!(resp.status, 204);
        assert!(Instant::now() < deadline, "no poll got job {id}");
    };
    assert_eq!(
        got.json()["computeModuleJobV1"]["jobId"],
        json!(id.to_string())
    );
    assert_eq!(
        running.job(&id).expect("the job").state,
        foundry_emulator::JobState::Running
    );
}

/// A CA and a leaf for `localhost` only, written as PEM files; returns (dir, ca, cert, key).
fn user_certificate() -> (PathBuf, PathBuf, PathBuf, PathBuf) {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
        KeyPair, KeyUsagePurpose,
    };
    let ca_key = KeyPair::generate().expect("a CA key");
    let mut ca = CertificateParams::default();
    ca.distinguished_name
        .push(DnType::CommonName, "tls test user CA");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign];
    let ca_cert = ca.self_signed(&ca_key).expect("the CA certificate");
    let leaf_key = KeyPair::generate().expect("a leaf key");
    let mut leaf = CertificateParams::new(vec!["localhost".to_string()]).expect("params");
    leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let issuer = Issuer::new(ca, ca_key);
    let leaf_cert = leaf.signed_by(&leaf_key, &issuer).expect("the leaf");

    let dir = std::env::temp_dir().join(format!(
        "foundry-emulator-tls-test-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos())
    ));
    std::fs::create_dir_all(&dir).expect("a test directory");
    let write = |name: &str, text: String| {
        let path = dir.join(name);
        std::fs::write(&path, text).expect("write a PEM file");
        path
    };
    let ca_path = write("ca.pem", pem("CERTIFICATE", ca_cert.der()));
    let cert_path = write("cert.pem", pem("CERTIFICATE", leaf_cert.der()));
    let key_path = write("key.pem", pem("PRIVATE KEY", &leaf_key.serialize_der()));
    (dir, ca_path, cert_path, key_path)
}

#[test]
fn user_provided_certificate_and_key_are_served() {
    let (dir, ca, cert, key) = user_certificate();
    let running = start(TlsOptions {
        port: 0,
        cert: Some(cert.clone()),
        key: Some(key.clone()),
    });
    let addr = running.tls_addr().expect("a TLS listener");
    assert_eq!(
        running.ca_path(),
        None,
        "no CA is generated with a given certificate"
    );
    // The certificate covers localhost but not 127.0.0.1: the URL names what it covers.
    assert_eq!(
        running.tls_base_url(),
        Some(format!("https://localhost:{}", addr.port()))
    );
    let config = trusting(&ca);
    let mut https = Https::connect(&config, addr, "localhost").expect("handshake");
    let health = https.get("/_emulate/health");
    assert_eq!(
        (health.status, health.json()),
        (200, json!({"status": "ok"}))
    );
    running.shutdown();

    // Half a pair, a missing file, and a file without a certificate are start-up errors.
    let bad = |cert: Option<PathBuf>, key: Option<PathBuf>| {
        let config = Config {
            port: 0,
            tls: Some(TlsOptions { port: 0, cert, key }),
            ..Config::default()
        };
        match Emulator::start(config) {
            Ok(_) => panic!("start-up should fail"),
            Err(e) => e.to_string(),
        }
    };
    let half = bad(Some(cert.clone()), None);
    assert!(half.contains("together"), "{half}");
    let missing = dir.join("missing.pem");
    let err = bad(Some(missing.clone()), Some(key.clone()));
    assert!(err.contains(&missing.display().to_string()), "{err}");
    let err = bad(Some(key.clone()), Some(key.clone()));
    assert!(err.contains("no PEM CERTIFICATE"), "{err}");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_chunked_result_posted_over_tls_arrives_intact() {
    let running = start_generated();
    let addr = running.tls_addr().expect("a TLS listener");
    let config = trusting(&ca_of(&running));
    let mut https = Https::connect(&config, addr, "localhost").expect("handshake");

    let created = https.request(
        "POST",
        RUNTIMES,
        &[("Content-Type", "application/json")],
        br#"{"runtimeId":"rt"}"#,
    );
    assert_eq!(created.status, 200);
    let token = created.json()["moduleAuthToken"]
        .as_str()
        .expect("a token")
        .to_string();
    let job_id = running
        .enqueue_direct("rt", "stream", &json!({"n": 1}))
        .expect("enqueue");

    let poll = https.request(
        "GET",
        &format!("{RUNTIMES}/rt/job"),
        &[("Module-Auth-Token", &token)],
        b"",
    );
    assert_eq!(poll.status, 200);
    let envelope = poll.json();
    assert_eq!(envelope["computeModuleJobV1"]["jobId"], job_id.to_string());
    assert_eq!(envelope["computeModuleJobV1"]["query"], json!({"n": 1}));

    // 200 KiB of text in chunks of uneven sizes, some larger than a TLS record.
    let body: Vec<u8> = (0..200 * 1024)
        .map(|i: usize| b"abcdefghijklmnopqrstuvwxyz0123456789"[i * 7 % 36])
        .collect();
    let head = format!(
        "POST {RUNTIMES}/rt/results/{} HTTP/1.1\r\nHost: localhost\r\nModule-Auth-Token: {token}\r\n\
         Content-Type: text/plain\r\nTransfer-Encoding: chunked\r\n\r\n",
        job_id
    );
    let mut chunked = Vec::new();
    let mut rest = &body[..];
    for size in [1usize, 7_000, 16_384, 40_000, 3].iter().cycle() {
        if rest.is_empty() {
            break;
        }
        let (chunk, tail) = rest.split_at((*size).min(rest.len()));
        chunked.extend(format!("{:x}\r\n", chunk.len()).as_bytes());
        chunked.extend(chunk);
        chunked.extend(b"\r\n");
        rest = tail;
    }
    chunked.extend(b"0\r\n\r\n");
    https.send(&head, &chunked);
    let posted = https.response();
    assert_eq!(
        posted.status,
        204,
        "{}",
        String::from_utf8_lossy(&posted.body)
    );

    let inspected = https.get(&format!("{RUNTIMES}/rt/jobs/{}", job_id));
    assert_eq!(inspected.status, 200);
    let job = &inspected.json()["job"];
    assert_eq!(job["status"], "succeeded");
    let stored = job["result_body_utf8"].as_str().expect("a UTF-8 result");
    assert_eq!(stored.len(), body.len());
    assert!(
        stored.as_bytes() == body,
        "the stored result differs from the posted bytes"
    );
}

/// Reads one chunk of a chunked body on `https`: `Some(data)` (empty for the terminating
/// chunk), `None` when the connection ends first (a truncated body).
fn tls_chunk(https: &mut Https) -> Option<Vec<u8>> {
    let mut line = String::new();
    match https.io.read_line(&mut line) {
        Ok(0) | Err(_) => return None,
        Ok(_) => {}
    }
    let size = usize::from_str_radix(line.trim_end(), 16).expect("a chunk size");
    let mut chunk = vec![0; size + 2];
    https.io.read_exact(&mut chunk).ok()?;
    assert_eq!(&chunk[size..], b"\r\n");
    chunk.truncate(size);
    Some(chunk)
}

#[test]
fn a_streamed_result_over_tls_reaches_the_application_chunk_by_chunk_or_truncated() {
    const RID: &str = "ri.foundry.main.deployed-app.tls-stream";
    let running = start_generated();
    let addr = running.tls_addr().expect("a TLS listener");
    let config = trusting(&ca_of(&running));
    let mut runtime = Https::connect(&config, addr, "localhost").expect("handshake");
    let created = runtime.request(
        "POST",
        RUNTIMES,
        &[("Content-Type", "application/json")],
        format!(r#"{{"runtimeId":"rt","deployedAppRid":"{RID}"}}"#).as_bytes(),
    );
    assert_eq!(created.status, 200);
    let token = created.json()["moduleAuthToken"]
        .as_str()
        .expect("a token")
        .to_string();
    for whole in [true, false] {
        let mut app = Https::connect(&config, addr, "localhost").expect("handshake");
        let body = format!(r#"{{"deployedAppRid":"{RID}","queryType":"chat"}}"#);
        app.send(
            &format!(
                "POST /contour-backend-multiplexer/api/module-group-multiplexer/compute-modules/\
                 jobs/execute HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer t\r\n\
                 Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
                body.len()
            ),
            body.as_bytes(),
        );
        // Poll until the execute's job arrives (a long poll answers 204 only when empty).
        let job = loop {
            let poll = runtime.request(
                "GET",
                &format!("{RUNTIMES}/rt/job"),
                &[("Module-Auth-Token", &token)],
                b"",
            );
            if poll.status == 200 {
                break poll.json()["computeModuleJobV1"]["jobId"]
                    .as_str()
                    .expect("a job id")
                    .to_string();
            }
            assert_eq!(poll.status, 204);
        };
        let mut post = Https::connect(&config, addr, "localhost").expect("handshake");
        post.send(
            &format!(
                "POST {RUNTIMES}/rt/results/{job} HTTP/1.1\r\nHost: localhost\r\n\
                 Module-Auth-Token: {token}\r\nTransfer-Encoding: chunked\r\n\r\n"
            ),
            b"5\r\nhello\r\n",
        );
        assert_eq!(app.line(), "HTTP/1.1 200 OK");
        loop {
            let line = app.line();
            if line.is_empty() {
                break;
            }
            assert!(!line.to_ascii_lowercase().starts_with("content-length"));
        }
        let mut got = Vec::new();
        while got.len() < 5 {
            got.extend(tls_chunk(&mut app).expect("a chunk"));
        }
        assert_eq!(got, b"hello");
        if whole {
            post.send("", b"6\r\n world\r\n0\r\n\r\n");
            assert_eq!(post.response().status, 204);
            let mut rest = Vec::new();
            loop {
                match tls_chunk(&mut app).expect("the body goes on") {
                    chunk if chunk.is_empty() => break,
                    chunk => rest.extend(chunk),
                }
            }
            assert_eq!(rest, b" world");
        } else {
            // The module's connection drops mid-stream.
            drop(post);
            assert_eq!(tls_chunk(&mut app), None, "no terminating chunk");
        }
    }
}
