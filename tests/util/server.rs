//! `TestServer`: an emulator running in the test process on 127.0.0.1:0.

use std::net::SocketAddr;

use foundry_emulator::{Config, JobId, JobState, JobView, Running, Seed};

use super::*;

/// An emulator running in the test process. Dropping it shuts the server down and joins it.
pub struct TestServer {
    running: Option<Running>,
    /// The bearer the harness sends when it creates sessions: strict mode needs one (the
    /// first configured token), permissive mode accepts any.
    harness_bearer: String,
    pub base_url: String,
    pub addr: SocketAddr,
}

impl TestServer {
    /// Starts an emulator on 127.0.0.1:0 with short test defaults (execute timeout 5 s,
    /// poll wait 2 s), after `configure` had its say.
    pub fn start(configure: impl FnOnce(&mut Config)) -> TestServer {
        let mut config = Config {
            host: "127.0.0.1".to_string(),
            port: 0,
            execute_timeout: Duration::from_secs(5),
            poll_wait: Duration::from_secs(2),
            ..Config::default()
        };
        configure(&mut config);
        let harness_bearer = format!(
            "Bearer {}",
            config.tokens.first().map_or(APP_TOKEN, String::as_str)
        );
        let running = foundry_emulator::Emulator::start(config).expect("emulator starts");
        TestServer {
            harness_bearer,
            base_url: running.base_url().to_string(),
            addr: running.addr(),
            running: Some(running),
        }
    }

    /// Starts with `fixtures/seed-basic.json`.
    pub fn seeded(configure: impl FnOnce(&mut Config)) -> TestServer {
        let seed = Seed::load(&fixture("seed-basic.json")).expect("seed-basic.json loads");
        TestServer::start(|cfg| {
            cfg.seed = seed;
            configure(cfg);
        })
    }

    pub fn running(&self) -> &Running {
        self.running.as_ref().expect("server is running")
    }

    /// Stops the server now (joins every thread).
    pub fn shutdown(&mut self) {
        if let Some(running) = self.running.take() {
            running.shutdown();
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base_url)
    }

    pub fn contour_url(&self, path: &str) -> String {
        format!("{}{CONTOUR}{path}", self.base_url)
    }

    pub fn execute_url(&self) -> String {
        self.contour_url("/compute-modules/jobs/execute")
    }

    pub fn submit_url(&self) -> String {
        self.contour_url("/deployed-apps/jobs")
    }

    pub fn status_url(&self, job_id: &str) -> String {
        self.contour_url(&format!("/jobs/{job_id}/status"))
    }

    pub fn result_url(&self) -> String {
        self.contour_url("/jobs/result/v2")
    }

    pub fn runtimes_url(&self) -> String {
        format!("{}{RUNTIMES}", self.base_url)
    }

    /// The application: Contour calls with `Authorization: Bearer test-token`.
    pub fn app(&self) -> App {
        self.app_with_token(APP_TOKEN)
    }

    pub fn app_with_token(&self, token: &str) -> App {
        App {
            agent: agent(),
            authorization: Some(format!("Bearer {token}")),
            server: self.urls(),
        }
    }

    fn urls(&self) -> Urls {
        Urls {
            contour: self.contour_url(""),
            execute: self.execute_url(),
            submit: self.submit_url(),
            status_prefix: self.contour_url("/jobs/"),
            result: self.result_url(),
        }
    }

    /// Creates (or resets) runtime `id` over HTTP, with no binding.
    pub fn runtime(&self, id: &str) -> Rt {
        self.create_runtime(json!({"runtimeId": id}))
    }

    /// Creates (or resets) runtime `id` bound to `rid` on branch master.
    pub fn runtime_bound(&self, id: &str, rid: &str) -> Rt {
        self.create_runtime(json!({"runtimeId": id, "deployedAppRid": rid}))
    }

    /// `POST /runtimes` with this body; must answer 200.
    pub fn create_runtime(&self, body: Value) -> Rt {
        let resp = self.create_runtime_raw(&body);
        resp.expect_status(200);
        let session = resp.json();
        Rt::from_session(self, session)
    }

    /// The id of the user a bearer token acts for (`GET /multipass/api/me`): what job
    /// envelopes carry as `userId`.
    pub fn user_id(&self, token: &str) -> String {
        let me = send(
            &agent(),
            "GET",
            &self.url("/multipass/api/me"),
            &[("Authorization", &format!("Bearer {token}"))],
            None,
        );
        me.expect_status(200);
        me.json()["id"].as_str().expect("an id").to_string()
    }

    pub fn create_runtime_raw(&self, body: &Value) -> Resp {
        send(
            &agent(),
            "POST",
            &self.runtimes_url(),
            &[
                ("Content-Type", "application/json"),
                ("Authorization", &self.harness_bearer),
            ],
            Some(&serde_json::to_vec(body).unwrap()),
        )
    }

    /// A runtime created by the seed, with its fixed token; URIs built from the base URL.
    pub fn seeded_runtime(&self, id: &str, token: &str) -> Rt {
        let session = session_json(&self.base_url, id, token);
        Rt::from_session(self, session)
    }

    /// A snapshot of a job through the library API; panics if unknown.
    pub fn job(&self, id: &str) -> JobView {
        self.running()
            .job(&JobId::from_client(id))
            .unwrap_or_else(|| panic!("job {id} is unknown to the server"))
    }

    /// Waits until the job is in `state` (polling the job table).
    pub fn wait_state(&self, id: &str, state: JobState) {
        wait_for(&format!("job {id} to be {state:?}"), || {
            self.running()
                .job(&JobId::from_client(id))
                .is_some_and(|j| j.state == state)
        });
    }

    /// Queued job count of a runtime, from the library API.
    pub fn queued(&self, runtime_id: &str) -> usize {
        self.running()
            .runtimes()
            .into_iter()
            .find(|r| &*r.id == runtime_id)
            .map(|r| r.queued)
            .unwrap_or_else(|| panic!("runtime {runtime_id} unknown"))
    }

    /// A runtime's `last_poll_at` (epoch millis), from the library API.
    pub fn last_poll_at(&self, runtime_id: &str) -> Option<u64> {
        self.running()
            .runtimes()
            .into_iter()
            .find(|r| &*r.id == runtime_id)
            .and_then(|r| r.last_poll_at)
    }

    /// Gets a session past its first poll (which the emulator answers at once, for the
    /// TypeScript SDK) and waits until the clock has moved past that poll, so that a later
    /// poll shows as a newer `last_poll_at`. Returns the time to compare against.
    pub fn after_first_poll(&self, rt: &Rt) -> u64 {
        if !self.connected(&rt.id) {
            let resp = rt.poll();
            resp.expect_status(204);
        }
        let before = self.last_poll_at(&rt.id).expect("polled");
        wait_for("the clock to pass the last poll", || now_millis() > before);
        before
    }

    /// Waits until a poll later than `before` has reached the server.
    pub fn wait_new_poll(&self, runtime_id: &str, before: u64) {
        wait_for(&format!("runtime {runtime_id} to poll"), || {
            self.last_poll_at(runtime_id).is_some_and(|at| at > before)
        });
    }

    /// Whether a runtime has polled since its session began.
    pub fn connected(&self, runtime_id: &str) -> bool {
        self.running()
            .runtimes()
            .into_iter()
            .find(|r| &*r.id == runtime_id)
            .is_some_and(|r| r.connected)
    }

    /// `GET /_emulate/health` must answer 200 `{"status":"ok"}`: the server still serves.
    pub fn assert_alive(&self) {
        let resp = send(&agent(), "GET", &self.url("/_emulate/health"), &[], None);
        resp.expect_status(200);
        assert_json(&resp.json(), &json!({"status": "ok"}), "health");
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.shutdown();
    }
}
