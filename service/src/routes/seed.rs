//! The seed demo's routes, with the seed's contract: plain-text answers to
//! `GET /` and `GET /oscheck`.

use std::sync::atomic::{AtomicU64, Ordering};

use axum::extract::State;
use axum::http::StatusCode;

use super::AppState;

/// The seed's greeting.
pub const GREETING: &str = "Hello KEA!";

/// Start point: the greeting.
#[utoipa::path(get, path = "/", tag = "seed",
    responses((status = 200, description = "The greeting", body = String, example = "Hello KEA!"),
        (status = 500, description = "A fault on purpose (`KEA_FAULT_ERROR_PERCENT`)")))]
pub async fn hello(
    State(state): State<AppState>,
) -> Result<&'static str, (StatusCode, &'static str)> {
    if state.root_faults.next_fails() {
        return Err((StatusCode::INTERNAL_SERVER_ERROR, "fault on purpose\n"));
    }
    Ok(GREETING)
}

/// The share of `GET /` answered 500 on purpose: request n (from 0) fails when
/// `floor((n + 1) p / 100)` passes `floor(n p / 100)`, so failures are spread evenly (every
/// other request at 50).
#[derive(Debug, Default)]
pub struct RootFaults {
    percent: u64,
    requests: AtomicU64,
}

impl RootFaults {
    /// `percent` of the requests fail (capped at 100).
    pub fn new(percent: u8) -> Self {
        Self {
            percent: u64::from(percent.min(100)),
            requests: AtomicU64::new(0),
        }
    }

    /// Whether the next request fails.
    pub fn next_fails(&self) -> bool {
        if self.percent == 0 {
            return false;
        }
        let n = self.requests.fetch_add(1, Ordering::Relaxed);
        (n + 1) * self.percent / 100 > n * self.percent / 100
    }
}

/// The operating system the service runs on, named as Python's `platform.system()` does.
#[utoipa::path(get, path = "/oscheck", tag = "seed",
    responses((status = 200, description = "The operating system", body = String,
        example = "Your operation system is: Linux")))]
pub async fn oscheck() -> String {
    format!(
        "Your operation system is: {}",
        os_name(std::env::consts::OS)
    )
}

fn os_name(os: &str) -> &str {
    match os {
        "linux" => "Linux",
        "macos" => "Darwin",
        "windows" => "Windows",
        "freebsd" => "FreeBSD",
        other => other,
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn faults_on_purpose_are_spread_evenly() {
        for (percent, expected) in [(0, 0), (50, 50), (10, 10), (100, 100), (33, 33)] {
            let faults = super::RootFaults::new(percent);
            let failed = (0..100).filter(|_| faults.next_fails()).count();
            assert_eq!(failed, expected, "{percent}%");
        }
        let half = super::RootFaults::new(50);
        let pattern: Vec<bool> = (0..4).map(|_| half.next_fails()).collect();
        assert_eq!(pattern, [false, true, false, true]);
    }
}
