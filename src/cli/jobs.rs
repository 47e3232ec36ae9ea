//! Client subcommands for CI scripts: execute, submit, status, result, wait, wait-ready.
//!
//! Exit codes (also in the README): 0 success; 1 another API error (400, 409, 413, 503 …);
//! 2 usage error or emulator unreachable; 3 job failed; 4 timed out; 5 not found; 6 rejected
//! token. An API error prints the server's JSON error body to stderr.

use std::io::{Read, Write};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use argh::FromArgs;

use super::CliError;
use crate::client::{Client, ClientError, JobRequest};

/// Default `--emulator`, overridden by `FOUNDRY_EMULATOR_URL`.
pub const DEFAULT_EMULATOR: &str = "http://127.0.0.1:4000";
/// Default `--token`, overridden by `FOUNDRY_TOKEN`; any non-empty token passes by default.
pub const DEFAULT_TOKEN: &str = "emulator";

pub const EXIT_API_ERROR: u8 = 1;
pub const EXIT_FAILED: u8 = 3;
pub const EXIT_TIMEOUT: u8 = 4;
pub const EXIT_NOT_FOUND: u8 = 5;
pub const EXIT_AUTH: u8 = 6;

/// The emulator URL from a flag, `FOUNDRY_EMULATOR_URL`, or the default.
pub fn emulator_url(flag: Option<String>) -> String {
    flag.or_else(|| {
        std::env::var("FOUNDRY_EMULATOR_URL")
            .ok()
            .filter(|s| !s.is_empty())
    })
    .unwrap_or_else(|| DEFAULT_EMULATOR.to_string())
}

/// The bearer token from a flag, `FOUNDRY_TOKEN`, or the default.
pub fn bearer_token(flag: Option<String>) -> String {
    flag.or_else(|| {
        std::env::var("FOUNDRY_TOKEN")
            .ok()
            .filter(|s| !s.is_empty())
    })
    .unwrap_or_else(|| DEFAULT_TOKEN.to_string())
}

fn client(emulator: Option<String>, token: Option<String>, timeout: Duration) -> Client {
    Client::new(&emulator_url(emulator), &bearer_token(token), timeout)
}

// argh has no flattening, so each subcommand repeats the flags it shares (`--emulator`,
// `--token`, the job fields); the shared behaviour lives in the functions below.

/// Run a job synchronously and write its raw result bytes to stdout.
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "execute")]
pub struct ExecuteArgs {
    /// deployed app RID
    #[argh(option)]
    rid: String,
    /// branch of the deployed app (default: any active binding)
    #[argh(option)]
    branch: Option<String>,
    /// function name (queryType)
    #[argh(option)]
    query_type: String,
    /// query JSON, @FILE to read it from a file, or - for stdin (default {})
    #[argh(option, default = "String::from(\"{}\")")]
    query: String,
    /// seconds the client waits for the answer (default 120)
    #[argh(option, default = "120")]
    timeout: u64,
    /// emulator base URL (env FOUNDRY_EMULATOR_URL; default http://127.0.0.1:4000)
    #[argh(option)]
    emulator: Option<String>,
    /// bearer token (env FOUNDRY_TOKEN; default "emulator")
    #[argh(option)]
    token: Option<String>,
}

/// Submit a job asynchronously and print its id.
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "submit")]
pub struct SubmitArgs {
    /// deployed app RID
    #[argh(option)]
    rid: String,
    /// branch of the deployed app (default: any active binding)
    #[argh(option)]
    branch: Option<String>,
    /// function name (queryType)
    #[argh(option)]
    query_type: String,
    /// query JSON, @FILE to read it from a file, or - for stdin (default {})
    #[argh(option, default = "String::from(\"{}\")")]
    query: String,
    /// emulator base URL (env FOUNDRY_EMULATOR_URL; default http://127.0.0.1:4000)
    #[argh(option)]
    emulator: Option<String>,
    /// bearer token (env FOUNDRY_TOKEN; default "emulator")
    #[argh(option)]
    token: Option<String>,
}

/// Print a job's status JSON.
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "status")]
pub struct StatusArgs {
    /// job id
    #[argh(positional)]
    job: String,
    /// emulator base URL (env FOUNDRY_EMULATOR_URL; default http://127.0.0.1:4000)
    #[argh(option)]
    emulator: Option<String>,
    /// bearer token (env FOUNDRY_TOKEN; default "emulator")
    #[argh(option)]
    token: Option<String>,
}

/// Write a succeeded job's raw result bytes to stdout.
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "result")]
pub struct ResultArgs {
    /// job id
    #[argh(positional)]
    job: String,
    /// emulator base URL (env FOUNDRY_EMULATOR_URL; default http://127.0.0.1:4000)
    #[argh(option)]
    emulator: Option<String>,
    /// bearer token (env FOUNDRY_TOKEN; default "emulator")
    #[argh(option)]
    token: Option<String>,
}

/// Poll a job's status with backoff until it ends; print the final status JSON.
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "wait")]
pub struct WaitArgs {
    /// job id
    #[argh(positional)]
    job: String,
    /// seconds to wait before giving up with exit code 4 (default 60)
    #[argh(option, default = "60.0")]
    timeout: f64,
    /// emulator base URL (env FOUNDRY_EMULATOR_URL; default http://127.0.0.1:4000)
    #[argh(option)]
    emulator: Option<String>,
    /// bearer token (env FOUNDRY_TOKEN; default "emulator")
    #[argh(option)]
    token: Option<String>,
}

/// Wait until the emulator answers its health check (for start-up ordering in CI).
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "wait-ready")]
pub struct WaitReadyArgs {
    /// seconds to wait before giving up with exit code 4 (default 30)
    #[argh(option, default = "30.0")]
    timeout: f64,
    /// emulator base URL (env FOUNDRY_EMULATOR_URL; default http://127.0.0.1:4000)
    #[argh(option)]
    emulator: Option<String>,
}

const SHORT_CALL: Duration = Duration::from_secs(30);

pub fn execute(args: ExecuteArgs) -> Result<ExitCode, CliError> {
    let query = read_query(&args.query)?;
    let client = client(args.emulator, args.token, Duration::from_secs(args.timeout));
    let job = JobRequest {
        deployed_app_rid: &args.rid,
        branch: args.branch.as_deref(),
        query_type: &args.query_type,
        query: &query,
    };
    let what = format!("the sync execute of '{}'", args.rid);
    exit_code(
        client.execute(&job).map(|bytes| write_stdout(&bytes)),
        &what,
    )
}

pub fn submit(args: SubmitArgs) -> Result<ExitCode, CliError> {
    let query = read_query(&args.query)?;
    let client = client(args.emulator, args.token, SHORT_CALL);
    let job = JobRequest {
        deployed_app_rid: &args.rid,
        branch: args.branch.as_deref(),
        query_type: &args.query_type,
        query: &query,
    };
    exit_code(client.submit(&job).map(|id| println!("{id}")), "the submit")
}

pub fn status(args: StatusArgs) -> Result<ExitCode, CliError> {
    let client = client(args.emulator, args.token, SHORT_CALL);
    let what = format!("job '{}'", args.job);
    exit_code(
        client.status(&args.job).map(|status| println!("{status}")),
        &what,
    )
}

pub fn result(args: ResultArgs) -> Result<ExitCode, CliError> {
    let client = client(args.emulator, args.token, SHORT_CALL);
    let what = format!("job '{}'", args.job);
    exit_code(
        client.result(&args.job).map(|bytes| write_stdout(&bytes)),
        &what,
    )
}

pub fn wait(args: WaitArgs) -> Result<ExitCode, CliError> {
    let client = client(args.emulator, args.token, SHORT_CALL);
    let deadline = Instant::now() + secs(args.timeout)?;
    let mut pause = Duration::from_millis(10);
    loop {
        let status = match client.status(&args.job) {
            Ok(status) => status,
            Err(e) => return exit_code(Err(e), &format!("job '{}'", args.job)),
        };
        match status["type"].as_str() {
            Some("succeeded") => {
                println!("{status}");
                return Ok(ExitCode::SUCCESS);
            }
            Some("failed") => {
                println!("{status}");
                return Ok(ExitCode::from(EXIT_FAILED));
            }
            _ if Instant::now() >= deadline => {
                eprintln!(
                    "foundry-emulator: job {} still {} after {}s",
                    args.job, status["type"], args.timeout
                );
                return Ok(ExitCode::from(EXIT_TIMEOUT));
            }
            _ => {}
        }
        std::thread::sleep(pause.min(deadline.saturating_duration_since(Instant::now())));
        pause = (pause * 2).min(Duration::from_millis(500));
    }
}

pub fn wait_ready(args: WaitReadyArgs) -> Result<ExitCode, CliError> {
    let url = emulator_url(args.emulator.clone());
    let client = client(args.emulator, None, Duration::from_secs(2));
    let deadline = Instant::now() + secs(args.timeout)?;
    let mut pause = Duration::from_millis(20);
    loop {
        match client.health() {
            Ok(_) => return Ok(ExitCode::SUCCESS),
            Err(e) if Instant::now() >= deadline => {
                eprintln!(
                    "foundry-emulator: {url} not ready after {}s: {e}",
                    args.timeout
                );
                return Ok(ExitCode::from(EXIT_TIMEOUT));
            }
            Err(_) => {}
        }
        std::thread::sleep(pause.min(deadline.saturating_duration_since(Instant::now())));
        pause = (pause * 2).min(Duration::from_millis(250));
    }
}

fn secs(value: f64) -> Result<Duration, CliError> {
    Duration::try_from_secs_f64(value)
        .map_err(|_| CliError(format!("--timeout {value} is not a number of seconds")))
}

/// Maps an API error to its exit code, printing the error body to stderr.
/// `what` names what was waited for, in a timeout's message.
fn exit_code(outcome: Result<(), ClientError>, what: &str) -> Result<ExitCode, CliError> {
    match outcome {
        Ok(()) => Ok(ExitCode::SUCCESS),
        Err(ClientError::Transport(why)) => Err(CliError(why)),
        // Nothing was written to stdout: the bytes are printed only once whole.
        Err(ClientError::BrokeOff(why)) => {
            eprintln!("foundry-emulator: {why}");
            Ok(ExitCode::from(EXIT_FAILED))
        }
        Err(ClientError::TimedOut(after)) => {
            eprintln!(
                "foundry-emulator: timed out after {} s waiting for {what}",
                after.as_secs_f64()
            );
            Ok(ExitCode::from(EXIT_TIMEOUT))
        }
        Err(ClientError::Api { status, body, .. }) => {
            let mut stderr = std::io::stderr();
            let _ = stderr.write_all(&body);
            let _ = stderr.write_all(b"\n");
            Ok(ExitCode::from(match status {
                500 => EXIT_FAILED,
                504 => EXIT_TIMEOUT,
                404 => EXIT_NOT_FOUND,
                401 => EXIT_AUTH,
                _ => EXIT_API_ERROR,
            }))
        }
    }
}

/// Writes bytes to stdout unchanged (no newline added, no UTF-8 assumption).
fn write_stdout(bytes: &[u8]) {
    let mut stdout = std::io::stdout().lock();
    let _ = stdout.write_all(bytes);
    let _ = stdout.flush();
}

/// `--query`: inline JSON, `@FILE`, or `-` for stdin.
fn read_query(arg: &str) -> Result<String, CliError> {
    let text = if arg == "-" {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .map_err(|e| CliError(format!("cannot read the query from stdin: {e}")))?;
        text
    } else if let Some(path) = arg.strip_prefix('@') {
        std::fs::read_to_string(path)
            .map_err(|e| CliError(format!("cannot read the query file {path}: {e}")))?
    } else {
        arg.to_string()
    };
    // Checked as raw JSON: the query is sent exactly as written, never re-encoded.
    serde_json::from_str::<&serde_json::value::RawValue>(text.trim())
        .map_err(|e| CliError(format!("--query is not valid JSON: {e}")))?;
    Ok(text)
}
