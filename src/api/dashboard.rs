//! The dashboard: `GET /_emulate` (runtimes, bindings, recent jobs with filters) and
//! `GET /_emulate/view/jobs/:id` (one job with its query and result).
//!
//! Server-rendered HTML with inline CSS and a few lines of JavaScript (the auto-refresh
//! switch), no external asset, so it works air-gapped. Every value from a client (ids, query
//! types, queries, results, error messages) goes through [`escape`]: queries are user input.
//! The filters are a plain GET form with the listing API's parameters.

use std::fmt::Write as _;

use serde_json::Value;

use super::observe::{self, is_stale};
use super::wire::percent_encode;
use super::State;
use crate::clock::utc_millis;
use crate::error::Error;
use crate::http::{Reply, Req};
use crate::jobs::RuntimeView;
use crate::jobs::{now_millis, JobId, JobView};

/// Bytes of a query or result shown on a job page; past it the page says how much is hidden.
const SHOW_MAX: usize = 64 * 1024;

const STYLE: &str = "body{font:14px/1.4 system-ui,sans-serif;margin:1.5em;color:#222}\
table{border-collapse:collapse;margin:.5em 0 1.5em}td,th{border:1px solid #ccc;padding:3px 8px;\
text-align:left;vertical-align:top}th{background:#f3f3f3}code,pre{font:12px/1.4 ui-monospace,monospace}\
pre{background:#f7f7f7;padding:8px;overflow:auto;max-height:40em}.succeeded{color:#176f2c}\
.failed{color:#b00020}.running{color:#0b5cad}.queued{color:#777}.stale{color:#b00020;font-weight:bold}\
form label{margin-right:1em}";

/// Reloads the page every 2 s while the box is ticked (remembered in `localStorage`).
const REFRESH: &str = "<label><input type=checkbox id=auto> auto-refresh</label><script>\
(function(){var b=document.getElementById('auto');b.checked=localStorage.getItem('fe-auto')==='1';\
b.onchange=function(){localStorage.setItem('fe-auto',b.checked?'1':'0');if(b.checked)location.reload()};\
setInterval(function(){if(b.checked)location.reload()},2000)})();</script>";

/// HTML-escapes text for element content and quoted attribute values.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

pub(crate) fn page(title: &str, body: &str) -> Reply {
    let html = format!(
        "<!doctype html><html lang=en><head><meta charset=utf-8><title>{}</title>\
         <style>{STYLE}</style></head><body>{body}</body></html>",
        escape(title)
    );
    Reply::typed(200, "text/html; charset=utf-8", html)
}

fn when(millis: Option<u64>) -> String {
    millis.map_or_else(String::new, utc_millis)
}

fn ms(value: &Value) -> String {
    value
        .as_u64()
        .map_or_else(String::new, |n| format!("{n} ms"))
}

/// `GET /_emulate`.
pub fn overview(state: &State, req: Req) -> Result<Reply, Error> {
    super::emulate_access(state, &req)?;
    let (filter, before, limit) = observe::listing_params(&req)?;
    let runtimes = state.table.runtimes();
    let jobs = state.table.list(&filter, before, limit);
    let mut body = String::from("<h1>foundry-emulator</h1>");
    body.push_str(REFRESH);
    runtimes_section(&mut body, &runtimes, state.poll_wait.as_millis() as u64);
    bindings_section(&mut body, &runtimes);
    filter_form(&mut body, &req);
    jobs_section(&mut body, &jobs.jobs);
    if let Some(next) = jobs.next_before {
        let mut query: Vec<String> = req
            .query
            .iter()
            .filter(|(name, _)| name != "before")
            .map(|(name, value)| format!("{}={}", percent_encode(name), percent_encode(value)))
            .collect();
        query.push(format!("before={next}"));
        let _ = write!(
            body,
            "<p><a id=older href=\"/_emulate?{}\">older jobs</a></p>",
            escape(&query.join("&"))
        );
    }
    Ok(page("foundry-emulator", &body))
}

fn runtimes_section(body: &mut String, runtimes: &[RuntimeView], poll_wait_ms: u64) {
    let now = now_millis();
    body.push_str(
        "<h2>Runtimes</h2><table id=runtimes><tr><th>runtime</th><th>name</th><th>polling</th>\
         <th>last poll</th><th>queued</th><th>running</th><th>functions</th><th>resets</th></tr>",
    );
    for rt in runtimes {
        let polling = if is_stale(rt, now, poll_wait_ms) {
            "<span class=stale>not polling</span>".to_string()
        } else if rt.polls_held > 0 {
            format!("{} poll(s) held", rt.polls_held)
        } else if rt.connected {
            "connected".to_string()
        } else {
            "never polled".to_string()
        };
        let functions: Vec<String> = rt.schemas.iter().map(|(name, _)| escape(name)).collect();
        let _ = write!(
            body,
            "<tr><td><code>{}</code></td><td>{}</td><td>{polling}</td><td>{}</td><td>{}</td>\
             <td>{}</td><td>{}</td><td>{}</td></tr>",
            escape(&rt.id),
            escape(rt.display_name.as_deref().unwrap_or("")),
            when(rt.last_poll_at),
            rt.queued,
            rt.running,
            functions.join(", "),
            rt.resets
        );
    }
    body.push_str("</table>");
}

fn bindings_section(body: &mut String, runtimes: &[RuntimeView]) {
    body.push_str(
        "<h2>Deployed apps</h2><table id=bindings><tr><th>deployed app</th><th>branch</th>\
         <th>runtime</th><th>active</th></tr>",
    );
    for rt in runtimes {
        for b in &rt.bindings {
            let _ = write!(
                body,
                "<tr><td><code>{}</code></td><td>{}</td><td><code>{}</code></td><td>{}</td></tr>",
                escape(&b.deployed_app_rid),
                escape(&b.branch),
                escape(&rt.id),
                if b.active { "yes" } else { "no" }
            );
        }
    }
    body.push_str("</table>");
}

fn filter_form(body: &mut String, req: &Req) {
    let value = |name: &str| escape(req.param(name).unwrap_or(""));
    body.push_str("<h2>Jobs</h2><form method=get action=\"/_emulate\">");
    for (name, label) in [
        ("runtime", "runtime"),
        ("app", "deployed app"),
        ("branch", "branch"),
        ("query_type", "query type"),
    ] {
        let _ = write!(
            body,
            "<label>{label} <input name={name} value=\"{}\" size=18></label>",
            value(name)
        );
    }
    let select = |body: &mut String, name: &str, options: &[&str]| {
        let chosen = req.param(name).unwrap_or("");
        let _ = write!(
            body,
            "<label>{name} <select name={name}><option value=\"\">any</option>"
        );
        for option in options {
            let selected = if *option == chosen { " selected" } else { "" };
            let _ = write!(body, "<option{selected}>{option}</option>");
        }
        body.push_str("</select></label>");
    };
    select(
        body,
        "status",
        &["queued", "running", "succeeded", "failed"],
    );
    select(
        body,
        "source",
        &["contour-sync", "contour-async", "runtime-direct"],
    );
    body.push_str("<button>filter</button></form>");
}

fn jobs_section(body: &mut String, jobs: &[JobView]) {
    body.push_str(
        "<table id=jobs><tr><th>job</th><th>status</th><th>source</th><th>deployed app</th>\
         <th>branch</th><th>runtime</th><th>query type</th><th>submitted</th><th>queued</th>\
         <th>ran</th><th>query</th><th>result</th><th>failure</th></tr>",
    );
    for job in jobs {
        let summary = observe::job_summary(job);
        let id = job.id.to_string();
        let _ = write!(
            body,
            "<tr><td><a href=\"/_emulate/view/jobs/{}\"><code>{}</code></a></td>\
             <td class={state}>{state}</td><td>{}</td><td><code>{}</code></td><td>{}</td>\
             <td><code>{}</code></td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{} B</td>\
             <td>{}</td><td>{}</td></tr>",
            percent_encode(&id),
            escape(&id),
            job.source.as_str(),
            escape(job.deployed_app_rid().unwrap_or("")),
            escape(job.branch().unwrap_or("")),
            escape(job.runtime_id()),
            escape(job.query_type()),
            when(Some(job.submitted_at)),
            ms(&summary["queued_ms"]),
            ms(&summary["running_ms"]),
            job.query.len(),
            summary["result_bytes"]
                .as_u64()
                .map_or_else(String::new, |n| format!("{n} B")),
            escape(job.error_message().unwrap_or("")),
            state = job.state.as_str(),
        );
    }
    body.push_str("</table>");
}

/// `GET /_emulate/view/jobs/:id`.
pub fn job_page(state: &State, req: Req, job_id: &str) -> Result<Reply, Error> {
    super::emulate_access(state, &req)?;
    let job = state.table.job(&JobId::from_client(job_id))?;
    let id = job.id.to_string();
    let summary = observe::job_summary(&job);
    let mut body = format!(
        "<p><a href=\"/_emulate\">all jobs</a></p><h1>Job <code id=job-id>{}</code></h1>",
        escape(&id)
    );
    body.push_str("<table id=job>");
    let mut row = |name: &str, value: String| {
        let _ = write!(body, "<tr><th>{name}</th><td>{value}</td></tr>");
    };
    row(
        "status",
        format!("<span id=status class={0}>{0}</span>", job.state.as_str()),
    );
    row("source", job.source.as_str().to_string());
    row("deployed app", escape(job.deployed_app_rid().unwrap_or("")));
    row("branch", escape(job.branch().unwrap_or("")));
    row("runtime", escape(job.runtime_id()));
    row("query type", escape(job.query_type()));
    row("submitted", when(Some(job.submitted_at)));
    row("dispatched", when(job.dispatched_at()));
    row("finished", when(job.finished_at()));
    row("queued for", ms(&summary["queued_ms"]));
    row("ran for", ms(&summary["running_ms"]));
    row(
        "failure",
        format!(
            "<span id=failure>{}</span>",
            escape(job.error_message().unwrap_or(""))
        ),
    );
    body.push_str("</table>");

    let query = super::wire::masked_query(&job.query);
    let query_text = serde_json::to_string_pretty(&query).unwrap_or_default();
    let _ = write!(
        body,
        "<h2>Query ({} bytes)</h2>{}",
        job.query.len(),
        shown("query", query_text.as_bytes())
    );
    match &job.result {
        None => body.push_str("<h2>Result</h2><p id=result>none yet</p>"),
        Some(bytes) => {
            let size = job.result_preview_of().unwrap_or(bytes.len() as u64);
            let preview = if job.result_preview_of().is_some() {
                " (answered to its sync execute; only its start is kept)"
            } else {
                ""
            };
            let content_type = job.result_content_type().unwrap_or("no content type");
            let _ = write!(
                body,
                "<h2>Result ({size} bytes, {}){preview}</h2>{}",
                escape(content_type),
                shown("result", &render_result(bytes))
            );
        }
    }
    Ok(page(&format!("job {id}"), &body))
}

/// A result as text: pretty JSON when it parses, UTF-8 as is, else a hex dump.
fn render_result(bytes: &[u8]) -> Vec<u8> {
    if let Ok(value) = serde_json::from_slice::<Value>(bytes) {
        return serde_json::to_string_pretty(&value)
            .unwrap_or_default()
            .into_bytes();
    }
    if std::str::from_utf8(bytes).is_ok() {
        return bytes.to_vec();
    }
    let mut dump = String::new();
    for (n, line) in bytes.chunks(16).take(SHOW_MAX / 48 + 1).enumerate() {
        let _ = write!(dump, "{:08x} ", n * 16);
        for b in line {
            let _ = write!(dump, " {b:02x}");
        }
        dump.push('\n');
    }
    dump.into_bytes()
}

/// A `<pre>` of at most [`SHOW_MAX`] bytes of `text` (cut at a character boundary), saying
/// how much was cut.
fn shown(id: &str, text: &[u8]) -> String {
    let text = String::from_utf8_lossy(text);
    let mut end = text.len().min(SHOW_MAX);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    let cut = if end < text.len() {
        format!("<p>… {} more bytes not shown</p>", text.len() - end)
    } else {
        String::new()
    };
    format!("<pre id={id}>{}</pre>{cut}", escape(&text[..end]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escape_covers_every_markup_character() {
        assert_eq!(
            escape(r#"<script>alert('x' & "y")</script>"#),
            "&lt;script&gt;alert(&#39;x&#39; &amp; &quot;y&quot;)&lt;/script&gt;"
        );
    }

    #[test]
    fn binary_results_are_hex_dumped() {
        let dump = String::from_utf8(render_result(&[0, 0xff, 0x10])).unwrap();
        assert_eq!(dump, "00000000  00 ff 10\n");
    }

    #[test]
    fn long_text_is_cut_with_its_size() {
        let text = "é".repeat(SHOW_MAX);
        let html = shown("q", text.as_bytes());
        assert!(html.ends_with(&format!("<p>… {} more bytes not shown</p>", SHOW_MAX)));
    }
}
