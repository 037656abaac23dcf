//! Logs and Prometheus metrics.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::http::Method;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;
use crate::routes::paths;

/// Sets up the global logger; `RUST_LOG` overrides the default `info` level.
pub fn init_logging(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    let _ = match format {
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        LogFormat::Text => builder.try_init(),
    };
}

// Labels are `'static` strings so that counting a request allocates nothing.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    method: &'static str,
    route: &'static str,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    method: &'static str,
    route: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StoreLabels {
    store: &'static str,
    backend: &'static str,
}

/// The service's metrics, rendered at `/metrics` in the OpenMetrics text format.
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    latency: Family<RouteLabels, Histogram>,
    in_flight: Gauge,
    store_up: Family<StoreLabels, Gauge>,
    /// By route ([`paths::ALL`], then unmatched) and method ([`METHODS`]).
    series: [[OnceLock<RouteSeries>; METHODS.len()]; paths::ALL.len() + 1],
}

/// The method labels; methods the service does not serve are lumped together as `OTHER`.
const METHODS: [&str; 8] = [
    "GET", "POST", "HEAD", "PUT", "DELETE", "PATCH", "OPTIONS", "OTHER",
];

/// The series of one route and method, resolved on its first request, so that counting
/// the next ones takes no hash and no lock on the families: its latency histogram and the
/// request counters of the first statuses it answered (any further status is looked up).
struct RouteSeries {
    latency: Histogram,
    statuses: [OnceLock<(u16, Counter)>; 4],
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("kea_service");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "http_requests",
            "HTTP requests served, by method, route and status",
            requests.clone(),
        );
        let latency = Family::<RouteLabels, Histogram>::new_with_constructor(|| {
            // 100 µs to ~6.5 s.
            Histogram::new(exponential_buckets(0.0001, 2.0, 17))
        });
        registry.register(
            "http_request_duration_seconds",
            "Time to answer an HTTP request, by method and route",
            latency.clone(),
        );
        let in_flight = Gauge::default();
        registry.register(
            "http_requests_in_flight",
            "HTTP requests being answered",
            in_flight.clone(),
        );
        let store_up = Family::<StoreLabels, Gauge>::default();
        registry.register(
            "store_up",
            "1 when the store answered its last check or request, 0 when it failed",
            store_up.clone(),
        );
        Self {
            registry,
            requests,
            latency,
            in_flight,
            store_up,
            series: std::array::from_fn(|_| std::array::from_fn(|_| OnceLock::new())),
        }
    }
}

impl Metrics {
    /// The metrics in the OpenMetrics text format.
    pub fn render(&self) -> String {
        let mut text = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry);
        text
    }

    /// Records whether a store (`relational`, `nosql`) answered.
    pub fn store_up(&self, store: &'static str, backend: &'static str, up: bool) {
        self.store_up
            .get_or_create(&StoreLabels { store, backend })
            .set(i64::from(up));
    }
}

/// The index in [`METHODS`] of a request's method.
fn method_index(method: &Method) -> usize {
    match *method {
        Method::GET => 0,
        Method::POST => 1,
        Method::HEAD => 2,
        Method::PUT => 3,
        Method::DELETE => 4,
        Method::PATCH => 5,
        Method::OPTIONS => 6,
        _ => 7,
    }
}

/// A request being counted: in the in-flight gauge until [`Tracked::finish`] (or until
/// dropped, when the client goes away half-way), then in the request counter and the
/// latency histogram of its route.
pub struct Tracked<'a> {
    metrics: &'a Metrics,
    series: &'a RouteSeries,
    labels: RouteLabels,
    start: Instant,
    _in_flight: InFlight<'a>,
}

impl Metrics {
    /// Starts counting a request to the route at `route` in [`paths::ALL`] (`None`: it
    /// matched none). The route label is the template (`/status/{code}`), never the raw
    /// path, so clients cannot blow up the number of series; `unmatched` for none.
    pub fn track(&self, method: &Method, route: Option<usize>) -> Tracked<'_> {
        let route = route.filter(|index| *index < paths::ALL.len());
        let method = method_index(method);
        let labels = RouteLabels {
            method: METHODS[method],
            route: route.map_or("unmatched", |index| paths::ALL[index]),
        };
        let series =
            self.series[route.unwrap_or(paths::ALL.len())][method].get_or_init(|| RouteSeries {
                latency: self.latency.get_or_create(&labels).clone(),
                statuses: Default::default(),
            });
        Tracked {
            metrics: self,
            series,
            labels,
            start: Instant::now(),
            _in_flight: InFlight::enter(&self.in_flight),
        }
    }
}

impl Tracked<'_> {
    /// Counts the answer.
    pub fn finish(self, status: u16) {
        self.series
            .latency
            .observe(self.start.elapsed().as_secs_f64());
        let resolve = || {
            let labels = RequestLabels {
                method: self.labels.method,
                route: self.labels.route,
                status,
            };
            self.metrics.requests.get_or_create(&labels).clone()
        };
        for slot in &self.series.statuses {
            let (seen, counter) = slot.get_or_init(|| (status, resolve()));
            if *seen == status {
                counter.inc();
                return;
            }
        }
        resolve().inc();
    }
}

/// One request counted in the in-flight gauge until dropped, also when the client goes
/// away and the request's future is dropped half-way.
struct InFlight<'a>(&'a Gauge);

impl<'a> InFlight<'a> {
    fn enter(gauge: &'a Gauge) -> Self {
        gauge.inc();
        Self(gauge)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// Lets a log line that can repeat under load (a shed request, a failed
/// `accept`) through at most once per interval, and counts the ones it held
/// back, so an overload costs one line per interval instead of one per event.
pub struct LogThrottle {
    interval: Duration,
    /// Milliseconds after [`process_start`] before which lines are held back.
    next_ms: AtomicU64,
    held_back: AtomicU64,
}

impl LogThrottle {
    /// A throttle that lets one line through per `interval`.
    pub const fn new(interval: Duration) -> Self {
        Self {
            interval,
            next_ms: AtomicU64::new(0),
            held_back: AtomicU64::new(0),
        }
    }

    /// `Some(n)` when a line may be written now, `n` being how many were held
    /// back since the last one; `None` when this one is held back.
    pub fn admit(&self) -> Option<u64> {
        let now = u64::try_from(process_start().elapsed().as_millis()).unwrap_or(u64::MAX);
        let next = self.next_ms.load(Ordering::Relaxed);
        let interval = u64::try_from(self.interval.as_millis()).unwrap_or(u64::MAX);
        if now >= next
            && self
                .next_ms
                .compare_exchange(
                    next,
                    now.saturating_add(interval),
                    Ordering::AcqRel,
                    Ordering::Relaxed,
                )
                .is_ok()
        {
            return Some(self.held_back.swap(0, Ordering::AcqRel));
        }
        self.held_back.fetch_add(1, Ordering::Relaxed);
        None
    }
}

fn process_start() -> Instant {
    static START: OnceLock<Instant> = OnceLock::new();
    *START.get_or_init(Instant::now)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_status_of_a_route_is_counted_under_its_template() {
        let metrics = Metrics::default();
        let status_route = paths::ALL.iter().position(|path| *path == paths::STATUS);
        // More distinct statuses than a route keeps resolved, each a different number of times.
        for (times, status) in [200_u16, 404, 418, 500, 503, 599].into_iter().enumerate() {
            for _ in 0..=times {
                metrics.track(&Method::GET, status_route).finish(status);
            }
        }
        metrics.track(&Method::POST, None).finish(405);
        metrics
            .track(&Method::from_bytes(b"BREW").unwrap_or_default(), None)
            .finish(405);
        let text = metrics.render();
        for (times, status) in [200_u16, 404, 418, 500, 503, 599].into_iter().enumerate() {
            let line = format!(
                r#"kea_service_http_requests_total{{method="GET",route="/status/{{code}}",status="{status}"}} {}"#,
                times + 1
            );
            assert!(text.contains(&line), "{line} not in\n{text}");
        }
        assert!(text.contains(r#"kea_service_http_request_duration_seconds_count{method="GET",route="/status/{code}"} 21"#), "{text}");
        assert!(
            text.contains(r#"{method="POST",route="unmatched",status="405"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(r#"{method="OTHER",route="unmatched",status="405"} 1"#),
            "{text}"
        );
        assert!(
            text.contains("kea_service_http_requests_in_flight 0"),
            "{text}"
        );
    }
}
