//! `module` and `module-env`: run a compute module (Python or TypeScript SDK) against a
//! running emulator, with every environment variable both SDKs read.
//!
//! The launcher creates (or resets) the runtime session over HTTP, writes the token to a
//! file (the SDKs read `MODULE_AUTH_TOKEN` as a path; no trailing newline, which the Python
//! SDK would send verbatim and be rejected for), then on Unix *replaces itself* with the
//! command (`exec`): the module gets the launcher's pid, so Ctrl-C and SIGTERM reach it
//! directly and its exit code is the launcher's, with no signal forwarding to get wrong.

use std::path::PathBuf;
use std::process::{Command, ExitCode};
use std::time::Duration;

use argh::FromArgs;
use serde_json::json;

use super::jobs::emulator_url;
use super::CliError;
use crate::client::Client;

/// Run a compute module against a running emulator: create the runtime session, set the
/// SDK environment, and exec the command (arguments after `--`).
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "module")]
pub struct ModuleArgs {
    #[argh(option)]
    /// runtime id of the session to create or reset
    runtime_id: String,
    #[argh(option)]
    /// deployed app RID to bind to the runtime (replaces its bindings)
    deployed_app_rid: Option<String>,
    #[argh(option)]
    /// branch of that binding (default master)
    branch: Option<String>,
    #[argh(option)]
    /// emulator base URL (env FOUNDRY_EMULATOR_URL; default http://127.0.0.1:4000)
    emulator: Option<String>,
    #[argh(option, default = "1")]
    /// MAX_CONCURRENT_TASKS for the module (default 1)
    concurrency: usize,
    #[argh(option)]
    /// CA file the module trusts (default: the emulator's generated CA)
    ca_path: Option<PathBuf>,
    #[argh(option)]
    /// bearer token that creates the session (env FOUNDRY_TOKEN; default "emulator"); strict
    /// mode needs an accepted one
    token: Option<String>,
    #[argh(option)]
    /// OAuth2 client id the module acts as: sets CLIENT_ID (env CLIENT_ID; default: the
    /// runtime's seeded oauth_client)
    client_id: Option<String>,
    #[argh(option)]
    /// that client's secret: sets CLIENT_SECRET (env CLIENT_SECRET, which keeps it out of
    /// `ps`)
    client_secret: Option<String>,
    #[argh(positional, greedy)]
    /// the module command and its arguments
    command: Vec<String>,
}

// The same flags as `module` without the command (argh has no flattening); both build a
// `Session` and share `environment`.

/// Print the module environment as shell `export` lines (creates or resets the session).
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "module-env")]
pub struct ModuleEnvArgs {
    #[argh(option)]
    /// runtime id of the session to create or reset
    runtime_id: String,
    #[argh(option)]
    /// deployed app RID to bind to the runtime (replaces its bindings)
    deployed_app_rid: Option<String>,
    #[argh(option)]
    /// branch of that binding (default master)
    branch: Option<String>,
    #[argh(option)]
    /// emulator base URL (env FOUNDRY_EMULATOR_URL; default http://127.0.0.1:4000)
    emulator: Option<String>,
    #[argh(option, default = "1")]
    /// MAX_CONCURRENT_TASKS for the module (default 1)
    concurrency: usize,
    #[argh(option)]
    /// CA file the module trusts (default: the emulator's generated CA)
    ca_path: Option<PathBuf>,
    #[argh(option)]
    /// bearer token that creates the session (env FOUNDRY_TOKEN; default "emulator"); strict
    /// mode needs an accepted one
    token: Option<String>,
    #[argh(option)]
    /// OAuth2 client id the module acts as: sets CLIENT_ID (env CLIENT_ID; default: the
    /// runtime's seeded oauth_client)
    client_id: Option<String>,
    #[argh(option)]
    /// that client's secret: sets CLIENT_SECRET (env CLIENT_SECRET, which keeps it out of
    /// `ps`)
    client_secret: Option<String>,
}

/// What both subcommands need to build the environment.
struct Session<'a> {
    runtime_id: &'a str,
    deployed_app_rid: Option<&'a str>,
    branch: Option<&'a str>,
    emulator: Option<String>,
    concurrency: usize,
    ca_path: Option<PathBuf>,
    token: Option<String>,
    client_id: Option<String>,
    client_secret: Option<String>,
}

pub fn module(args: ModuleArgs) -> Result<ExitCode, CliError> {
    let Some((program, rest)) = args.command.split_first() else {
        return Err(CliError(
            "module needs a command after --, e.g. -- python app.py".into(),
        ));
    };
    let env = environment(Session {
        runtime_id: &args.runtime_id,
        deployed_app_rid: args.deployed_app_rid.as_deref(),
        branch: args.branch.as_deref(),
        emulator: args.emulator.clone(),
        concurrency: args.concurrency,
        ca_path: args.ca_path.clone(),
        token: args.token.clone(),
        client_id: args.client_id.clone(),
        client_secret: args.client_secret.clone(),
    })?;
    let mut command = Command::new(program);
    command.args(rest).envs(env);
    run(command, program)
}

pub fn module_env(args: ModuleEnvArgs) -> Result<ExitCode, CliError> {
    let env = environment(Session {
        runtime_id: &args.runtime_id,
        deployed_app_rid: args.deployed_app_rid.as_deref(),
        branch: args.branch.as_deref(),
        emulator: args.emulator,
        concurrency: args.concurrency,
        ca_path: args.ca_path,
        token: args.token,
        client_id: args.client_id,
        client_secret: args.client_secret,
    })?;
    for (name, value) in env {
        println!("export {name}={}", shell_quote(&value));
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(unix)]
fn run(mut command: Command, program: &str) -> Result<ExitCode, CliError> {
    use std::os::unix::process::CommandExt;
    // exec only returns on failure.
    let err = command.exec();
    Err(CliError(format!("cannot run {program}: {err}")))
}

#[cfg(not(unix))]
fn run(mut command: Command, program: &str) -> Result<ExitCode, CliError> {
    let status = command
        .status()
        .map_err(|e| CliError(format!("cannot run {program}: {e}")))?;
    Ok(ExitCode::from(
        status.code().unwrap_or(1).clamp(0, 255) as u8
    ))
}

/// Creates the session and returns every variable both SDKs read, in a stable order.
fn environment(session: Session<'_>) -> Result<Vec<(String, String)>, CliError> {
    let base = emulator_url(session.emulator);
    let bearer = super::jobs::bearer_token(session.token);
    let client = Client::new(&base, &bearer, Duration::from_secs(30));
    let fail = |e: crate::client::ClientError| CliError(format!("{base}: {e}"));
    let info = client.info().map_err(fail)?;
    let mut body = json!({"runtimeId": session.runtime_id});
    if let Some(rid) = session.deployed_app_rid {
        body["deployedAppRid"] = json!(rid);
    }
    if let Some(branch) = session.branch {
        body["branch"] = json!(branch);
    }
    let created = client.create_runtime(&body).map_err(fail)?;
    let field = |name: &str| -> Result<String, CliError> {
        created[name]
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| CliError(format!("{base}: the session answer has no '{name}'")))
    };
    let token_file = write_private_file(
        session.runtime_id,
        "token",
        field("moduleAuthToken")?.as_bytes(),
    )?;

    // The Python SDK speaks only HTTPS to RUNTIME_HOST:RUNTIME_PORT (paths from the URIs);
    // the TypeScript SDK uses the full URIs, which stay on the plain listener.
    let tls_url = info["tls_base_url"].as_str();
    if tls_url.is_none() {
        log::warn!("{base} has no TLS listener (serve --tls-port): Python SDK modules need one");
    }
    let (host, port) = host_port(tls_url.unwrap_or(&base)).ok_or_else(|| {
        CliError(format!(
            "cannot read a host and port from {}",
            tls_url.unwrap_or(&base)
        ))
    })?;
    let ca = session
        .ca_path
        .map(|p| p.display().to_string())
        .or_else(|| info["ca_path"].as_str().map(str::to_string))
        .unwrap_or_default();
    let hostname = format!("{host}:{port}");
    let mut env = vec![
        ("RUNTIME_HOST".to_string(), host.clone()),
        ("RUNTIME_PORT".to_string(), port),
        ("GET_JOB_URI".to_string(), field("getJobUri")?),
        ("POST_RESULT_URI".to_string(), field("postResultUri")?),
        ("POST_SCHEMA_URI".to_string(), field("postSchemaUri")?),
        (
            "RESTART_NOTIFICATION_URI".to_string(),
            field("restartNotificationUri")?,
        ),
        (
            "MODULE_AUTH_TOKEN".to_string(),
            token_file.display().to_string(),
        ),
        (
            "MAX_CONCURRENT_TASKS".to_string(),
            session.concurrency.max(1).to_string(),
        ),
    ];
    // The platform SDK's `FoundryClient()` and `compute_modules.auth.oauth(hostname, …)`
    // reach the token endpoint here: the emulator's HTTPS listener, which serves every route.
    env.push(("FOUNDRY_HOSTNAME".to_string(), hostname));
    env.extend(client_credentials(
        &created,
        session.client_id,
        session.client_secret,
    )?);
    // Set only when there is a CA: the TypeScript SDK would try to read an empty path.
    if !ca.is_empty() {
        env.push(("CONNECTIONS_TO_OTHER_PODS_CA_PATH".to_string(), ca.clone()));
        env.push(("DEFAULT_CA_PATH".to_string(), ca));
    }
    env.extend(source_files(session.runtime_id, &created)?);
    // A CI proxy must not intercept loopback traffic to the emulator.
    let existing = std::env::var("NO_PROXY")
        .or_else(|_| std::env::var("no_proxy"))
        .unwrap_or_default();
    let mut hosts: Vec<&str> = existing
        .split(',')
        .filter(|h| !h.trim().is_empty())
        .collect();
    for loopback in [host.as_str(), "127.0.0.1", "localhost"] {
        if !hosts.contains(&loopback) {
            hosts.push(loopback);
        }
    }
    let no_proxy = hosts.join(",");
    env.push(("NO_PROXY".to_string(), no_proxy.clone()));
    env.push(("no_proxy".to_string(), no_proxy));
    Ok(env)
}

/// CLIENT_ID and CLIENT_SECRET for the module's third-party-application calls: the flags, else
/// the runtime's seeded `oauth_client` (in the session answer), else none.
fn client_credentials(
    created: &serde_json::Value,
    id: Option<String>,
    secret: Option<String>,
) -> Result<Vec<(String, String)>, CliError> {
    let seeded = |field: &str| created["oauthClient"][field].as_str().map(str::to_string);
    let from_env = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    let id = id.or_else(|| from_env("CLIENT_ID"));
    let secret = secret.or_else(|| from_env("CLIENT_SECRET"));
    let (id, secret) = match (id, secret) {
        (Some(id), secret) => (Some(id), secret),
        (None, Some(_)) => return Err(CliError("--client-secret needs --client-id".into())),
        (None, None) => (seeded("clientId"), seeded("clientSecret")),
    };
    if id.is_some() && secret.is_none() {
        log::warn!(
            "the module's OAuth2 client has no secret: the SDK's oauth() gets no token without CLIENT_SECRET"
        );
    }
    let mut env = Vec::new();
    if let Some(id) = id {
        env.push(("CLIENT_ID".to_string(), id));
    }
    if let Some(secret) = secret {
        env.push(("CLIENT_SECRET".to_string(), secret));
    }
    Ok(env)
}

/// The runtime's seeded sources (in the session answer) as the two files both SDKs read:
/// `SOURCE_CONFIGURATIONS_PATH` (every source's mounted configuration) and
/// `SOURCE_CREDENTIALS` (each source's `secrets`).
fn source_files(
    runtime_id: &str,
    created: &serde_json::Value,
) -> Result<Vec<(String, String)>, CliError> {
    let Some(sources) = created["sources"].as_object() else {
        return Ok(Vec::new());
    };
    let credentials: serde_json::Map<String, serde_json::Value> = sources
        .iter()
        .map(|(name, source)| {
            let secrets = source.get("secrets").cloned().unwrap_or_else(|| json!({}));
            (name.clone(), secrets)
        })
        .collect();
    let configurations = serde_json::to_vec(sources).unwrap_or_default();
    let credentials = serde_json::to_vec(&credentials).unwrap_or_default();
    let configurations = write_private_file(runtime_id, "sources.json", &configurations)?;
    let credentials = write_private_file(runtime_id, "source-credentials.json", &credentials)?;
    Ok(vec![
        (
            "SOURCE_CONFIGURATIONS_PATH".to_string(),
            configurations.display().to_string(),
        ),
        (
            "SOURCE_CREDENTIALS".to_string(),
            credentials.display().to_string(),
        ),
    ])
}

/// Writes `contents` (the token: without a newline) to a file only this user can read: one
/// file per runtime id and kind in one per-user directory, overwritten by each launch (the
/// launcher execs, so it cannot clean up after itself; this keeps the files from piling up).
fn write_private_file(runtime_id: &str, kind: &str, contents: &[u8]) -> Result<PathBuf, CliError> {
    let user = std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .unwrap_or_else(|_| "user".to_string());
    let dir = std::env::temp_dir().join(format!("foundry-emulator-modules-{user}"));
    // The launcher's pid (which the module keeps: `module` execs it) makes the name unique,
    // so two emulators' modules with the same runtime id never share a token file.
    let path = dir.join(format!("{runtime_id}-{}.{kind}", std::process::id()));
    let write = || -> std::io::Result<()> {
        let mut builder = std::fs::DirBuilder::new();
        builder.recursive(true);
        #[cfg(unix)]
        std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
        builder.create(&dir)?;
        let dir_meta = std::fs::symlink_metadata(&dir)?;
        if !dir_meta.is_dir() {
            return Err(std::io::Error::other(
                "the token directory is not a plain directory",
            ));
        }
        // In a shared temp directory, someone else may have made this directory first.
        #[cfg(unix)]
        {
            use std::os::unix::fs::{MetadataExt, PermissionsExt};
            if dir_meta.permissions().mode() & 0o077 != 0 {
                return Err(std::io::Error::other(
                    "the token directory is open to other users (want mode 0700)",
                ));
            }
            let probe = dir.join(".owner-probe");
            std::fs::write(&probe, b"")?;
            let ours = std::fs::metadata(&probe)?.uid();
            let _ = std::fs::remove_file(&probe);
            if dir_meta.uid() != ours {
                return Err(std::io::Error::other(
                    "the token directory belongs to another user",
                ));
            }
        }
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create(true).truncate(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            // Never follow a planted symlink in a shared temp directory.
            options.mode(0o600).custom_flags(libc::O_NOFOLLOW);
        }
        std::io::Write::write_all(&mut options.open(&path)?, contents)
    };
    write().map_err(|e| {
        CliError(format!(
            "cannot write the {kind} file {}: {e}",
            path.display()
        ))
    })?;
    Ok(path)
}

/// `http(s)://HOST:PORT/...` → (HOST, PORT), with the scheme's default port; an IPv6 host
/// keeps its brackets.
fn host_port(url: &str) -> Option<(String, String)> {
    let uri: ureq::http::Uri = url.parse().ok()?;
    let default = if uri.scheme_str()? == "https" {
        443
    } else {
        80
    };
    let port = uri.port_u16().unwrap_or(default);
    Some((uri.host()?.to_string(), port.to_string()))
}

fn shell_quote(value: &str) -> String {
    format!("'{}'", value.replace('\'', r"'\''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_port_reads_urls() {
        let cases = [
            ("https://127.0.0.1:8443", Some(("127.0.0.1", "8443"))),
            ("http://localhost:4000/x/y", Some(("localhost", "4000"))),
            ("https://example.test", Some(("example.test", "443"))),
            ("https://[::1]:8443/", Some(("[::1]", "8443"))),
            ("http://[::1]", Some(("[::1]", "80"))),
            ("nonsense", None),
        ];
        for (url, want) in cases {
            let got = host_port(url);
            assert_eq!(
                got.as_ref().map(|(h, p)| (h.as_str(), p.as_str())),
                want,
                "{url}"
            );
        }
    }

    #[test]
    fn shell_quote_survives_quotes() {
        assert_eq!(shell_quote("a'b"), r"'a'\''b'");
    }
}
