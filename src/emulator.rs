//! Starting and stopping a whole emulator: listener, job table, seed, worker pool.

use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::sync::Arc;

use crate::api::State;
use crate::auth::{Auth, AuthSettings, Secret, StaticToken};
use crate::config::Config;
use crate::error::Error;
use crate::http::{HttpServer, Permits, ServerOptions};
use crate::jobs::{EnqueueRequest, JobId, JobSource, JobTable, JobView, Target};
use crate::jobs::{RuntimeView, SessionSpec};
use crate::journal::Journal;
use crate::runtimes::builtin::{self, Builtin};
use crate::runtimes::Binding;

/// The entry point of the library.
pub struct Emulator;

impl Emulator {
    /// Binds `config.host:config.port`, seeds runtimes and bindings, and starts serving.
    ///
    /// Returns once the listener is bound: requests are accepted from then on.
    pub fn start(config: Config) -> std::io::Result<Running> {
        #[cfg(not(feature = "tls"))]
        if config.tls.is_some() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::Unsupported,
                "HTTPS (--tls-port) is not available: this foundry-emulator was built without \
                 the `tls` cargo feature",
            ));
        }
        #[cfg(unix)]
        crate::sys::raise_fd_limit_once();
        #[cfg(unix)]
        crate::sys::tune_allocator();
        crate::ids::init()?;
        let bind = format!("{}:{}", config.host, config.port);
        let listener = TcpListener::bind(&bind)
            .map_err(|e| std::io::Error::new(e.kind(), format!("cannot listen on {bind}: {e}")))?;
        #[cfg(unix)]
        crate::sys::widen_backlog(&listener)
            .unwrap_or_else(|e| log::warn!("listen backlog stays 128: {e}"));
        let addr = listener.local_addr()?;
        let base_url = format!("http://{addr}");
        let public_url = config
            .public_url
            .clone()
            .unwrap_or_else(|| base_url.clone())
            .trim_end_matches('/')
            .to_string();

        let table = Arc::new(JobTable::new(config.limits.clone()));
        let builtins = seed(&table, &config);
        table.mark_seeded();
        table.seed_faults(config.fault_seed);
        table.set_faults(config.seed.faults.clone());
        let journal = match &config.journal {
            Some(path) => {
                let (journal, reports) = Journal::open(path, config.journal_payloads)?;
                table.report_finished_to(reports);
                Some(journal)
            }
            None => None,
        };

        let execute_permits = Permits::new("sync-execute", config.wait_threads);
        let poll_permits = Permits::new("long-poll", config.wait_threads);
        let auth = Arc::new(Auth::new(auth_settings(&config)));
        let options = ServerOptions {
            // Every wait place, plus the reserve that serves everything else.
            workers: execute_permits.capacity() + poll_permits.capacity() + config.threads,
            max_body: config.max_body,
            io_timeout: config.io_timeout,
        };
        let state = Arc::new(State {
            table: table.clone(),
            auth: auth.clone(),
            builtin_runtimes: builtins.iter().map(|(id, _, _)| id.clone()).collect(),
            runtime_sources: config
                .seed
                .runtimes
                .iter()
                .filter_map(|rt| Some((rt.runtime_id.clone(), rt.sources.clone()?)))
                .collect(),
            public_url,
            execute_timeout: config.execute_timeout,
            poll_wait: config.poll_wait,
            execute_permits,
            poll_permits,
            listen_url: base_url.clone(),
            tls: std::sync::OnceLock::new(),
            metrics: Default::default(),
        });
        // Bound before the workers start, so early connections wait in its backlog.
        #[cfg(feature = "tls")]
        let mut tls = match &config.tls {
            Some(opts) => {
                let tls = crate::tls::TlsListener::bind(
                    &config.host,
                    opts.port,
                    opts.cert.as_deref(),
                    opts.key.as_deref(),
                )?;
                let _ = state.tls.set(crate::api::TlsInfo {
                    base_url: tls.base_url().to_string(),
                    ca_path: tls.ca_path().map(|p| p.display().to_string()),
                });
                Some(tls)
            }
            None => None,
        };
        let router = Arc::new(crate::router::Router(state.clone()));
        let http = HttpServer::start(listener, router, options)?;
        // HTTPS connections are ordinary connections of the same server and workers.
        #[cfg(feature = "tls")]
        if let Some((listener, config)) = tls.as_mut().and_then(|t| t.take_listener()) {
            http.listen_tls(listener, config)?;
        }
        let mut builtin_threads = Vec::new();
        for (runtime_id, token, builtin) in builtins {
            builtin_threads.extend(builtin::spawn(table.clone(), &runtime_id, token, &builtin)?);
        }
        let janitor = Janitor::start(table.clone())?;
        let delay_clock = {
            let table = table.clone();
            std::thread::Builder::new()
                .name("fault-clock".into())
                .spawn(move || table.run_delays())?
        };
        Ok(Running {
            addr,
            base_url,
            shutdown_grace: config.shutdown_grace,
            janitor: Some(janitor),
            delay_clock: Some(delay_clock),
            journal,
            #[cfg(feature = "tls")]
            tls,
            table,
            auth,
            http: Some(http),
            builtin_threads,
        })
    }
}

/// The command line's and the seed's authentication settings, together.
fn auth_settings(config: &Config) -> AuthSettings {
    let mut tokens: Vec<StaticToken> = config
        .tokens
        .iter()
        .map(|t| StaticToken::plain(t))
        .collect();
    tokens.extend(config.seed.tokens.iter().cloned());
    AuthSettings {
        strict: config.strict_auth,
        token_ttl: config.token_ttl,
        tokens,
        users: config.seed.users.clone(),
        clients: config.seed.oauth_clients.clone(),
        runtime_clients: config
            .seed
            .runtimes
            .iter()
            .filter_map(|rt| Some((rt.runtime_id.clone(), rt.oauth_client.clone()?)))
            .collect(),
    }
}

/// Creates the seed's runtimes and bindings; returns the built-in runtimes to start.
fn seed(table: &JobTable, config: &Config) -> Vec<(String, Secret, Builtin)> {
    let mut builtins = Vec::new();
    for rt in &config.seed.runtimes {
        let session = table.create_runtime(SessionSpec {
            runtime_id: rt.runtime_id.clone(),
            display_name: rt.display_name.clone(),
            token: rt.module_auth_token.clone().map(Secret::new),
            ..SessionSpec::default()
        });
        if let Some(builtin) = &rt.builtin {
            builtins.push((rt.runtime_id.clone(), session.token, builtin.clone()));
        }
    }
    for app in &config.seed.deployed_apps {
        // Seed validation guarantees the runtime exists.
        let _ = table.add_binding(Binding {
            deployed_app_rid: app.deployed_app_rid.as_str().into(),
            runtime_id: app.runtime_id.as_str().into(),
            branch: app.branch.as_str().into(),
            display_name: app.display_name.clone(),
            active: app.active,
        });
    }
    builtins
}

/// The thread that runs `JobTable::sweep` about once a second, so retention and the
/// running-job limit apply even when no request arrives.
struct Janitor {
    stop: crossbeam_channel::Sender<()>,
    thread: std::thread::JoinHandle<()>,
}

impl Janitor {
    const PERIOD: std::time::Duration = std::time::Duration::from_secs(1);

    fn start(table: Arc<JobTable>) -> std::io::Result<Janitor> {
        let (stop, stopped) = crossbeam_channel::bounded::<()>(0);
        let thread = std::thread::Builder::new()
            .name("janitor".into())
            .spawn(move || {
                // Wakes every PERIOD, or at once when `stop` is dropped (Disconnected).
                while let Err(crossbeam_channel::RecvTimeoutError::Timeout) =
                    stopped.recv_timeout(Self::PERIOD)
                {
                    table.sweep();
                }
            })?;
        Ok(Janitor { stop, thread })
    }

    fn stop(self) {
        drop(self.stop);
        let _ = self.thread.join();
    }
}

/// A running emulator. Dropping it shuts it down.
pub struct Running {
    addr: SocketAddr,
    janitor: Option<Janitor>,
    /// The `--journal` writer; finished last, after every open job has ended.
    journal: Option<Journal>,
    /// Hands fault-delayed jobs out (`JobTable::run_delays`); ends at table shutdown.
    delay_clock: Option<std::thread::JoinHandle<()>>,
    base_url: String,
    shutdown_grace: std::time::Duration,
    /// Its address, URL and generated CA (removed when this is dropped).
    #[cfg(feature = "tls")]
    tls: Option<crate::tls::TlsListener>,
    table: Arc<JobTable>,
    auth: Arc<Auth>,
    http: Option<HttpServer>,
    builtin_threads: Vec<builtin::RuntimeThread>,
}

impl Running {
    /// The bound address (useful with port 0).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://ADDR`, the base of every route.
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// The bound address of the HTTPS listener, when `config.tls` asked for one.
    pub fn tls_addr(&self) -> Option<SocketAddr> {
        #[cfg(feature = "tls")]
        return self.tls.as_ref().map(|t| t.addr());
        #[cfg(not(feature = "tls"))]
        None
    }

    /// `https://127.0.0.1:PORT` (or `https://localhost:PORT` when the certificate only covers
    /// that name), the HTTPS base of every route.
    pub fn tls_base_url(&self) -> Option<String> {
        #[cfg(feature = "tls")]
        return self.tls.as_ref().map(|t| t.base_url().to_string());
        #[cfg(not(feature = "tls"))]
        None
    }

    /// The generated CA certificate (PEM) HTTPS clients must trust; `None` without TLS or
    /// with a certificate from `TlsOptions::cert`. The file is removed at shutdown.
    pub fn ca_path(&self) -> Option<PathBuf> {
        #[cfg(feature = "tls")]
        return self
            .tls
            .as_ref()
            .and_then(|t| t.ca_path().map(PathBuf::from));
        #[cfg(not(feature = "tls"))]
        None
    }

    /// Enqueues a `runtime-direct` job for a runtime, bypassing Contour and bindings.
    pub fn enqueue_direct(
        &self,
        runtime_id: &str,
        query_type: &str,
        query: &serde_json::Value,
    ) -> Result<JobId, Error> {
        self.table.enqueue(EnqueueRequest {
            target: Target::Runtime(runtime_id.to_string()),
            query_type: query_type.to_string(),
            query: Arc::from(query.to_string()),
            source: JobSource::RuntimeDirect,
            auth_header: None,
        })
    }

    /// A snapshot of a job.
    pub fn job(&self, id: &JobId) -> Option<JobView> {
        self.table.job(id).ok()
    }

    /// Public facts of every runtime, sorted by id.
    /// The authentication mode and what it was configured with.
    pub fn auth(&self) -> &Auth {
        &self.auth
    }

    pub fn runtimes(&self) -> Vec<RuntimeView> {
        self.table.runtimes()
    }

    /// Fails open jobs, wakes every wait, stops the workers and joins them.
    pub fn shutdown(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        if let Some(janitor) = self.janitor.take() {
            janitor.stop();
        }
        if let Some(http) = self.http.take() {
            // New clients are refused first (plain and TLS); then open jobs fail and every
            // wait wakes, so waiting clients are answered within the grace.
            http.stop_accepting();
            self.table.shutdown();
            http.shutdown(self.shutdown_grace);
            // Shutdown closed their channels and kills running exec commands: they end soon.
            for handle in self.builtin_threads.drain(..) {
                let _ = handle.join();
            }
        }
        if let Some(clock) = self.delay_clock.take() {
            let _ = clock.join();
        }
        // Every job has ended and was reported: drop the table's sender, write the rest.
        if let Some(journal) = self.journal.take() {
            self.table.stop_reporting();
            journal.join();
        }
        // Removes the generated CA file.
        #[cfg(feature = "tls")]
        drop(self.tls.take());
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.stop();
    }
}
