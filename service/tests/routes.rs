//! Every route through the router (`tower::ServiceExt::oneshot`), on the
//! embedded stores: the seed's contract, the data routes, probes, metrics,
//! fault demos and bad input.

#![allow(clippy::unwrap_used)] // Tests fail loudly on the unexpected.

mod common;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use common::{embedded_app, get, post_json, send};
use kea_service::config::Config;

#[tokio::test]
async fn seed_routes_keep_their_contract() {
    let (app, _dir) = embedded_app().await;
    let hello = get(&app, "/").await;
    assert_eq!(hello.status, StatusCode::OK);
    assert_eq!(hello.text, "Hello KEA!");
    assert!(hello.content_type.starts_with("text/plain"));

    let os = get(&app, "/oscheck").await;
    assert_eq!(os.status, StatusCode::OK);
    assert_eq!(
        os.text,
        format!("Your operation system is: {}", expected_os())
    );
}

fn expected_os() -> &'static str {
    if cfg!(target_os = "linux") {
        "Linux"
    } else {
        std::env::consts::OS
    }
}

#[tokio::test]
async fn data_routes_start_with_the_seed_items() {
    let (app, _dir) = embedded_app().await;
    let relational = get(&app, "/mysqldata").await.json();
    assert_eq!(relational["store"], "sqlite");
    assert_eq!(relational["items"][0]["name"], "Test MySQL");
    assert_eq!(relational["next_before"], serde_json::Value::Null);
    let nosql = get(&app, "/nosqldata").await.json();
    assert_eq!(nosql["store"], "redb");
    assert_eq!(nosql["items"][0]["name"], "Test NoSQL");
}

#[tokio::test]
async fn items_are_created_listed_and_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let config = Config::with_data_dir(dir.path());
    {
        let (app, _) = kea_service::build_with_dependencies(&config, vec![])
            .await
            .unwrap();
        for route in ["/mysqldata", "/nosqldata"] {
            let created = post_json(&app, route, r#"{"name": "  Ærø café  "}"#).await;
            assert_eq!(
                created.status,
                StatusCode::CREATED,
                "{route}: {}",
                created.text
            );
            let item = created.json();
            assert_eq!(item["name"], "Ærø café", "names are trimmed");
            assert_eq!(item["id"], 2, "the seed item has id 1");
            let second = post_json(&app, route, r#"{"name": "second"}"#).await.json();
            assert_eq!(second["id"], 3);
        }
    }
    // A new process on the same data directory sees everything.
    let (app, _) = kea_service::build_with_dependencies(&config, vec![])
        .await
        .unwrap();
    for route in ["/mysqldata", "/nosqldata"] {
        let names: Vec<String> = get(&app, route).await.json()["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|item| item["name"].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(names[..2], ["second", "Ærø café"], "{route}: newest first");
    }
    let limited = get(&app, "/nosqldata?limit=2").await.json();
    assert_eq!(limited["items"].as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn bad_bodies_get_clear_json_errors_and_store_nothing() {
    let (app, _dir) = embedded_app().await;
    let oversized = format!(r#"{{"name": "{}"}}"#, "x".repeat(100_000));
    let too_long_name = format!(r#"{{"name": "{}"}}"#, "é".repeat(201));
    let cases: [(&str, StatusCode, &str); 11] = [
        (r#"["x"]"#, StatusCode::UNPROCESSABLE_ENTITY, "invalid_body"),
        (r#"[]"#, StatusCode::UNPROCESSABLE_ENTITY, "invalid_body"),
        (r#""x""#, StatusCode::UNPROCESSABLE_ENTITY, "invalid_body"),
        ("{not json", StatusCode::BAD_REQUEST, "bad_request"),
        (
            r#"{"name": 42}"#,
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_body",
        ),
        (
            r#"{"title": "x"}"#,
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_body",
        ),
        (
            r#"{"name": "x", "extra": 1}"#,
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_body",
        ),
        (
            r#"{"name": "   "}"#,
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_body",
        ),
        (
            r#"{"name": "a\nb"}"#,
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_body",
        ),
        (
            &too_long_name,
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_body",
        ),
        (
            &oversized,
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
        ),
    ];
    let invisible = [
        "\u{200B}",                 // zero-width space
        "\u{200B}\u{200C}\u{2060}", // only zero-width characters
        "evil\u{202E}gpj.exe",      // right-to-left override
        "a\u{2066}b",               // left-to-right isolate
        "one\u{2028}two",           // line separator
        "one\u{2029}two",           // paragraph separator
        "\u{FEFF}bom",              // byte-order mark
        "\u{3164}",                 // Hangul filler: renders as nothing
        "\u{2800}\u{FE0F}",         // braille blank and a variation selector
        "tag\u{E0041}",             // tag character
        "private\u{E000}",          // private use
        "\u{200D}joiner",           // a joiner with nothing before it
    ];
    let invisible: Vec<String> = invisible
        .iter()
        .map(|name| serde_json::json!({ "name": name }).to_string())
        .collect();
    let mut cases = cases.to_vec();
    for body in &invisible {
        cases.push((body, StatusCode::UNPROCESSABLE_ENTITY, "invalid_body"));
    }
    for route in ["/mysqldata", "/nosqldata"] {
        for (body, status, code) in &cases {
            let answer = post_json(&app, route, body).await;
            let shown: String = body.chars().take(40).collect();
            assert_eq!(answer.status, *status, "{route} {shown}: {}", answer.text);
            assert_eq!(answer.error_code(), *code, "{route} {shown}");
            assert!(
                !answer.json()["error"]["message"]
                    .as_str()
                    .unwrap()
                    .is_empty()
            );
        }
        let no_content_type = send(
            &app,
            Request::post(route)
                .body(Body::from(r#"{"name": "x"}"#))
                .unwrap(),
        )
        .await;
        assert_eq!(no_content_type.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
        assert_eq!(no_content_type.error_code(), "unsupported_media_type");

        let items = get(&app, route).await.json();
        assert_eq!(
            items["items"].as_array().unwrap().len(),
            1,
            "{route}: only the seed item"
        );
    }
}

#[tokio::test]
async fn bad_paths_queries_and_methods_get_json_errors() {
    let (app, _dir) = embedded_app().await;
    let huge = format!("/status/{}", "9".repeat(60_000));
    let long_number = format!("/status/{}", "9".repeat(4_000));
    let cases = [
        ("/no/such/route", StatusCode::NOT_FOUND, "not_found"),
        (huge.as_str(), StatusCode::URI_TOO_LONG, "uri_too_long"),
        (&long_number, StatusCode::BAD_REQUEST, "bad_request"),
        ("/status/abc", StatusCode::BAD_REQUEST, "bad_request"),
        ("/status/99", StatusCode::BAD_REQUEST, "bad_request"),
        ("/status/600", StatusCode::BAD_REQUEST, "bad_request"),
        ("/delay/10001", StatusCode::BAD_REQUEST, "bad_request"),
        ("/delay/-1", StatusCode::BAD_REQUEST, "bad_request"),
        ("/mysqldata?limit=0", StatusCode::BAD_REQUEST, "bad_request"),
        (
            "/nosqldata?limit=1001",
            StatusCode::BAD_REQUEST,
            "bad_request",
        ),
        (
            "/nosqldata?limit=many",
            StatusCode::BAD_REQUEST,
            "bad_request",
        ),
        (
            "/mysqldata?color=red",
            StatusCode::BAD_REQUEST,
            "bad_request",
        ),
    ];
    for (uri, status, code) in cases {
        let answer = get(&app, uri).await;
        let shown: String = uri.chars().take(40).collect();
        assert_eq!(answer.status, status, "{shown}: {}", answer.text);
        assert_eq!(answer.error_code(), code, "{shown}");
        assert!(
            answer.text.len() < 1000,
            "errors do not echo huge input back"
        );
    }
    let delete = send(
        &app,
        Request::delete("/mysqldata").body(Body::empty()).unwrap(),
    )
    .await;
    assert_eq!(delete.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(delete.error_code(), "method_not_allowed");
}

#[tokio::test]
async fn fault_demos_answer_as_asked() {
    let (app, _dir) = embedded_app().await;
    let teapot = get(&app, "/status/418").await;
    assert_eq!(teapot.status, StatusCode::IM_A_TEAPOT);
    assert_eq!(teapot.json()["status"], 418);
    assert_eq!(
        get(&app, "/status/503").await.status,
        StatusCode::SERVICE_UNAVAILABLE
    );

    let start = std::time::Instant::now();
    let delayed = get(&app, "/delay/120").await;
    assert_eq!(delayed.status, StatusCode::OK);
    assert_eq!(delayed.json()["delay_ms"], 120);
    assert!(start.elapsed() >= std::time::Duration::from_millis(120));
}

#[tokio::test]
async fn probes_report_and_can_be_switched() {
    let (app, _dir) = embedded_app().await;
    assert_eq!(get(&app, "/healthz").await.json()["status"], "ok");

    let ready = get(&app, "/readyz").await;
    assert_eq!(ready.status, StatusCode::OK, "{}", ready.text);
    assert_eq!(ready.json()["relational"], "ok");
    assert_eq!(ready.json()["degraded"], false);

    let disable = send(
        &app,
        Request::post("/readyz/disable")
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(disable.status, StatusCode::ACCEPTED);
    let unready = get(&app, "/readyz").await;
    assert_eq!(unready.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(unready.json()["enabled"], false);
    assert_eq!(
        get(&app, "/healthz").await.status,
        StatusCode::OK,
        "liveness is unaffected"
    );

    send(
        &app,
        Request::post("/readyz/enable").body(Body::empty()).unwrap(),
    )
    .await;
    assert_eq!(get(&app, "/readyz").await.status, StatusCode::OK);
}

#[tokio::test]
async fn metrics_count_requests_by_route_template_and_status() {
    let (app, _dir) = embedded_app().await;
    get(&app, "/").await;
    get(&app, "/status/418").await;
    get(&app, "/status/418").await;
    get(&app, "/nowhere").await;
    let metrics = get(&app, "/metrics").await;
    assert_eq!(metrics.status, StatusCode::OK);
    assert!(
        metrics
            .content_type
            .starts_with("application/openmetrics-text")
    );
    let text = metrics.text;
    assert!(
        text.contains(
            r#"kea_service_http_requests_total{method="GET",route="/status/{code}",status="418"} 2"#
        ),
        "{text}"
    );
    assert!(text.contains(r#"route="/",status="200"} 1"#), "{text}");
    assert!(
        text.contains(r#"route="unmatched",status="404"} 1"#),
        "{text}"
    );
    assert!(
        text.contains("kea_service_http_request_duration_seconds_bucket"),
        "{text}"
    );
}

#[tokio::test]
async fn version_and_openapi_describe_the_service() {
    let (app, _dir) = embedded_app().await;
    let version = get(&app, "/version").await.json();
    assert_eq!(version["name"], "kea-service");
    assert_eq!(version["version"], env!("CARGO_PKG_VERSION"));

    let doc = get(&app, "/openapi.json").await.json();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    for path in [
        "/",
        "/oscheck",
        "/mysqldata",
        "/nosqldata",
        "/readyz",
        "/api/dependencies",
        "/status/{code}",
    ] {
        assert!(
            doc["paths"][path].is_object(),
            "OpenAPI document lacks {path}"
        );
    }
    assert!(doc["components"]["schemas"]["NewItem"].is_object());
    assert!(doc["paths"]["/mysqldata"]["post"]["requestBody"].is_object());

    // What a generated client or a validator needs: parameters where they
    // are sent, the bounds the code enforces, every status a route answers.
    for route in ["/mysqldata", "/nosqldata"] {
        let parameters = doc["paths"][route]["get"]["parameters"].as_array().unwrap();
        for parameter in parameters {
            assert_eq!(parameter["in"], "query", "{route}: {parameter}");
        }
        assert_eq!(parameters[0]["schema"]["maximum"], 1000);
        let post = &doc["paths"][route]["post"]["responses"];
        for status in ["201", "400", "413", "414", "415", "422", "503"] {
            assert!(post[status].is_object(), "POST {route} lacks {status}");
        }
    }
    let name = &doc["components"]["schemas"]["NewItem"]["properties"]["name"];
    assert_eq!(name["maxLength"], 200);
    assert!(name["pattern"].is_string());
    assert_eq!(
        doc["components"]["schemas"]["NewItem"]["additionalProperties"],
        false
    );
    let code = &doc["paths"]["/status/{code}"]["get"]["parameters"][0]["schema"];
    assert_eq!(
        (code["minimum"].as_u64(), code["maximum"].as_u64()),
        (Some(200), Some(599))
    );
    assert!(doc["paths"]["/status/{code}"]["get"]["responses"]["default"].is_object());
    let ms = &doc["paths"]["/delay/{ms}"]["get"]["parameters"][0]["schema"];
    assert_eq!(ms["maximum"], 10_000);
    assert!(
        doc["paths"]["/metrics"]["get"]["responses"]["200"]["content"]
            ["application/openmetrics-text"]
            .is_object()
    );
    assert!(doc["paths"]["/"]["get"]["responses"]["503"].is_object());
}

#[tokio::test]
async fn a_broken_embedded_store_takes_the_pod_out_of_the_service() {
    let (app, dir) = embedded_app().await;
    assert_eq!(get(&app, "/readyz").await.status, StatusCode::OK);

    // The pod's own SQLite file loses its table behind the service's back (as a damaged
    // file would): the store still opens, `SELECT 1` still answers, the data is gone.
    let mut intruder = <sqlx::SqliteConnection as sqlx::Connection>::connect(&format!(
        "sqlite://{}",
        dir.path().join("relational.sqlite").display()
    ))
    .await
    .unwrap();
    sqlx::query("DROP TABLE items")
        .execute(&mut intruder)
        .await
        .unwrap();

    let ready = get(&app, "/readyz").await;
    assert_eq!(
        ready.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "a pod whose own store is broken stays in the Service: {}",
        ready.text
    );
    let body = ready.json();
    assert_eq!(body["ready"], false);
    assert_eq!(body["degraded"], false, "not a shared store's outage");
    assert!(
        body["relational"]
            .as_str()
            .unwrap()
            .contains("no such table"),
        "{body}"
    );
    assert_eq!(body["nosql"], "ok");
    assert_eq!(
        get(&app, "/").await.text,
        "Hello KEA!",
        "liveness is not readiness"
    );
    assert_eq!(get(&app, "/healthz").await.status, StatusCode::OK);
}

#[tokio::test]
async fn a_shared_store_that_is_down_fails_only_its_route_and_the_pod_stays_ready() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config::with_data_dir(dir.path());
    // Nothing listens on port 1: both servers are "down".
    config.database_url = Some("mysql://kea:kea@127.0.0.1:1/kea".into());
    config.redis_url = Some("redis://127.0.0.1:1/0".into());
    config.store_timeout = std::time::Duration::from_millis(500);
    let (app, _) = kea_service::build_with_dependencies(&config, vec![])
        .await
        .unwrap();

    for route in ["/mysqldata", "/nosqldata"] {
        let answer = get(&app, route).await;
        assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE, "{route}");
        assert_eq!(answer.error_code(), "store_unavailable");
        let created = post_json(&app, route, r#"{"name": "x"}"#).await;
        assert_eq!(created.status, StatusCode::SERVICE_UNAVAILABLE);
    }
    assert_eq!(
        get(&app, "/").await.text,
        "Hello KEA!",
        "the rest keeps serving"
    );
    // Shared stores: the pod stays in the Service; the outage shows in the
    // body and in the metrics.
    let ready = get(&app, "/readyz").await;
    assert_eq!(ready.status, StatusCode::OK, "{}", ready.text);
    let body = ready.json();
    assert_eq!(body["ready"], true);
    assert_eq!(body["degraded"], true);
    let metrics = get(&app, "/metrics").await.text;
    for line in [
        r#"kea_service_store_up{store="relational",backend="mysql"} 0"#,
        r#"kea_service_store_up{store="nosql",backend="redis"} 0"#,
    ] {
        assert!(metrics.contains(line), "{metrics}");
    }
    assert!(
        body["relational"]
            .as_str()
            .unwrap()
            .contains("mysql store is unavailable"),
        "{body}"
    );
    assert!(
        body["nosql"]
            .as_str()
            .unwrap()
            .contains("redis store is unavailable"),
        "{body}"
    );
    assert!(
        !ready.text.contains("kea:kea"),
        "readiness never shows credentials"
    );
}

#[tokio::test]
async fn misconfigured_store_urls_fail_at_start_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config::with_data_dir(dir.path());
    config.database_url = Some("postgres://nope".into());
    let error = kea_service::build_with_dependencies(&config, vec![])
        .await
        .err()
        .unwrap();
    assert!(
        error
            .to_string()
            .contains("DATABASE_URL is not a valid mysql:// URL"),
        "{error}"
    );

    let mut config = Config::with_data_dir(dir.path());
    config.redis_url = Some("http://not-redis".into());
    let error = kea_service::build_with_dependencies(&config, vec![])
        .await
        .err()
        .unwrap();
    assert!(
        error
            .to_string()
            .contains("REDIS_URL is not a valid redis:// URL"),
        "{error}"
    );
}

#[tokio::test]
async fn the_concurrency_limit_applies_to_the_whole_service() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config::with_data_dir(dir.path());
    config.max_concurrency = 2;
    let (app, _) = kea_service::build_with_dependencies(&config, vec![])
        .await
        .unwrap();
    let slow: Vec<_> = (0..2)
        .map(|_| {
            let app = app.clone();
            tokio::spawn(async move { get(&app, "/delay/2000").await.status })
        })
        .collect();
    // Once both slow requests run, every other route is shed.
    let started = std::time::Instant::now();
    let mut attempts = 0;
    let shed = loop {
        let answer = get(&app, "/").await;
        if answer.status == StatusCode::SERVICE_UNAVAILABLE {
            break answer;
        }
        attempts += 1;
        assert!(
            attempts < 1000 && started.elapsed() < std::time::Duration::from_millis(1500),
            "GET / was still served while two requests held a limit of 2"
        );
        tokio::time::sleep(std::time::Duration::from_millis(1)).await;
    };
    assert_eq!(shed.error_code(), "overloaded");
    assert_eq!(
        get(&app, "/status/200").await.status,
        StatusCode::SERVICE_UNAVAILABLE
    );
    for request in slow {
        assert_eq!(request.await.unwrap(), StatusCode::OK);
    }
    assert_eq!(get(&app, "/").await.status, StatusCode::OK);
}

#[tokio::test]
async fn names_in_any_script_and_emoji_sequences_are_accepted() {
    let (app, _dir) = embedded_app().await;
    for name in [
        "Ærø café",
        "日本語",
        "עברית",
        "مرحبا",
        "👨\u{200D}👩\u{200D}👧",
        "می\u{200C}خواهم",
        "❤\u{FE0F}",
    ] {
        let body = serde_json::json!({ "name": name }).to_string();
        let created = post_json(&app, "/nosqldata", &body).await;
        assert_eq!(
            created.status,
            StatusCode::CREATED,
            "{name:?}: {}",
            created.text
        );
        assert_eq!(created.json()["name"], name);
    }
}

#[tokio::test]
async fn listings_page_from_the_newest_item_to_the_oldest() {
    let (app, _dir) = embedded_app().await;
    for route in ["/mysqldata", "/nosqldata"] {
        for i in 0..6 {
            let created = post_json(&app, route, &format!(r#"{{"name": "item {i}"}}"#)).await;
            assert_eq!(created.status, StatusCode::CREATED);
        }
        let first = get(&app, route).await.json();
        assert_eq!(
            first["items"][0]["name"], "item 5",
            "{route}: the newest item first"
        );
        assert_eq!(first["next_before"], serde_json::Value::Null);

        // Pages of 2 walk every item once, newest to oldest, and end with no cursor.
        let mut ids = Vec::new();
        let mut uri = format!("{route}?limit=2");
        for _ in 0..10 {
            let page = get(&app, &uri).await;
            assert_eq!(page.status, StatusCode::OK, "{uri}: {}", page.text);
            let page = page.json();
            ids.extend(
                page["items"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|i| i["id"].as_u64().unwrap()),
            );
            match page["next_before"].as_u64() {
                Some(before) => uri = format!("{route}?limit=2&before={before}"),
                None => break,
            }
        }
        assert_eq!(ids, [7, 6, 5, 4, 3, 2, 1], "{route}");
        let bad = get(&app, &format!("{route}?before=0")).await;
        assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    }
}
