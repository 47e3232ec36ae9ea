//! The command line: argh flags, turned into a validated [`Config`], and one fn per subcommand.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use argh::FromArgs;

mod jobs;
mod module;

use crate::config::{Config, Seed, TlsOptions};
use crate::emulator::Emulator;
use crate::jobs::Limits;
use crate::runtimes::builtin::{Builtin, ExecSpec};
#[cfg(unix)]
use crate::sys::Termination;

/// Emulates Palantir Foundry compute-module job execution (Contour API and runtime API).
#[derive(FromArgs, Debug)]
pub struct Args {
    /// print the version and exit
    #[argh(switch)]
    version: bool,
    #[argh(subcommand)]
    command: Option<Command>,
}

/// This build's version (Cargo's), the one source for `--version`, the start-up log and
/// `GET /_emulate/info`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

#[derive(FromArgs, Debug)]
#[argh(subcommand)]
#[allow(clippy::large_enum_variant)] // parsed once at start-up; boxing argh subcommands buys nothing
enum Command {
    Serve(ServeArgs),
    Execute(jobs::ExecuteArgs),
    Submit(jobs::SubmitArgs),
    Status(jobs::StatusArgs),
    Result(jobs::ResultArgs),
    Wait(jobs::WaitArgs),
    WaitReady(jobs::WaitReadyArgs),
    Module(module::ModuleArgs),
    ModuleEnv(module::ModuleEnvArgs),
}

/// Run the emulator (what a bare `foundry-emulator` does).
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "serve")]
pub struct ServeArgs {
    /// address to bind (default 127.0.0.1)
    #[argh(option, default = "Config::default().host")]
    host: String,
    /// port to bind; 0 picks a free one, printed at start-up (default 4000)
    #[argh(option, default = "Config::default().port")]
    port: u16,
    /// base URL of the runtime URIs handed to modules (default http://HOST:PORT)
    #[argh(option)]
    public_url: Option<String>,
    /// seed config file (JSON): runtimes, deployed apps, tokens
    #[argh(option)]
    seed: Option<PathBuf>,
    /// workers for requests that never wait, beyond the wait places (default 8)
    #[argh(option, default = "Config::default().threads")]
    threads: usize,
    /// sync executes that may wait at once, and long polls that may be held at once; past it
    /// an execute gets 503 and a poll 204 (default 128)
    #[argh(option, default = "Config::default().wait_threads")]
    wait_threads: usize,
    /// seconds a sync execute waits for its job before 504 (default 30)
    #[argh(
        option,
        default = "Config::default().execute_timeout",
        from_str_fn(parse_secs)
    )]
    execute_timeout: Duration,
    /// seconds an empty job poll is held open before 204; 0 answers at once (default 10)
    #[argh(
        option,
        default = "Config::default().poll_wait",
        from_str_fn(parse_secs)
    )]
    poll_wait: Duration,
    /// largest accepted request body in bytes (default 67108864, 64 MiB)
    #[argh(option, default = "Config::default().max_body")]
    max_body: u64,
    /// a static bearer token the Contour routes accept; repeatable; any token or seeded
    /// OAuth2 client makes authentication strict (see --strict-auth)
    #[argh(option)]
    token: Vec<String>,
    /// strict authentication with nothing configured: only tokens this emulator issued (or
    /// static ones) pass, and only seeded OAuth2 clients get tokens
    #[argh(switch)]
    strict_auth: bool,
    /// seconds an access token issued by /multipass/api/oauth2/token lives (default 3600)
    #[argh(
        option,
        default = "Config::default().token_ttl",
        from_str_fn(parse_secs)
    )]
    token_ttl: Duration,
    /// seconds a client may take to send one whole request, or to read one answer, before
    /// its connection is closed (default 60)
    #[argh(
        option,
        default = "Config::default().io_timeout",
        from_str_fn(parse_secs)
    )]
    io_timeout: Duration,
    /// seconds open answers may still be written after SIGTERM before the remaining
    /// connections are closed (default 5)
    #[argh(
        option,
        default = "Config::default().shutdown_grace",
        from_str_fn(parse_secs)
    )]
    shutdown_grace: Duration,
    /// seed of the fault-injection PRNG: the same rules and seed give the same faults (default 1)
    #[argh(option, default = "Config::default().fault_seed")]
    fault_seed: u64,
    /// append one JSON line per finished job to FILE (no payloads, never a token)
    #[argh(option)]
    journal: Option<PathBuf>,
    /// journal lines also carry the query and the result
    #[argh(switch)]
    journal_payloads: bool,
    /// queued jobs per runtime before submits get 503 (default 10000)
    #[argh(option, default = "Limits::default().max_queued")]
    max_queued: usize,
    /// finished jobs kept for status and result; the oldest go first (default 100000)
    #[argh(option, default = "Limits::default().max_retained_jobs")]
    max_retained_jobs: usize,
    /// bytes of queries (all jobs) and results (finished jobs) kept; finished jobs are evicted oldest first (default 67108864, 64 MiB)
    #[argh(option, default = "Limits::default().max_retained_bytes")]
    max_retained_bytes: u64,
    /// seconds a finished job is kept (default 3600)
    #[argh(option, default = "Limits::default().job_ttl", from_str_fn(parse_secs))]
    job_ttl: Duration,
    /// seconds a running job may wait for its result before it fails (default 900)
    #[argh(
        option,
        default = "Limits::default().max_job_runtime",
        from_str_fn(parse_secs)
    )]
    max_job_runtime: Duration,
    /// hand runtimes jobs of query types their posted schemas do not name (by default such a
    /// job fails at submit, naming the known functions)
    #[argh(switch)]
    allow_unknown_query_types: bool,
    /// bind a built-in echo runtime to this deployed app RID (branch master); repeatable
    #[argh(option)]
    echo_runtime: Vec<String>,
    /// APP_RID=COMMAND: bind a built-in runtime running COMMAND (via sh -c) per job; repeatable
    #[argh(option)]
    exec_runtime: Vec<String>,
    /// jobs each --exec-runtime runs at once (default 1)
    #[argh(option, default = "ExecSpec::DEFAULT_CONCURRENCY")]
    exec_concurrency: usize,
    /// seconds an --exec-runtime command may run before it is killed (default 30)
    #[argh(option, default = "ExecSpec::DEFAULT_TIMEOUT", from_str_fn(parse_secs))]
    exec_timeout: Duration,
    /// do not add the default echo runtime bound to ri.foundry.main.deployed-app.echo
    #[argh(switch)]
    no_echo: bool,
    /// also serve every route over HTTPS on this port (0 picks a free one, printed)
    #[argh(option)]
    tls_port: Option<u16>,
    /// PEM certificate chain for HTTPS (with --tls-key); default: a CA made at start-up
    #[argh(option)]
    tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert
    #[argh(option)]
    tls_key: Option<PathBuf>,
}

/// A number of seconds from 0 to 100,000,000 (about three years), fractions allowed.
fn parse_secs(value: &str) -> Result<Duration, String> {
    value
        .parse::<f64>()
        .ok()
        .filter(|s| s.is_finite() && (0.0..=1e8).contains(s))
        .map(Duration::from_secs_f64)
        .ok_or_else(|| format!("'{value}' is not a number of seconds from 0 to 100000000"))
}

/// A failure to report once, as `foundry-emulator: <sentence>`, with exit code 2.
#[derive(Debug)]
pub struct CliError(pub String);

impl std::fmt::Display for CliError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for CliError {}

/// Runs one subcommand; a bare invocation serves with defaults.
pub fn run(args: Args) -> Result<ExitCode, CliError> {
    if args.version {
        println!("foundry-emulator {VERSION}");
        return Ok(ExitCode::SUCCESS);
    }
    match args.command {
        None => serve(ServeArgs::from_args(&["serve"], &[]).map_err(|e| CliError(e.output))?),
        Some(Command::Serve(serve_args)) => serve(serve_args),
        Some(Command::Execute(a)) => jobs::execute(a),
        Some(Command::Submit(a)) => jobs::submit(a),
        Some(Command::Status(a)) => jobs::status(a),
        Some(Command::Result(a)) => jobs::result(a),
        Some(Command::Wait(a)) => jobs::wait(a),
        Some(Command::WaitReady(a)) => jobs::wait_ready(a),
        Some(Command::Module(a)) => module::module(a),
        Some(Command::ModuleEnv(a)) => module::module_env(a),
    }
}

impl ServeArgs {
    /// Validates the flags into a [`Config`], loading the seed file.
    pub fn into_config(self) -> Result<Config, CliError> {
        let mut seed = match &self.seed {
            Some(path) => Seed::load(path).map_err(|e| CliError(e.to_string()))?,
            None => Seed::default(),
        };
        self.add_builtins(&mut seed)?;
        let in_range = |n: usize, max: usize| (1..=max).contains(&n);
        if !in_range(self.threads, 1024) || !in_range(self.wait_threads, 4096) {
            return Err(CliError(
                "--threads must be from 1 to 1024, --wait-threads from 1 to 4096".into(),
            ));
        }
        if self.io_timeout.is_zero() {
            return Err(CliError("--io-timeout must be more than 0".into()));
        }
        let tls = match (self.tls_port, &self.tls_cert, &self.tls_key) {
            (_, Some(_), None) | (_, None, Some(_)) => {
                return Err(CliError(
                    "--tls-cert and --tls-key must be given together".into(),
                ))
            }
            (None, Some(_), Some(_)) => {
                return Err(CliError("--tls-cert and --tls-key need --tls-port".into()))
            }
            (None, None, None) => None,
            (Some(port), cert, key) => Some(TlsOptions {
                port,
                cert: cert.clone(),
                key: key.clone(),
            }),
        };
        Ok(Config {
            host: self.host,
            port: self.port,
            public_url: self.public_url,
            seed,
            threads: self.threads,
            wait_threads: self.wait_threads,
            execute_timeout: self.execute_timeout,
            poll_wait: self.poll_wait,
            max_body: self.max_body,
            tokens: self.token,
            strict_auth: self.strict_auth,
            token_ttl: self.token_ttl,
            limits: Limits {
                max_queued: self.max_queued,
                max_retained_jobs: self.max_retained_jobs,
                max_retained_bytes: self.max_retained_bytes,
                job_ttl: self.job_ttl,
                max_job_runtime: self.max_job_runtime,
                allow_unknown_query_types: self.allow_unknown_query_types,
            },
            io_timeout: self.io_timeout,
            shutdown_grace: self.shutdown_grace,
            tls,
            fault_seed: self.fault_seed,
            journal: self.journal,
            journal_payloads: self.journal_payloads,
        })
    }
}

impl ServeArgs {
    /// Adds the `--echo-runtime`/`--exec-runtime` runtimes and the default echo to the seed.
    fn add_builtins(&self, seed: &mut Seed) -> Result<(), CliError> {
        for (n, rid) in self.echo_runtime.iter().enumerate() {
            seed.add_builtin(&format!("echo-{}", n + 1), rid.trim(), Builtin::Echo);
        }
        for (n, flag) in self.exec_runtime.iter().enumerate() {
            let (rid, command) = flag
                .split_once('=')
                .filter(|(rid, command)| !rid.trim().is_empty() && !command.trim().is_empty())
                .ok_or_else(|| {
                    CliError(format!(
                        "--exec-runtime '{flag}' must look like APP_RID=COMMAND"
                    ))
                })?;
            let spec = ExecSpec {
                command: vec!["sh".into(), "-c".into(), command.to_string()],
                concurrency: self.exec_concurrency.max(1),
                timeout: self.exec_timeout,
                dir: None,
            };
            seed.add_builtin(&format!("exec-{}", n + 1), rid.trim(), Builtin::Exec(spec));
        }
        let echo_taken = seed
            .runtimes
            .iter()
            .any(|r| r.runtime_id == DEFAULT_ECHO_RUNTIME)
            || seed
                .deployed_apps
                .iter()
                .any(|a| a.deployed_app_rid == DEFAULT_ECHO_RID);
        if !self.no_echo && !echo_taken {
            seed.add_builtin(DEFAULT_ECHO_RUNTIME, DEFAULT_ECHO_RID, Builtin::Echo);
        }
        Ok(())
    }
}

/// The runtime id and deployed app of the echo runtime a bare `foundry-emulator` serves.
pub const DEFAULT_ECHO_RUNTIME: &str = "echo";
pub const DEFAULT_ECHO_RID: &str = "ri.foundry.main.deployed-app.echo";

/// Serves until the process is killed; prints the bound address first.
fn serve(args: ServeArgs) -> Result<ExitCode, CliError> {
    let config = args.into_config()?;
    // Caught from before the address is announced: a signal sent as soon as the line is read
    // still stops gracefully (it waits in the pipe until `wait`).
    let termination = catch_termination()?;
    let running = Emulator::start(config).map_err(|e| CliError(e.to_string()))?;
    // The one line scripts read to learn the port (with --port 0); stdout, flushed.
    println!("foundry-emulator listening on {}", running.base_url());
    if let Some(url) = running.tls_base_url() {
        println!("foundry-emulator tls listening on {url}");
    }
    log::info!(
        "foundry-emulator {VERSION} serving on {}",
        running.base_url()
    );
    log::info!("{}", running.auth().describe());
    let strict = running.auth().is_strict();
    if let Some(url) = running.tls_base_url() {
        match running.ca_path() {
            Some(ca) => log::info!(
                "HTTPS on {url}; clients must trust the generated CA {} \
                 (CONNECTIONS_TO_OTHER_PODS_CA_PATH / DEFAULT_CA_PATH)",
                ca.display()
            ),
            None => log::info!("HTTPS on {url} with the given certificate"),
        }
    }
    for rt in running.runtimes() {
        let apps: Vec<String> = rt
            .bindings
            .iter()
            .map(|b| {
                format!(
                    "{}@{}{}",
                    b.deployed_app_rid,
                    b.branch,
                    if b.active { "" } else { " (inactive)" }
                )
            })
            .collect();
        log::info!("runtime '{}' bound to [{}]", rt.id, apps.join(", "));
    }
    if running
        .runtimes()
        .iter()
        .any(|rt| &*rt.id == DEFAULT_ECHO_RUNTIME)
    {
        log::info!(
            "try it: curl -s -X POST {}/contour-backend-multiplexer/api/module-group-multiplexer/compute-modules/jobs/execute \\\n  -H 'Authorization: Bearer {bearer}' -H 'Content-Type: application/json' \\\n  -d '{{\"deployedAppRid\":\"{DEFAULT_ECHO_RID}\",\"queryType\":\"echo\",\"query\":{{\"hello\":\"world\"}}}}'",
            running.base_url(),
            // Strict mode accepts only configured or issued tokens: the user must put one there.
            bearer = if strict { "<a --token value or an issued token>" } else { "any" }
        );
    }
    log::info!(
        "dashboard: {base}/_emulate (listings: {base}/_emulate/jobs, metrics: {base}/metrics)",
        base = running.base_url()
    );
    termination
        .wait()
        .map_err(|e| CliError(format!("cannot wait for SIGTERM: {e}")))?;
    log::info!("stopping: failing open jobs, answering waiting clients");
    running.shutdown();
    Ok(ExitCode::SUCCESS)
}

/// SIGTERM or SIGINT (Ctrl-C), caught from now on.
#[cfg(unix)]
fn catch_termination() -> Result<Termination, CliError> {
    crate::sys::catch_termination().map_err(|e| CliError(format!("cannot catch SIGTERM: {e}")))
}

/// Without Unix signals, serve until the process is killed.
#[cfg(not(unix))]
struct Termination;

#[cfg(not(unix))]
impl Termination {
    fn wait(self) -> std::io::Result<()> {
        loop {
            std::thread::park();
        }
    }
}

#[cfg(not(unix))]
fn catch_termination() -> Result<Termination, CliError> {
    Ok(Termination)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `serve --help` states each default; the values must be the ones `Config::default()`,
    /// `Limits::default()` and `ExecSpec` give (the argh defaults read them).
    #[test]
    fn help_defaults_are_the_config_defaults() {
        let help = match Args::from_args(&["foundry-emulator"], &["serve", "--help"]) {
            Err(argh::EarlyExit { output, .. }) => output,
            Ok(_) => panic!("--help parses as arguments"),
        };
        // One entry per option: its first line plus its indented continuation lines.
        let mut entries: Vec<(String, String)> = Vec::new();
        for line in help.lines() {
            let trimmed = line.trim_start();
            if line.starts_with("  --") {
                let (flag, text) = trimmed.split_once(' ').unwrap_or((trimmed, ""));
                entries.push((flag.to_string(), text.trim().to_string()));
            } else if let Some((_, text)) = entries.last_mut().filter(|_| line.starts_with("    "))
            {
                text.push(' ');
                text.push_str(trimmed);
            }
        }
        let config = Config::default();
        let limits = Limits::default();
        let secs = |d: Duration| d.as_secs().to_string();
        let want: Vec<(&str, String)> = vec![
            ("--host", config.host.clone()),
            ("--port", config.port.to_string()),
            ("--threads", config.threads.to_string()),
            ("--wait-threads", config.wait_threads.to_string()),
            ("--execute-timeout", secs(config.execute_timeout)),
            ("--poll-wait", secs(config.poll_wait)),
            ("--max-body", config.max_body.to_string()),
            ("--token-ttl", secs(config.token_ttl)),
            ("--io-timeout", secs(config.io_timeout)),
            ("--shutdown-grace", secs(config.shutdown_grace)),
            ("--fault-seed", config.fault_seed.to_string()),
            ("--max-queued", limits.max_queued.to_string()),
            ("--max-retained-jobs", limits.max_retained_jobs.to_string()),
            (
                "--max-retained-bytes",
                limits.max_retained_bytes.to_string(),
            ),
            ("--job-ttl", secs(limits.job_ttl)),
            ("--max-job-runtime", secs(limits.max_job_runtime)),
            (
                "--exec-concurrency",
                ExecSpec::DEFAULT_CONCURRENCY.to_string(),
            ),
            ("--exec-timeout", secs(ExecSpec::DEFAULT_TIMEOUT)),
        ];
        let stated: Vec<(String, String)> = entries
            .iter()
            .filter(|(flag, _)| flag != "--public-url")
            .filter_map(|(flag, text)| {
                let value = text.split("(default ").nth(1)?;
                let value = value.split([')', ',']).next()?;
                Some((flag.clone(), value.to_string()))
            })
            .collect();
        let want: Vec<(String, String)> = want
            .into_iter()
            .map(|(flag, value)| (flag.to_string(), value))
            .collect();
        assert_eq!(stated, want, "serve --help's defaults versus the code's");
    }
}
