//! The validated, immutable configuration, its defaults, and the seed file.
//!
//! Long (about 700 lines, 80 of them tests) because the seed parser checks every key of
//! every section with its own sentence; moving it to `config/seed.rs` is a clean next split.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{Map, Value};

mod auth;

use crate::jobs::Limits;
use crate::runtimes::builtin::{Builtin, ExecSpec};

/// Everything `Emulator::start` needs. Build it with `Config::default()` and adjust fields.
#[derive(Debug, Clone)]
pub struct Config {
    /// Address to bind. Default `127.0.0.1`.
    pub host: String,
    /// Port to bind; 0 picks a free one. Default 4000.
    pub port: u16,
    /// Base of the runtime URIs handed to modules. Default `http://HOST:PORT` (bound port).
    pub public_url: Option<String>,
    /// Runtimes, bindings and tokens to create at start-up.
    pub seed: Seed,
    /// Workers for requests that never wait (the pool's reserve beyond the wait places), so
    /// result posts, polls and status requests always find one. Default 8.
    pub threads: usize,
    /// Sync executes that may wait at once, and separately long polls that may be held at
    /// once; each wait occupies one worker. Past it an execute gets 503 and a poll 204, with
    /// nothing created. Default 128.
    pub wait_threads: usize,
    /// How long a sync execute waits for its job. Default 30 s.
    pub execute_timeout: Duration,
    /// How long an empty job poll is held open before 204; zero answers at once. Default 10 s.
    pub poll_wait: Duration,
    /// Largest accepted request body in bytes. Default 64 MiB.
    pub max_body: u64,
    /// Static bearer tokens the Contour routes accept (with the seed's, they make the mode
    /// strict). Default empty.
    pub tokens: Vec<String>,
    /// Strict authentication even with no token or client configured. Default false.
    pub strict_auth: bool,
    /// Life of an access token issued by the OAuth2 token endpoint. Default 1 h.
    pub token_ttl: Duration,
    /// What the job table bounds (queue, retention, byte budget, job runtime); their
    /// defaults are `Limits::default()`.
    pub limits: Limits,
    /// Deadline for reading one whole request (from its first byte) and for writing one
    /// answer; a slower client has its connection closed. Default 60 s.
    pub io_timeout: Duration,
    /// After SIGTERM (or `Running::shutdown`), how long open answers may still be written
    /// before the remaining connections are closed. Default 5 s.
    pub shutdown_grace: Duration,
    /// An HTTPS listener beside the plain one (needs the `tls` cargo feature). Default none.
    pub tls: Option<TlsOptions>,
    /// Seeds the fault-injection PRNG, so rates give the same decisions every run.
    pub fault_seed: u64,
    /// Appends one JSON line per finished job to this file. Default none.
    pub journal: Option<PathBuf>,
    /// Journal lines also carry the query and the result. Default false.
    pub journal_payloads: bool,
}

/// The HTTPS listener: same host as the plain one, same routes, TLS terminated in-process.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsOptions {
    /// Port to bind; 0 picks a free one.
    pub port: u16,
    /// PEM certificate chain (leaf first). With `key`; when both are absent, a CA and a
    /// certificate for `localhost`/`127.0.0.1` are generated at start-up.
    pub cert: Option<PathBuf>,
    /// PEM private key of `cert`.
    pub key: Option<PathBuf>,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            host: "127.0.0.1".to_string(),
            port: 4000,
            public_url: None,
            seed: Seed::default(),
            threads: 8,
            wait_threads: 128,
            execute_timeout: Duration::from_secs(30),
            poll_wait: Duration::from_secs(10),
            max_body: 64 * 1024 * 1024,
            tokens: Vec::new(),
            strict_auth: false,
            token_ttl: Duration::from_secs(3600),
            limits: Limits::default(),
            io_timeout: Duration::from_secs(60),
            shutdown_grace: Duration::from_secs(5),
            tls: None,
            fault_seed: crate::jobs::faults::DEFAULT_SEED,
            journal: None,
            journal_payloads: false,
        }
    }
}

/// The runtimes, bindings, tokens and fault rules of a seed file.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Seed {
    pub runtimes: Vec<SeedRuntime>,
    pub deployed_apps: Vec<SeedApp>,
    /// Static bearer tokens (top-level and `foundry.tokens`).
    pub tokens: Vec<crate::auth::StaticToken>,
    /// `foundry.users[]`.
    pub users: Vec<crate::auth::users::User>,
    /// `foundry.oauth_clients[]`.
    pub oauth_clients: Vec<crate::auth::OauthClient>,
    /// `foundry.compute_modules.faults[]`.
    pub faults: Vec<crate::jobs::faults::FaultRule>,
}

/// A `runtimes[]` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeedRuntime {
    pub runtime_id: String,
    /// A fixed token; generated when absent.
    pub module_auth_token: Option<String>,
    pub display_name: Option<String>,
    /// Runs inside the emulator (`"builtin": "echo"`, or an `"exec"` object) instead of
    /// waiting for a module to connect.
    pub builtin: Option<Builtin>,
    /// `oauth_client`: the id of a seeded OAuth2 client whose credentials the `module`
    /// launcher hands this runtime's module (`CLIENT_ID`, `CLIENT_SECRET`).
    pub oauth_client: Option<String>,
    /// `sources`: `{"<apiName>": <MountedSourceConfig>}` as the SDKs parse it (`secrets`,
    /// `httpConnectionConfig`, …); the `module` launcher writes it to the module's
    /// `SOURCE_CONFIGURATIONS_PATH` and `SOURCE_CREDENTIALS` files.
    pub sources: Option<Value>,
}

/// A `deployed_apps[]` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeedApp {
    pub deployed_app_rid: String,
    pub runtime_id: String,
    /// Default `master`.
    pub branch: String,
    pub display_name: Option<String>,
    /// Default true.
    pub active: bool,
}

/// A seed file that cannot be used, naming the file, the entry and the field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub file: PathBuf,
    /// JSON path of the entry, e.g. `foundry.compute_modules.deployed_apps[1]`; empty for the file.
    pub entry: String,
    /// The offending field; empty when the entry as a whole is wrong.
    pub field: String,
    pub reason: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "seed file {}", self.file.display())?;
        if !self.entry.is_empty() {
            write!(f, ", entry {}", self.entry)?;
        }
        if !self.field.is_empty() {
            write!(f, ", field '{}'", self.field)?;
        }
        write!(f, ": {}", self.reason)
    }
}

impl std::error::Error for ConfigError {}

/// Keys of each seed section the emulator reads; any other key stops start-up (a typo must
/// not silently lose a setting), except the sections other emulators' seeds carry that this
/// one does not implement ([`NOT_IMPLEMENTED`]), which are named in a warning.
const TOP_KEYS: &[&str] = &["foundry", "tokens"];
const FOUNDRY_KEYS: &[&str] = &["compute_modules", "tokens", "users", "oauth_clients"];
const COMPUTE_MODULES_KEYS: &[&str] = &["runtimes", "deployed_apps", "faults"];
const EXEC_KEYS: &[&str] = &["command", "concurrency", "timeout_secs"];
/// Sections of the reference emulator's seed (and planned ones) that are accepted and ignored.
const NOT_IMPLEMENTED: &[&str] = &[
    "groups",
    "ontologies",
    "ontology",
    "connections",
    "datasets",
    "functions",
    "media_sets",
];
const RUNTIME_KEYS: &[&str] = &[
    "runtime_id",
    "module_auth_token",
    "display_name",
    "builtin",
    "exec",
    "oauth_client",
    "sources",
];
const APP_KEYS: &[&str] = &[
    "deployed_app_rid",
    "runtime_id",
    "branch",
    "display_name",
    "active",
];

impl Seed {
    /// Adds a built-in runtime bound to `rid` on branch master (CLI flags, default echo).
    pub fn add_builtin(&mut self, runtime_id: &str, rid: &str, builtin: Builtin) {
        self.runtimes.push(SeedRuntime {
            runtime_id: runtime_id.to_string(),
            module_auth_token: None,
            display_name: None,
            builtin: Some(builtin),
            oauth_client: None,
            sources: None,
        });
        self.deployed_apps.push(SeedApp {
            deployed_app_rid: rid.to_string(),
            runtime_id: runtime_id.to_string(),
            branch: "master".to_string(),
            display_name: None,
            active: true,
        });
    }

    /// Reads and validates a seed file.
    pub fn load(path: &Path) -> Result<Seed, ConfigError> {
        let err = |entry: &str, field: &str, reason: String| ConfigError {
            file: path.to_path_buf(),
            entry: entry.to_string(),
            field: field.to_string(),
            reason,
        };
        let text = std::fs::read(path).map_err(|e| err("", "", format!("cannot be read: {e}")))?;
        let root: Value = serde_json::from_slice(&text)
            .map_err(|e| err("", "", format!("is not valid JSON: {e}")))?;
        let mut seed =
            Seed::from_json(&root).map_err(|(entry, field, reason)| err(&entry, &field, reason))?;
        // `exec` commands run next to the seed file, so its relative paths mean what they
        // say wherever the emulator was started.
        let dir = path
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .map(|d| d.canonicalize().unwrap_or_else(|_| d.to_path_buf()));
        for rt in &mut seed.runtimes {
            if let Some(Builtin::Exec(spec)) = &mut rt.builtin {
                spec.dir = dir.clone();
            }
        }
        Ok(seed)
    }

    /// Validates a parsed seed document; errors are (entry, field, reason).
    pub fn from_json(root: &Value) -> Result<Seed, (String, String, String)> {
        let fail = |entry: &str, field: &str, reason: &str| {
            Err((entry.to_string(), field.to_string(), reason.to_string()))
        };
        let Some(root) = root.as_object() else {
            return fail("", "", "the document must be a JSON object");
        };
        check_keys(root, "the top level", "", TOP_KEYS)?;
        let mut seed = Seed {
            tokens: auth::tokens(root, "")?,
            ..Seed::default()
        };
        let Some(foundry) = root.get("foundry") else {
            return Ok(seed);
        };
        let Some(foundry) = foundry.as_object() else {
            return fail("foundry", "", "must be an object");
        };
        check_keys(foundry, "foundry", "foundry.", FOUNDRY_KEYS)?;
        seed.tokens.extend(auth::tokens(foundry, "foundry")?);
        seed.users = auth::users(foundry)?;
        seed.oauth_clients = auth::clients(foundry)?;
        let Some(cm) = foundry.get("compute_modules") else {
            return Ok(seed);
        };
        let Some(cm) = cm.as_object() else {
            return fail("foundry.compute_modules", "", "must be an object");
        };
        check_keys(
            cm,
            "foundry.compute_modules",
            "foundry.compute_modules.",
            COMPUTE_MODULES_KEYS,
        )?;
        for (i, entry) in entries(cm, "runtimes")?.iter().enumerate() {
            let at = format!("foundry.compute_modules.runtimes[{i}]");
            let obj = object(entry, &at, RUNTIME_KEYS)?;
            let runtime_id = required_string(obj, &at, "runtime_id")?;
            if runtime_id.contains('/') {
                return fail(&at, "runtime_id", "must not contain '/'");
            }
            if seed.runtimes.iter().any(|r| r.runtime_id == runtime_id) {
                return fail(
                    &at,
                    "runtime_id",
                    &format!("'{runtime_id}' is declared twice"),
                );
            }
            seed.runtimes.push(SeedRuntime {
                runtime_id,
                module_auth_token: optional_string(obj, &at, "module_auth_token")?,
                display_name: optional_string(obj, &at, "display_name")?,
                builtin: builtin(obj, &at)?,
                oauth_client: optional_string(obj, &at, "oauth_client")?,
                sources: sources(obj, &at)?,
            });
            let named = seed.runtimes.last().and_then(|r| r.oauth_client.as_ref());
            if let Some(id) = named {
                if !seed.oauth_clients.iter().any(|c| c.client_id == *id) {
                    return fail(
                        &at,
                        "oauth_client",
                        &format!(
                            "names client '{id}', which no foundry.oauth_clients[] entry declares"
                        ),
                    );
                }
            }
        }
        for (i, entry) in entries(cm, "deployed_apps")?.iter().enumerate() {
            let at = format!("foundry.compute_modules.deployed_apps[{i}]");
            let obj = object(entry, &at, APP_KEYS)?;
            let runtime_id = required_string(obj, &at, "runtime_id")?;
            if !seed.runtimes.iter().any(|r| r.runtime_id == runtime_id) {
                return fail(
                    &at,
                    "runtime_id",
                    &format!("names runtime '{runtime_id}', which no runtimes[] entry declares"),
                );
            }
            let active = match obj.get("active") {
                None => true,
                Some(Value::Bool(b)) => *b,
                Some(_) => return fail(&at, "active", "must be true or false"),
            };
            seed.deployed_apps.push(SeedApp {
                deployed_app_rid: required_string(obj, &at, "deployed_app_rid")?,
                runtime_id,
                branch: optional_string(obj, &at, "branch")?
                    .unwrap_or_else(|| "master".to_string()),
                display_name: optional_string(obj, &at, "display_name")?,
                active,
            });
        }
        for rt in &seed.runtimes {
            if !seed
                .deployed_apps
                .iter()
                .any(|app| app.runtime_id == rt.runtime_id)
            {
                log::warn!(
                    "seed: runtime '{}' is bound to no deployed app: no Contour job can reach it",
                    rt.runtime_id
                );
            }
        }
        for (i, entry) in entries(cm, "faults")?.iter().enumerate() {
            let at = format!("foundry.compute_modules.faults[{i}]");
            let rule = crate::jobs::faults::FaultRule::parse(entry, &at)
                .map_err(|reason| (at.clone(), String::new(), reason))?;
            seed.faults.push(rule);
        }
        Ok(seed)
    }
}

type FieldResult<T> = Result<T, (String, String, String)>;

fn entries<'a>(cm: &'a Map<String, Value>, key: &str) -> FieldResult<&'a [Value]> {
    match cm.get(key) {
        None | Some(Value::Null) => Ok(&[]),
        Some(Value::Array(items)) => Ok(items),
        Some(_) => Err((
            "foundry.compute_modules".into(),
            key.into(),
            "must be a list".into(),
        )),
    }
}

fn object<'a>(entry: &'a Value, at: &str, known: &[&str]) -> FieldResult<&'a Map<String, Value>> {
    let obj = entry.as_object().ok_or_else(|| {
        (
            at.to_string(),
            String::new(),
            "must be an object".to_string(),
        )
    })?;
    check_keys(obj, at, &format!("{at}."), known)?;
    Ok(obj)
}

/// Refuses a key of `section` that is not in `known`, naming the closest known one; keys of
/// sections this emulator does not implement only warn.
fn check_keys(
    section: &Map<String, Value>,
    at: &str,
    path: &str,
    known: &[&str],
) -> FieldResult<()> {
    let mut ignored = Vec::new();
    for key in section.keys().filter(|k| !known.contains(&k.as_str())) {
        if NOT_IMPLEMENTED.contains(&key.as_str()) {
            ignored.push(format!("{path}{key}"));
            continue;
        }
        let hint = closest(key, known)
            .map(|near| format!("; did you mean `{near}`?"))
            .unwrap_or_else(|| format!(" (known: {})", known.join(", ")));
        return Err((
            at.to_string(),
            key.clone(),
            format!("is not a known key{hint}"),
        ));
    }
    if !ignored.is_empty() {
        log::warn!(
            "seed: ignoring {}: this emulator does not implement them",
            ignored.join(", ")
        );
    }
    Ok(())
}

/// The known key within edit distance 2 of `key` (a typo), if exactly one is nearest.
fn closest<'a>(key: &str, known: &[&'a str]) -> Option<&'a str> {
    known
        .iter()
        .map(|k| (edit_distance(key, k), *k))
        .filter(|(d, _)| *d <= 2)
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}

/// Levenshtein distance (counting a swap of neighbours as one edit, so `brnach` is 1 from
/// `branch`).
fn edit_distance(a: &str, b: &str) -> usize {
    let (a, b): (Vec<char>, Vec<char>) = (a.chars().collect(), b.chars().collect());
    let mut d = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in d[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            d[i][j] = (d[i - 1][j] + 1)
                .min(d[i][j - 1] + 1)
                .min(d[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                d[i][j] = d[i][j].min(d[i - 2][j - 2] + 1);
            }
        }
    }
    d[a.len()][b.len()]
}

/// Reads `"builtin": "echo"` or `"exec": {"command": [..], "concurrency": N, "timeout_secs": S}`.
fn builtin(obj: &Map<String, Value>, at: &str) -> FieldResult<Option<Builtin>> {
    let fail =
        |field: &str, reason: &str| Err((at.to_string(), field.to_string(), reason.to_string()));
    let kind = obj.get("builtin");
    let exec = match (kind.map(|k| k.as_str()), obj.get("exec")) {
        (None, None) => return Ok(None),
        (Some(Some("echo")), None) => return Ok(Some(Builtin::Echo)),
        (None | Some(Some("exec")), Some(Value::Object(exec))) => exec,
        (None | Some(Some("exec")), Some(_)) => {
            return fail("exec", "must be an object with a \"command\" list")
        }
        (Some(_), Some(_)) => {
            return fail(
                "builtin",
                "must be \"exec\" (or absent) beside an \"exec\" object",
            )
        }
        (Some(_), None) => {
            return fail(
                "builtin",
                "must be \"echo\", or \"exec\" with an \"exec\" object",
            )
        }
    };
    let at_exec = format!("{at}.exec");
    check_keys(exec, &at_exec, &format!("{at_exec}."), EXEC_KEYS)?;
    let command: Vec<String> = match exec.get("command") {
        Some(Value::Array(items)) if !items.is_empty() => items
            .iter()
            .map(|v| v.as_str().map(str::to_string))
            .collect::<Option<_>>()
            .ok_or_else(|| {
                (
                    at_exec.clone(),
                    "command".to_string(),
                    "must be a list of strings".to_string(),
                )
            })?,
        _ => {
            return Err((
                at_exec,
                "command".into(),
                "is required: a non-empty list of strings".into(),
            ))
        }
    };
    let concurrency = match exec.get("concurrency") {
        None => ExecSpec::DEFAULT_CONCURRENCY,
        Some(v) => match v.as_u64() {
            Some(n @ 1..=1024) => n as usize,
            _ => {
                return Err((
                    at_exec,
                    "concurrency".into(),
                    "must be an integer from 1 to 1024".into(),
                ))
            }
        },
    };
    let timeout = match exec.get("timeout_secs") {
        None => ExecSpec::DEFAULT_TIMEOUT,
        Some(v) => match v.as_f64() {
            Some(s) if s > 0.0 && s.is_finite() => Duration::from_secs_f64(s),
            _ => {
                return Err((
                    at_exec,
                    "timeout_secs".into(),
                    "must be a positive number of seconds".into(),
                ))
            }
        },
    };
    Ok(Some(Builtin::Exec(ExecSpec {
        command,
        concurrency,
        timeout,
        dir: None,
    })))
}

/// A runtime's `sources`: an object of source objects, each `secrets` an object of strings.
fn sources(obj: &Map<String, Value>, at: &str) -> FieldResult<Option<Value>> {
    let bad = |why: &str| Err((at.to_string(), "sources".to_string(), why.to_string()));
    let Some(value) = obj.get("sources").filter(|v| !v.is_null()) else {
        return Ok(None);
    };
    let Some(map) = value.as_object() else {
        return bad("must be an object of sources by API name");
    };
    for (name, source) in map {
        let Some(source) = source.as_object() else {
            return bad(&format!("source '{name}' must be an object"));
        };
        match source.get("secrets") {
            None | Some(Value::Null) => {}
            Some(Value::Object(secrets)) if secrets.values().all(Value::is_string) => {}
            Some(_) => {
                return bad(&format!(
                    "source '{name}': secrets must map names to strings"
                ))
            }
        }
    }
    Ok(Some(value.clone()))
}

fn optional_string(obj: &Map<String, Value>, at: &str, field: &str) -> FieldResult<Option<String>> {
    match obj.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if !s.trim().is_empty() => Ok(Some(s.trim().to_string())),
        Some(_) => Err((at.into(), field.into(), "must be a non-blank string".into())),
    }
}

fn required_string(obj: &Map<String, Value>, at: &str, field: &str) -> FieldResult<String> {
    optional_string(obj, at, field)?.ok_or_else(|| {
        (
            at.into(),
            field.into(),
            "is required (a non-blank string)".into(),
        )
    })
}

fn string_list(obj: &Map<String, Value>, at: &str, field: &str) -> FieldResult<Vec<String>> {
    let bad = || {
        (
            at.to_string(),
            field.to_string(),
            "must be a list of non-blank strings".to_string(),
        )
    };
    match obj.get(field) {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(items)) => items
            .iter()
            .map(|v| {
                v.as_str()
                    .filter(|s| !s.trim().is_empty())
                    .map(str::to_string)
                    .ok_or_else(bad)
            })
            .collect(),
        Some(_) => Err(bad()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn defaults_fill_in() {
        let doc = json!({"foundry": {"users": [], "compute_modules": {
            "runtimes": [{"runtime_id": "rt"}],
            "deployed_apps": [{"deployed_app_rid": "ri.app", "runtime_id": "rt"}]}}});
        let seed = Seed::from_json(&doc).unwrap();
        assert_eq!(seed.runtimes[0].module_auth_token, None);
        assert_eq!(seed.runtimes[0].builtin, None);
        assert_eq!(seed.deployed_apps[0].branch, "master");
        assert!(seed.deployed_apps[0].active);
    }

    #[test]
    fn builtins_parse() {
        let doc = json!({"foundry": {"compute_modules": {"runtimes": [
            {"runtime_id": "e", "builtin": "echo"},
            {"runtime_id": "x", "exec": {"command": ["sh", "h.sh"], "concurrency": 4, "timeout_secs": 1.5}}]}}});
        let seed = Seed::from_json(&doc).unwrap();
        assert_eq!(seed.runtimes[0].builtin, Some(Builtin::Echo));
        let want = ExecSpec {
            command: vec!["sh".into(), "h.sh".into()],
            concurrency: 4,
            timeout: Duration::from_millis(1500),
            dir: None,
        };
        assert_eq!(seed.runtimes[1].builtin, Some(Builtin::Exec(want)));
    }

    #[test]
    fn errors_name_entry_and_field() {
        let cases = [
            (json!([]), "", ""),
            (
                json!({"foundry": {"compute_modules": {"runtimes": [{}]}}}),
                "foundry.compute_modules.runtimes[0]",
                "runtime_id",
            ),
            (
                json!({"foundry": {"compute_modules": {"runtimes": [{"runtime_id": "a"}],
                "deployed_apps": [{"deployed_app_rid": "x", "runtime_id": "a"}, {"deployed_app_rid": "y", "runtime_id": "b"}]}}}),
                "foundry.compute_modules.deployed_apps[1]",
                "runtime_id",
            ),
            (
                json!({"foundry": {"compute_modules": {"runtimes": [{"runtime_id": "a"}],
                "deployed_apps": [{"deployed_app_rid": "x", "runtime_id": "a", "active": "yes"}]}}}),
                "foundry.compute_modules.deployed_apps[0]",
                "active",
            ),
            (json!({"tokens": [1]}), "", "tokens"),
            (
                json!({"foundry": {"compute_modules": {"runtimes": [{"runtime_id": "a", "builtin": "cat"}]}}}),
                "foundry.compute_modules.runtimes[0]",
                "builtin",
            ),
            (
                json!({"foundry": {"compute_modules": {"runtimes": [{"runtime_id": "a", "exec": {"command": []}}]}}}),
                "foundry.compute_modules.runtimes[0].exec",
                "command",
            ),
            (
                json!({"foundry": {"compute_modules": {"runtimes": [{"runtime_id": "a", "exec": {"command": ["x"], "concurrency": 0}}]}}}),
                "foundry.compute_modules.runtimes[0].exec",
                "concurrency",
            ),
        ];
        for (doc, entry, field) in cases {
            let (e, f, _) = Seed::from_json(&doc).unwrap_err();
            assert_eq!((e.as_str(), f.as_str()), (entry, field), "{doc}");
        }
    }
}
