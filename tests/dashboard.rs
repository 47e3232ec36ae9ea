//! The dashboard in a real browser: headless Chromium (Debian's `chromium`, installed by
//! `.ci/run`) loads `/_emulate` and a job page after real jobs ran, and the test reads the
//! DOM Chromium rendered (`--dump-dom`, after scripts ran) and saves screenshots under
//! `target/dashboard/` (kept by CI as artifacts).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;

use crate::util::*;

const RID: &str = "ri.foundry.main.deployed-app.dashboard";
/// A query that would run script if any value reached the page unescaped.
const HOSTILE: &str = "<script>document.title='pwned-by-script'</script>\
                       <img src=x onerror=\"document.title='pwned-by-img'\">";
const BROWSER_TIMEOUT: Duration = Duration::from_secs(90);

fn chromium() -> PathBuf {
    let found = ["chromium", "chromium-browser", "google-chrome"]
        .iter()
        .map(|name| Path::new("/usr/bin").join(name))
        .find(|path| path.exists());
    found.unwrap_or_else(|| {
        panic!("headless Chromium is missing: install Debian's `chromium` (`.ci/run` does)")
    })
}

/// Runs Chromium headless on `url` with `args`, bounded in time; returns its stdout.
fn browse(url: &str, args: &[String]) -> String {
    let profile = std::env::temp_dir().join(format!(
        "fe-chromium-{}-{}",
        std::process::id(),
        now_millis()
    ));
    let mut child = Command::new(chromium())
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--disable-extensions",
            "--window-size=1400,1000",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(args)
        .arg(url)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("chromium starts");
    let stdout = child.stdout.take().expect("stdout");
    let reader = std::thread::spawn(move || {
        let mut out = String::new();
        let _ = std::io::Read::read_to_string(&mut { stdout }, &mut out);
        out
    });
    let deadline = Instant::now() + BROWSER_TIMEOUT;
    loop {
        if child.try_wait().expect("wait").is_some() {
            break;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("chromium did not finish within {BROWSER_TIMEOUT:?} on {url}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = std::fs::remove_dir_all(&profile);
    reader.join().expect("stdout reader")
}

fn dom(url: &str) -> String {
    browse(url, &["--dump-dom".to_string()])
}

fn screenshot(url: &str, name: &str) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/dashboard");
    std::fs::create_dir_all(&dir).expect("target/dashboard");
    let file = dir.join(name);
    let _ = std::fs::remove_file(&file);
    browse(url, &[format!("--screenshot={}", file.display())]);
    let size = std::fs::metadata(&file).map(|m| m.len()).unwrap_or(0);
    assert!(
        size > 1000,
        "a screenshot of {url} was written to {}",
        file.display()
    );
}

#[test]
fn the_dashboard_renders_real_jobs_in_a_browser_and_runs_no_injected_script() {
    let server = TestServer::start(|_| {});
    let rt = server.runtime_bound("dash-rt", RID);
    let app = server.app();
    let succeeded = app.submit_id(RID, "greet", json!({"name": "Ada"}));
    assert_eq!(rt.next_job_id(), succeeded);
    rt.complete(&succeeded, br#"{"greeting":"hello Ada"}"#);
    let failed = app.submit_id(RID, "greet", json!({"name": "Bob"}));
    assert_eq!(rt.next_job_id(), failed);
    rt.restart().expect_status(200);
    let hostile = app.submit_id(RID, "greet", json!({ "x": HOSTILE }));
    assert_eq!(rt.next_job_id(), hostile);
    rt.complete(&hostile, HOSTILE.as_bytes());
    let running = app.submit_id(RID, "greet", json!({"name": "Cy"}));
    assert_eq!(rt.next_job_id(), running);

    let overview_url = server.url("/_emulate");
    let overview = dom(&overview_url);
    assert!(
        overview.contains("<title>foundry-emulator</title>"),
        "no injected script changed the title: {overview}"
    );
    assert!(
        !overview.contains("pwned"),
        "injected markup ran: {overview}"
    );
    for id in [&succeeded, &failed, &hostile, &running] {
        assert!(overview.contains(id.as_str()), "job {id} is listed");
    }
    for status in ["succeeded", "failed", "running"] {
        assert!(
            overview.contains(&format!("<td class=\"{status}\">{status}</td>")),
            "a {status} job is shown as {status}"
        );
    }
    assert!(overview.contains("dash-rt"), "the runtime is listed");
    assert!(overview.contains(RID), "the binding is listed");
    assert!(
        overview.contains("compute module restarted"),
        "the failure message is shown"
    );

    let page_url = server.url(&format!("/_emulate/view/jobs/{succeeded}"));
    let page = dom(&page_url);
    assert!(page.contains(&format!("<code id=\"job-id\">{succeeded}</code>")));
    assert!(page.contains("<span id=\"status\" class=\"succeeded\">succeeded</span>"));
    assert!(
        page.contains("\"greeting\": \"hello Ada\""),
        "the JSON result is pretty-printed: {page}"
    );

    let hostile_url = server.url(&format!("/_emulate/view/jobs/{hostile}"));
    let hostile_page = dom(&hostile_url);
    assert!(
        hostile_page.contains(&format!("<title>job {hostile}</title>")),
        "no injected script changed the title: {hostile_page}"
    );
    assert!(!hostile_page.contains("pwned-by-img\"") && !hostile_page.contains("<img"));
    assert!(
        hostile_page.contains("&lt;script&gt;document.title='pwned-by-script'&lt;/script&gt;"),
        "the hostile query is shown as text: {hostile_page}"
    );

    screenshot(&overview_url, "overview.png");
    screenshot(&page_url, "job.png");
}
