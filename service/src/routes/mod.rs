//! The HTTP surface: every route, the shared state, and the edge in front of
//! them that protects the service (limits, timeout, load shedding, metrics).

pub mod admin;
pub mod data;
mod edge;
pub mod faults;
pub mod ops;
pub mod seed;

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::Uri;
use axum::routing::{get, post};
use utoipa::OpenApi;

pub use self::edge::App;
use crate::config::MAX_BODY_BYTES;
use crate::dependencies::Dependencies;
use crate::error::ApiError;
use crate::store::Stores;
use crate::telemetry::Metrics;

/// Switches that readiness reads.
#[derive(Debug, Default)]
pub struct Flags {
    /// Cleared by `POST /readyz/disable`.
    pub enabled: AtomicBool,
    /// Set on SIGTERM.
    pub draining: AtomicBool,
}

/// What every handler can reach, behind one reference count: axum clones
/// the state for every request.
pub type AppState = Arc<ServiceState>;

/// The parts of [`AppState`].
pub struct ServiceState {
    /// The two data stores.
    pub stores: Stores,
    /// The services this one calls.
    pub dependencies: Arc<Dependencies>,
    /// Request metrics.
    pub metrics: Arc<Metrics>,
    /// Readiness switches.
    pub flags: Arc<Flags>,
    /// The errors `GET /` answers on purpose (none unless configured).
    pub root_faults: seed::RootFaults,
    /// The token of the admin routes; none are served without it.
    pub admin_token: Option<String>,
}

/// Limits applied to every request.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Deadline of a whole request.
    pub request_timeout: Duration,
    /// Requests served at once before shedding.
    pub max_concurrency: usize,
}

/// The OpenAPI document, generated from the handlers and DTOs.
#[derive(OpenApi)]
#[openapi(
    info(title = "kea-service", description = "The KEA demo microservice: seed routes, two data stores, probes and fault demos."),
    paths(
        seed::hello, seed::oscheck,
        data::list_relational, data::create_relational, data::list_nosql, data::create_nosql,
        ops::healthz, ops::readyz, ops::enable_readiness, ops::disable_readiness,
        ops::metrics, ops::version, ops::dependencies, ops::openapi,
        faults::status, faults::delay, admin::backup,
    ),
    modifiers(&CommonResponses, &NamePattern, &AdminToken),
    tags(
        (name = "seed", description = "The seed demo's routes"),
        (name = "data", description = "The service's own stores"),
        (name = "operations", description = "Probes, metrics and reports"),
        (name = "faults", description = "Failure demos"),
    )
)]
pub struct ApiDoc;

/// Adds the answers any route can give to every operation: 414 for a URI
/// over the limit, 503 when the service sheds the request or it times out.
struct CommonResponses;

impl utoipa::Modify for CommonResponses {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::{RefOr, ResponseBuilder, content::ContentBuilder};
        let error = |description: &str| {
            RefOr::T(
                ResponseBuilder::new()
                    .description(description)
                    .content(
                        "application/json",
                        ContentBuilder::new()
                            .schema(Some(utoipa::openapi::Ref::from_schema_name("ErrorBody")))
                            .build(),
                    )
                    .build(),
            )
        };
        for item in openapi.paths.paths.values_mut() {
            let operations = [
                &mut item.get,
                &mut item.post,
                &mut item.put,
                &mut item.delete,
                &mut item.patch,
            ];
            for operation in operations.into_iter().flatten() {
                let responses = &mut operation.responses.responses;
                responses
                    .entry("414".into())
                    .or_insert_with(|| error("The URI is longer than 8 KiB"));
                responses.entry("503".into()).or_insert_with(|| {
                    error("Overloaded, timed out, or (data routes) the store is unavailable")
                });
            }
        }
    }
}

/// Declares the bearer token of the admin routes.
struct AdminToken;

impl utoipa::Modify for AdminToken {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        openapi
            .components
            .get_or_insert_with(Default::default)
            .add_security_scheme(
                "admin_token",
                SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
            );
    }
}

/// Puts the name rule ([`crate::dto::name_pattern`]) into the schema of
/// `NewItem`, so generated clients and testers know it.
struct NamePattern;

impl utoipa::Modify for NamePattern {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::{RefOr, Schema};
        let name = openapi
            .components
            .as_mut()
            .and_then(|components| components.schemas.get_mut("NewItem"))
            .and_then(|schema| match schema {
                RefOr::T(Schema::Object(object)) => object.properties.get_mut("name"),
                _ => None,
            });
        if let Some(RefOr::T(Schema::Object(name))) = name {
            name.pattern = Some(crate::dto::name_pattern());
        }
        // Unknown fields are rejected.
        if let Some(RefOr::T(Schema::Object(item))) = openapi
            .components
            .as_mut()
            .and_then(|components| components.schemas.get_mut("NewItem"))
        {
            item.additional_properties = Some(Box::new(
                utoipa::openapi::schema::AdditionalProperties::FreeForm(false),
            ));
        }
    }
}

/// Every route template the router serves, in one place: the router is built
/// from these, and metrics use them as `'static` labels without allocating. The probe
/// paths are the operator's ([`kea_contract::paths`]).
pub mod paths {
    pub const ROOT: &str = "/";
    pub const OSCHECK: &str = "/oscheck";
    pub const MYSQLDATA: &str = "/mysqldata";
    pub const NOSQLDATA: &str = "/nosqldata";
    pub const HEALTHZ: &str = kea_contract::paths::HEALTHZ;
    pub const READYZ: &str = kea_contract::paths::READYZ;
    pub const READYZ_ENABLE: &str = "/readyz/enable";
    pub const READYZ_DISABLE: &str = "/readyz/disable";
    pub const METRICS: &str = kea_contract::paths::METRICS;
    pub const VERSION: &str = "/version";
    pub const OPENAPI: &str = "/openapi.json";
    pub const DEPENDENCIES: &str = "/api/dependencies";
    pub const STATUS: &str = "/status/{code}";
    pub const DELAY: &str = "/delay/{ms}";
    pub const BACKUP: &str = "/admin/backup/{store}";

    /// All of the above.
    pub const ALL: [&str; 15] = [
        ROOT,
        OSCHECK,
        MYSQLDATA,
        NOSQLDATA,
        HEALTHZ,
        READYZ,
        READYZ_ENABLE,
        READYZ_DISABLE,
        METRICS,
        VERSION,
        OPENAPI,
        DEPENDENCIES,
        STATUS,
        DELAY,
        BACKUP,
    ];

    /// Where in [`ALL`] the template that `path` matches is (a `{parameter}`
    /// matches one non-empty segment), as the router matches it.
    pub fn index_of(path: &str) -> Option<usize> {
        ALL.iter().position(|template| matches(template, path))
    }

    fn matches(template: &str, path: &str) -> bool {
        if !template.contains('{') {
            return template == path;
        }
        let mut segments = path.split('/');
        template.split('/').all(|expected| {
            segments.next().is_some_and(|segment| {
                segment == expected || (expected.starts_with('{') && !segment.is_empty())
            })
        }) && segments.next().is_none()
    }
}

/// Builds the application: every route, behind the edge ([`App`]).
pub fn app(state: AppState, limits: Limits) -> App {
    let metrics = Arc::clone(&state.metrics);
    let flags = Arc::clone(&state.flags);
    // Only the routes that read a body need its limit.
    let body_limit = || DefaultBodyLimit::max(MAX_BODY_BYTES);
    let router = Router::new()
        .route(paths::ROOT, get(seed::hello))
        .route(paths::OSCHECK, get(seed::oscheck))
        .route(
            paths::MYSQLDATA,
            get(data::list_relational)
                .post(data::create_relational)
                .layer(body_limit()),
        )
        .route(
            paths::NOSQLDATA,
            get(data::list_nosql)
                .post(data::create_nosql)
                .layer(body_limit()),
        )
        .route(paths::HEALTHZ, get(ops::healthz))
        .route(paths::READYZ, get(ops::readyz))
        .route(paths::READYZ_ENABLE, post(ops::enable_readiness))
        .route(paths::READYZ_DISABLE, post(ops::disable_readiness))
        .route(paths::METRICS, get(ops::metrics))
        .route(paths::VERSION, get(ops::version))
        .route(paths::OPENAPI, get(ops::openapi))
        .route(paths::DEPENDENCIES, get(ops::dependencies))
        .route(paths::STATUS, get(faults::status))
        .route(paths::DELAY, get(faults::delay))
        .route(paths::BACKUP, get(admin::backup))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(state);
    App::new(router, metrics, flags, limits)
}

async fn not_found(uri: Uri) -> ApiError {
    // Echo at most a bounded prefix of the path: it is client input.
    let path: String = uri.path().chars().take(100).collect();
    ApiError::NotFound(path)
}

async fn method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed
}
