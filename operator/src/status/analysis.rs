//! The canary's analysis, from the pods' own `/metrics`: no Prometheus, no mesh. kea's
//! service exports, per route, its answers by status (`kea_service_http_requests_total`) and a
//! latency histogram (`kea_service_http_request_duration_seconds`); the operator reads them
//! from the canary pod and the stable pods at each check and compares what each group answered
//! since the check before.
//!
//! The probe and metrics routes are left out: the kubelet's probes and the operator's own
//! reads are not the callers' traffic.

use std::collections::BTreeMap;

use kea_contract::paths;

use std::time::Duration;

use crate::api::{CanaryAnalysis, CanaryStatus, TrafficSample};

const REQUESTS: &str = "kea_service_http_requests_total";
const LATENCY_BUCKET: &str = "kea_service_http_request_duration_seconds_bucket";

/// What one pod's `/metrics` say, summed over the routes that serve callers. Counters only
/// grow while the pod runs; a restarted container starts them again from zero.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Counters {
    /// Answers given.
    pub requests: u64,
    /// Answers with a status of 500 or above.
    pub errors: u64,
    /// The latency histogram: answers at or below each bound (in seconds), cumulative, by
    /// bound (in nanoseconds, to order them); `u64::MAX` is `+Inf`.
    pub buckets: BTreeMap<u64, u64>,
}

/// Reads kea's request series from a `/metrics` text. `None` when it has none: an image
/// without kea's metrics.
pub fn parse(text: &str) -> Option<Counters> {
    let mut counters = Counters::default();
    let mut found = false;
    for line in text.lines() {
        let Some((name, labels, value)) = series(line) else {
            continue;
        };
        let counted = match name {
            REQUESTS | LATENCY_BUCKET => labels
                .get("route")
                .is_some_and(|route| !is_operations_route(route)),
            _ => continue,
        };
        found = true;
        if !counted {
            continue;
        }
        // Counters are integers; a float text of one still reads.
        let value = value as u64;
        if name == REQUESTS {
            counters.requests += value;
            let status: u16 = labels
                .get("status")
                .and_then(|s| s.parse().ok())
                .unwrap_or(0);
            if status >= 500 {
                counters.errors += value;
            }
        } else if let Some(bound) = labels.get("le").and_then(|le| bucket_bound(le)) {
            *counters.buckets.entry(bound).or_default() += value;
        }
    }
    found.then_some(counters)
}

/// The routes of the kubelet's probes and of the metrics themselves.
fn is_operations_route(route: &str) -> bool {
    [paths::HEALTHZ, paths::READYZ, paths::METRICS].contains(&route)
}

/// A bucket bound (`le`), in nanoseconds; `+Inf` is `u64::MAX`.
fn bucket_bound(le: &str) -> Option<u64> {
    if le == "+Inf" {
        return Some(u64::MAX);
    }
    let seconds: f64 = le.parse().ok()?;
    (seconds.is_finite() && seconds >= 0.0).then(|| (seconds * 1e9).round() as u64)
}

/// One sample line: `name{label="value",...} number`, comments and malformed lines left out.
fn series(line: &str) -> Option<(&str, BTreeMap<String, String>, f64)> {
    if line.starts_with('#') {
        return None;
    }
    let (head, rest) = match line.find('{') {
        Some(open) => {
            let close = open + line[open..].rfind('}')?;
            (
                (&line[..open], Some(&line[open + 1..close])),
                &line[close + 1..],
            )
        }
        None => {
            let space = line.find(' ')?;
            ((&line[..space], None), &line[space..])
        }
    };
    let value: f64 = rest.split_whitespace().next()?.parse().ok()?;
    let labels = head.1.map(labels).unwrap_or_default();
    Some((head.0, labels, value))
}

/// `a="1",b="x\"y"` as a map, with the text format's escapes undone.
fn labels(text: &str) -> BTreeMap<String, String> {
    let mut labels = BTreeMap::new();
    let mut chars = text.chars().peekable();
    loop {
        let name: String = chars.by_ref().take_while(|c| *c != '=').collect();
        let name = name.trim().trim_start_matches(',').trim().to_owned();
        if name.is_empty() || chars.next() != Some('"') {
            return labels;
        }
        let mut value = String::new();
        while let Some(c) = chars.next() {
            match c {
                '\\' => match chars.next() {
                    Some('n') => value.push('\n'),
                    Some(other) => value.push(other),
                    None => break,
                },
                '"' => break,
                other => value.push(other),
            }
        }
        labels.insert(name, value);
    }
}

impl Counters {
    /// What was answered since `before` (the same pod's previous read); all of it when the
    /// counters went back (the container restarted).
    pub fn since(&self, before: Option<&Counters>) -> Counters {
        let Some(before) = before.filter(|b| b.requests <= self.requests) else {
            return self.clone();
        };
        Counters {
            requests: self.requests - before.requests,
            errors: self.errors.saturating_sub(before.errors),
            buckets: self
                .buckets
                .iter()
                .map(|(bound, count)| {
                    let earlier = before.buckets.get(bound).copied().unwrap_or(0);
                    (*bound, count.saturating_sub(earlier))
                })
                .collect(),
        }
    }

    /// Adds another pod's counts.
    pub fn add(&mut self, other: &Counters) {
        self.requests += other.requests;
        self.errors += other.errors;
        for (bound, count) in &other.buckets {
            *self.buckets.entry(*bound).or_default() += count;
        }
    }

    /// The answers as the status shows them.
    pub fn sample(&self) -> TrafficSample {
        let success_percent = if self.requests == 0 {
            100.0
        } else {
            100.0 * (self.requests - self.errors.min(self.requests)) as f64 / self.requests as f64
        };
        TrafficSample {
            requests: self.requests,
            success_percent: round2(success_percent),
            p99_milliseconds: round2(self.quantile(0.99) * 1e3),
        }
    }

    /// The `q` quantile of the latency, in seconds, interpolated in its bucket as Prometheus'
    /// `histogram_quantile` does; 0 without answers.
    fn quantile(&self, q: f64) -> f64 {
        let total = self
            .buckets
            .get(&u64::MAX)
            .copied()
            .unwrap_or_else(|| self.buckets.values().copied().max().unwrap_or(0));
        if total == 0 {
            return 0.0;
        }
        let rank = q * total as f64;
        let mut lower = (0_u64, 0_u64);
        for (&bound, &count) in &self.buckets {
            if count as f64 >= rank {
                if bound == u64::MAX {
                    return lower.0 as f64 / 1e9;
                }
                let in_bucket = (count - lower.1) as f64;
                let fraction = if in_bucket > 0.0 {
                    (rank - lower.1 as f64) / in_bucket
                } else {
                    1.0
                };
                return (lower.0 as f64 + fraction * (bound - lower.0) as f64) / 1e9;
            }
            lower = (bound, count);
        }
        lower.0 as f64 / 1e9
    }
}

fn round2(value: f64) -> f64 {
    (value * 100.0).round() / 100.0
}

/// The verdict of one check.
#[derive(Clone, Debug, PartialEq)]
pub enum Check {
    /// The canary answered as well as the stable pods.
    Passed(String),
    /// It answered worse: why, with the numbers.
    Failed(String),
    /// Too few answers to compare (or no metrics): readiness alone speaks.
    Inconclusive(String),
}

/// Compares what the canary and the stable pods answered in the same time.
pub fn check(policy: &CanaryAnalysis, canary: &TrafficSample, stable: &TrafficSample) -> Check {
    let numbers = format!(
        "canary {} answers, {}% ok, p99 {} ms; stable {} answers, {}% ok, p99 {} ms",
        canary.requests,
        canary.success_percent,
        canary.p99_milliseconds,
        stable.requests,
        stable.success_percent,
        stable.p99_milliseconds,
    );
    if canary.requests < u64::try_from(policy.min_requests).unwrap_or(0) {
        return Check::Inconclusive(format!(
            "{numbers}: fewer than {} answers from the canary, readiness alone counts",
            policy.min_requests
        ));
    }
    let stable_percent = if stable.requests == 0 {
        100.0
    } else {
        stable.success_percent
    };
    let allowed_drop = f64::from(policy.max_success_drop_percent);
    if canary.success_percent + allowed_drop < stable_percent {
        return Check::Failed(format!(
            "{numbers}: success more than {allowed_drop} points below the stable pods'"
        ));
    }
    let floor = f64::from(policy.latency_floor_milliseconds);
    let factor = f64::from(policy.max_latency_factor);
    if canary.p99_milliseconds > floor
        && stable.requests > 0
        && canary.p99_milliseconds > factor * stable.p99_milliseconds
    {
        return Check::Failed(format!(
            "{numbers}: p99 more than {factor} times the stable pods' and above {floor} ms"
        ));
    }
    Check::Passed(numbers)
}

/// What the analysis of a canary decided in one reconcile.
#[derive(Clone, Debug, PartialEq)]
pub enum Verdict {
    /// Still under analysis; the next check is due after `next_check` (none while the canary
    /// is not ready: its Deployment's status brings the reconcile back).
    Analysing {
        status: CanaryStatus,
        next_check: Option<Duration>,
    },
    /// Enough passed checks in a row: the canary's revision replaces the stable one.
    Promote(CanaryStatus),
    /// Too many failed checks: the canary is removed and its revision rolled back.
    Revert(CanaryStatus),
}

impl Verdict {
    /// The canary's status as this verdict leaves it.
    pub fn status(&self) -> &CanaryStatus {
        match self {
            Self::Analysing { status, .. } | Self::Promote(status) | Self::Revert(status) => status,
        }
    }
}

/// Counts a check into `status` (passed checks in a row, failed checks in all) and decides.
pub fn tally(
    policy: &CanaryAnalysis,
    mut status: CanaryStatus,
    check: Check,
    interval: Duration,
) -> Verdict {
    match check {
        Check::Failed(message) => {
            status.failed_checks += 1;
            status.passed_checks = 0;
            status.message = format!("check failed: {message}");
        }
        Check::Passed(message) | Check::Inconclusive(message) => {
            status.passed_checks += 1;
            status.message = format!("check passed: {message}");
        }
    }
    if status.failed_checks >= policy.failed_checks_to_revert {
        Verdict::Revert(status)
    } else if status.passed_checks >= policy.checks_to_promote {
        Verdict::Promote(status)
    } else {
        Verdict::Analysing {
            status,
            next_check: Some(interval),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The text kea's service renders for `/` answered `ok` times 200 and `errors` times
    /// 500, all within 2 ms, plus probe traffic.
    fn metrics(ok: u64, errors: u64) -> String {
        let total = ok + errors;
        format!(
            "# HELP kea_service_http_requests HTTP requests served, by method, route and status\n\
             # TYPE kea_service_http_requests counter\n\
             kea_service_http_requests_total{{method=\"GET\",route=\"/\",status=\"200\"}} {ok}\n\
             kea_service_http_requests_total{{method=\"GET\",route=\"/\",status=\"500\"}} {errors}\n\
             kea_service_http_requests_total{{method=\"GET\",route=\"/readyz\",status=\"503\"}} 7\n\
             # TYPE kea_service_http_request_duration_seconds histogram\n\
             kea_service_http_request_duration_seconds_bucket{{le=\"0.001\",method=\"GET\",route=\"/\"}} 0\n\
             kea_service_http_request_duration_seconds_bucket{{le=\"0.002\",method=\"GET\",route=\"/\"}} {total}\n\
             kea_service_http_request_duration_seconds_bucket{{le=\"+Inf\",method=\"GET\",route=\"/\"}} {total}\n\
             kea_service_http_request_duration_seconds_bucket{{le=\"+Inf\",method=\"GET\",route=\"/readyz\"}} 7\n\
             kea_service_http_requests_in_flight 1\n\
             # EOF\n"
        )
    }

    #[test]
    fn reads_callers_answers_and_leaves_probes_out() {
        let counters = parse(&metrics(90, 10)).expect("kea metrics");
        assert_eq!((counters.requests, counters.errors), (100, 10));
        assert_eq!(counters.buckets.get(&u64::MAX), Some(&100));
        let sample = counters.sample();
        assert_eq!(sample.success_percent, 90.0);
        // All between 1 and 2 ms: the 99th of 100 lies at 99% of the bucket.
        assert_eq!(sample.p99_milliseconds, 1.99);
        assert_eq!(parse("# EOF\nother_metric 1\n"), None);
        assert_eq!(parse("garbage {{{ \u{0} \n}"), None);
    }

    #[test]
    fn counts_since_the_last_read_and_survives_a_restart() {
        let before = parse(&metrics(100, 0)).expect("kea metrics");
        let after = parse(&metrics(150, 50)).expect("kea metrics");
        let window = after.since(Some(&before));
        assert_eq!((window.requests, window.errors), (100, 50));
        assert_eq!(window.sample().success_percent, 50.0);
        let restarted = parse(&metrics(5, 0)).expect("kea metrics");
        assert_eq!(restarted.since(Some(&after)).requests, 5);
    }

    #[test]
    fn passed_checks_in_a_row_promote_and_failed_ones_revert() {
        let policy = CanaryAnalysis::default();
        let interval = Duration::from_secs(10);
        let passed = || Check::Passed("ok".into());
        let failed = || Check::Failed("bad".into());
        let mut status = CanaryStatus::default();
        for _ in 0..2 {
            match tally(&policy, status.clone(), passed(), interval) {
                Verdict::Analysing { status: next, .. } => status = next,
                other => panic!("decided too early: {other:?}"),
            }
        }
        // A failed check starts the passes again; a second one reverts.
        let Verdict::Analysing { status, .. } = tally(&policy, status, failed(), interval) else {
            panic!("one failed check reverted");
        };
        assert_eq!((status.passed_checks, status.failed_checks), (0, 1));
        assert!(matches!(
            tally(&policy, status.clone(), failed(), interval),
            Verdict::Revert(s) if s.failed_checks == 2 && s.message == "check failed: bad"
        ));
        let mut status = status;
        for _ in 0..2 {
            let Verdict::Analysing { status: next, .. } =
                tally(&policy, status, Check::Inconclusive("few".into()), interval)
            else {
                panic!("decided too early");
            };
            status = next;
        }
        assert!(matches!(
            tally(&policy, status, passed(), interval),
            Verdict::Promote(s) if s.passed_checks == 3
        ));
    }

    #[test]
    fn a_canary_answering_errors_or_slowly_fails_and_too_few_answers_tell_nothing() {
        let policy = CanaryAnalysis::default();
        let sample = |requests, success_percent, p99_milliseconds| TrafficSample {
            requests,
            success_percent,
            p99_milliseconds,
        };
        let stable = sample(400, 100.0, 20.0);
        assert!(matches!(
            check(&policy, &sample(200, 50.0, 10.0), &stable),
            Check::Failed(m) if m.contains("success more than 5 points below")
        ));
        assert!(matches!(
            check(&policy, &sample(200, 96.0, 20.0), &stable),
            Check::Passed(_)
        ));
        assert!(matches!(
            check(&policy, &sample(200, 100.0, 500.0), &stable),
            Check::Failed(m) if m.contains("p99 more than 3 times")
        ));
        // Slow, but below the floor: a fast service's noise is not a failure.
        assert!(matches!(
            check(&policy, &sample(200, 100.0, 90.0), &stable),
            Check::Passed(_)
        ));
        assert!(matches!(
            check(&policy, &sample(19, 0.0, 900.0), &stable),
            Check::Inconclusive(_)
        ));
    }
}
