//! "Let it fail": the other services this one calls, each reached with a
//! timeout, bounded retries and a circuit breaker, and reported on without
//! ever failing the caller.
//!
//! Dependencies come from the environment: every `<NAME>_URL` variable whose
//! value is an `http://` or `https://` URL (the operator injects one per
//! `dependsOn` entry) is the dependency `<name>`.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::Serialize;
use utoipa::ToSchema;

/// Attempts per call: one try and up to two retries.
const MAX_ATTEMPTS: u32 = 3;
/// Pause before a retry, doubled each time.
const RETRY_BACKOFF: Duration = Duration::from_millis(50);
/// Consecutive failed calls that open the circuit.
const FAILURES_TO_OPEN: u32 = 3;
/// Longest answer body kept in a report.
const MAX_ANSWER_CHARS: usize = 200;

/// One dependency: its name and base URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DependencyTarget {
    /// Lower-case name, `-` for `_` (`USER_PROFILES_URL` → `user-profiles`).
    pub name: String,
    /// Base URL without trailing slash.
    pub url: String,
}

/// Finds the dependencies in a set of environment variables.
pub fn targets_from_env(vars: impl IntoIterator<Item = (String, String)>) -> Vec<DependencyTarget> {
    let mut targets: Vec<DependencyTarget> = vars
        .into_iter()
        .filter_map(|(key, value)| {
            let name = kea_contract::env::dependency_of(&key)?;
            // Only HTTP URLs: the stores' `DATABASE_URL` and `REDIS_URL` have the same shape.
            let is_http = value.starts_with("http://") || value.starts_with("https://");
            is_http.then(|| DependencyTarget {
                name,
                url: value.trim_end_matches('/').to_owned(),
            })
        })
        .collect();
    targets.sort_by(|a, b| a.name.cmp(&b.name));
    targets
}

/// The state of a circuit breaker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Circuit {
    /// Calls go through.
    Closed,
    /// Calls are rejected at once, without touching the network.
    Open,
    /// The open period is over: the next call is a trial.
    HalfOpen,
}

#[derive(Debug)]
struct Breaker {
    consecutive_failures: u32,
    open_until: Option<Instant>,
    /// How long an open circuit rejects calls before letting one through to test.
    open_for: Duration,
}

impl Breaker {
    fn circuit(&self, now: Instant) -> Circuit {
        match self.open_until {
            Some(until) if now < until => Circuit::Open,
            Some(_) => Circuit::HalfOpen,
            None => Circuit::Closed,
        }
    }

    fn record(&mut self, success: bool, now: Instant) {
        if success {
            self.consecutive_failures = 0;
            self.open_until = None;
        } else {
            self.consecutive_failures += 1;
            // A failed trial call re-opens the circuit at once.
            if self.consecutive_failures >= FAILURES_TO_OPEN || self.open_until.is_some() {
                self.open_until = Some(now + self.open_for);
            }
        }
    }
}

/// What one call to a dependency found.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct DependencyReport {
    /// The dependency's name.
    pub name: String,
    /// The URL called.
    pub url: String,
    /// Whether it answered with a 2xx status.
    pub up: bool,
    /// The circuit breaker's state after the call.
    pub circuit: Circuit,
    /// Calls made (0 when the open circuit rejected the call).
    pub attempts: u32,
    /// The HTTP status of the last answer, if any.
    pub status: Option<u16>,
    /// The start of the answer's body, if any.
    pub answer: Option<String>,
    /// Why the call failed, if it did.
    pub error: Option<String>,
    /// Time spent, in milliseconds.
    pub elapsed_ms: u64,
}

/// One dependency with its circuit breaker.
#[derive(Debug)]
pub struct Dependency {
    target: DependencyTarget,
    breaker: Mutex<Breaker>,
}

/// Every dependency of the service and the HTTP client that calls them.
/// A reqwest client builder, with the process's TLS crypto provider set up first: a build
/// with reqwest's TLS (the operator's S3 client brings it in) panics on a client built before
/// one is set. Every HTTP client of the service and its tests starts here.
pub fn http_client_builder() -> reqwest::ClientBuilder {
    // An error only says a provider is set already.
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
}

#[derive(Debug)]
pub struct Dependencies {
    client: reqwest::Client,
    dependencies: Vec<Dependency>,
}

impl Dependencies {
    /// Prepares the calls; `timeout` bounds each attempt, and a circuit that opens stays
    /// open for `open_for`.
    pub fn new(targets: Vec<DependencyTarget>, timeout: Duration, open_for: Duration) -> Self {
        let client = http_client_builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            .build()
            .unwrap_or_default();
        let dependencies = targets
            .into_iter()
            .map(|target| Dependency {
                target,
                breaker: Mutex::new(Breaker {
                    consecutive_failures: 0,
                    open_until: None,
                    open_for,
                }),
            })
            .collect();
        Self {
            client,
            dependencies,
        }
    }

    /// Calls every dependency's root route at once and reports on each.
    pub async fn check_all(&self) -> Vec<DependencyReport> {
        futures::future::join_all(self.dependencies.iter().map(|d| self.call(d))).await
    }

    async fn call(&self, dependency: &Dependency) -> DependencyReport {
        let start = Instant::now();
        let target = &dependency.target;
        let mut report = DependencyReport {
            name: target.name.clone(),
            url: format!("{}/", target.url),
            up: false,
            circuit: Circuit::Closed,
            attempts: 0,
            status: None,
            answer: None,
            error: None,
            elapsed_ms: 0,
        };
        if self.lock(dependency).circuit(Instant::now()) == Circuit::Open {
            report.circuit = Circuit::Open;
            report.error = Some("circuit open after repeated failures; not called".into());
            return report;
        }
        let mut backoff = RETRY_BACKOFF;
        while report.attempts < MAX_ATTEMPTS {
            report.attempts += 1;
            match self.client.get(&report.url).send().await {
                Ok(response) => {
                    let status = response.status();
                    report.status = Some(status.as_u16());
                    let body = response.text().await.unwrap_or_default();
                    report.answer = Some(body.chars().take(MAX_ANSWER_CHARS).collect());
                    report.up = status.is_success();
                    report.error = (!report.up).then(|| format!("answered {status}"));
                    // A 4xx answer will not change on retry; a 5xx might.
                    if report.up || status.is_client_error() {
                        break;
                    }
                }
                Err(error) => report.error = Some(error_chain(&error)),
            }
            if report.attempts < MAX_ATTEMPTS {
                tokio::time::sleep(backoff).await;
                backoff *= 2;
            }
        }
        let mut breaker = self.lock(dependency);
        breaker.record(report.up, Instant::now());
        report.circuit = breaker.circuit(Instant::now());
        report.elapsed_ms = u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX);
        report
    }

    fn lock<'a>(&self, dependency: &'a Dependency) -> std::sync::MutexGuard<'a, Breaker> {
        // The breaker holds plain counters: a poisoned lock still has usable data.
        dependency
            .breaker
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// The error and its causes on one line ("error sending request: connection refused").
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn only_http_url_variables_are_dependencies() {
        let targets = targets_from_env(vars(&[
            ("USER_PROFILES_URL", "http://user-profiles.shop.svc:8080/"),
            ("ORDERS_URL", "https://orders"),
            ("REDIS_URL", "redis://localhost:6379"),
            ("DATABASE_URL", "mysql://root@localhost/kea"),
            ("_URL", "http://nameless"),
            ("HOME", "/root"),
        ]));
        assert_eq!(
            targets,
            vec![
                DependencyTarget {
                    name: "orders".into(),
                    url: "https://orders".into()
                },
                DependencyTarget {
                    name: "user-profiles".into(),
                    url: "http://user-profiles.shop.svc:8080".into()
                },
            ]
        );
    }

    const OPEN_FOR: Duration = Duration::from_secs(5);

    #[test]
    fn breaker_opens_after_repeated_failures_and_closes_on_success() {
        let now = Instant::now();
        let mut breaker = Breaker {
            consecutive_failures: 0,
            open_until: None,
            open_for: OPEN_FOR,
        };
        for _ in 0..FAILURES_TO_OPEN - 1 {
            breaker.record(false, now);
            assert_eq!(breaker.circuit(now), Circuit::Closed);
        }
        breaker.record(false, now);
        assert_eq!(breaker.circuit(now), Circuit::Open);
        let later = now + OPEN_FOR;
        assert_eq!(breaker.circuit(later), Circuit::HalfOpen);
        // A failed trial re-opens at once.
        breaker.record(false, later);
        assert_eq!(breaker.circuit(later), Circuit::Open);
        breaker.record(true, later + OPEN_FOR);
        assert_eq!(breaker.circuit(later + OPEN_FOR), Circuit::Closed);
    }
}
