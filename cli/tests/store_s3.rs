//! `kea-operator store-upload`, `store-backup --s3-bucket` and `store-fetch` against a real
//! S3-compatible server (versitygw on loopback, `hack/backing-services.sh start`): what the
//! backup Jobs and restore init containers of a store with an S3 target run.
#![allow(clippy::unwrap_used)] // Tests fail loudly on the unexpected.

use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

/// The test server's settings, from `hack/backing-services.sh env`.
struct Server {
    endpoint: String,
    bucket: String,
    access_key: String,
    secret_key: String,
}

fn server() -> Server {
    let get = |variable: &str| match std::env::var(variable) {
        Ok(value) if !value.is_empty() => value,
        _ => panic!(
            "{variable} is not set: start the servers with `hack/backing-services.sh start` and \
             `eval \"$(hack/backing-services.sh env)\"`, or run every tier with `hack/test.sh`"
        ),
    };
    Server {
        endpoint: get("KEA_TEST_S3_ENDPOINT"),
        bucket: get("KEA_TEST_S3_BUCKET"),
        access_key: get("KEA_TEST_S3_ACCESS_KEY"),
        secret_key: get("KEA_TEST_S3_SECRET_KEY"),
    }
}

/// A key prefix of this test run alone.
fn unique_prefix(test: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("tests/{test}-{nanos}-{}/", std::process::id())
}

/// `kea-operator ARGS` with the bucket's flags and credentials.
fn kea(server: &Server, prefix: &str, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kea-operator"))
        .args(args)
        .args([
            "--s3-bucket",
            &server.bucket,
            "--s3-endpoint",
            &server.endpoint,
        ])
        .args(["--s3-prefix", prefix])
        .env("AWS_ACCESS_KEY_ID", &server.access_key)
        .env("AWS_SECRET_ACCESS_KEY", &server.secret_key)
        .output()
        .expect("kea-operator runs")
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Bytes that differ from file to file (a pseudo-random walk seeded by `seed`).
fn content(seed: u64, len: usize) -> Vec<u8> {
    let mut state = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
    (0..len)
        .map(|_| {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (state >> 33) as u8
        })
        .collect()
}

/// Uploads `dir`'s newest backup with `store-upload`, keeping `keep`; returns the report.
fn upload(server: &Server, prefix: &str, dir: &Path, keep: usize) -> serde_json::Value {
    let report = dir.join("report.json");
    let output = kea(
        server,
        prefix,
        &[
            "store-upload",
            "--dir",
            dir.to_str().unwrap(),
            "--suffix",
            ".sql.gz",
            "--keep",
            &keep.to_string(),
            "--location",
            &format!("s3://{}/{prefix}", server.bucket),
            "--report",
            report.to_str().unwrap(),
        ],
    );
    assert!(output.status.success(), "store-upload: {}", stderr(&output));
    serde_json::from_str(&std::fs::read_to_string(report).unwrap()).unwrap()
}

/// Downloads `path` (under the test's prefix's parent) with `store-fetch` into `to`.
fn fetch(server: &Server, prefix: &str, path: &str, to: &Path, unless: Option<&Path>) -> Output {
    let mut args = vec![
        "store-fetch",
        "--path",
        path,
        "--suffix",
        ".sql.gz",
        "--to",
        to.to_str().unwrap(),
    ];
    if let Some(unless) = unless {
        args.extend(["--unless-exists", unless.to_str().unwrap()]);
    }
    kea(server, prefix, &args)
}

#[test]
#[ignore = "needs an S3 server: hack/backing-services.sh start, then cargo test -- --ignored"]
fn uploads_keep_exactly_keep_and_a_restore_downloads_the_newest() {
    let server = server();
    let root = unique_prefix("keep");
    let store = format!("{root}orders-mariadb/");
    let scratch = tempfile::tempdir().unwrap();
    // Four runs, each leaving its dump in a fresh scratch folder as a Job's pod does; the
    // third is 20 MiB, more than two parts of a multipart upload.
    let names = [
        "20261201T030000.000Z.sql.gz",
        "20261202T030000.000Z.sql.gz",
        "20261203T030000.000Z.sql.gz",
        "20261204T030000.000Z.sql.gz",
    ];
    let mut reports = Vec::new();
    for (i, name) in names.iter().enumerate() {
        let dir = scratch.path().join(format!("run-{i}"));
        std::fs::create_dir_all(&dir).unwrap();
        let len = if i == 2 {
            20 * 1024 * 1024 + 17
        } else {
            1000 + i
        };
        std::fs::write(dir.join(name), content(i as u64, len)).unwrap();
        // Not a complete backup: never uploaded.
        std::fs::write(dir.join(format!(".{name}.partial")), b"half").unwrap();
        reports.push(upload(&server, &store, &dir, 2));
    }
    assert_eq!(
        reports[2]["location"],
        format!("s3://{}/{store}{}", server.bucket, names[2])
    );
    assert_eq!(reports[2]["size"], 20 * 1024 * 1024 + 17);

    // Exactly the newest two are left: fetch the folder's newest, then the other by name.
    let restore = tempfile::tempdir().unwrap();
    let path = "orders-mariadb/";
    let output = fetch(&server, &root, path, restore.path(), None);
    assert!(output.status.success(), "store-fetch: {}", stderr(&output));
    let newest = restore.path().join(path).join(names[3]);
    assert_eq!(std::fs::read(&newest).unwrap(), content(3, 1003));
    let big = format!("{path}{}", names[2]);
    let output = fetch(&server, &root, &big, restore.path(), None);
    assert!(output.status.success(), "store-fetch: {}", stderr(&output));
    assert_eq!(
        std::fs::read(restore.path().join(&big)).unwrap(),
        content(2, 20 * 1024 * 1024 + 17),
        "the multipart upload round-trips byte for byte"
    );
    for old in &names[..2] {
        let output = fetch(
            &server,
            &root,
            &format!("{path}{old}"),
            restore.path(),
            None,
        );
        assert!(!output.status.success(), "{old} was kept beyond keep=2");
        assert!(
            stderr(&output).contains("does not exist"),
            "{}",
            stderr(&output)
        );
    }
    let leftovers: Vec<_> = std::fs::read_dir(restore.path().join(path))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.starts_with('.'))
        .collect();
    assert!(
        leftovers.is_empty(),
        "partial downloads left: {leftovers:?}"
    );
}

#[test]
#[ignore = "needs an S3 server: hack/backing-services.sh start, then cargo test -- --ignored"]
fn a_restore_downloads_nothing_over_data_and_says_when_there_is_no_backup() {
    let server = server();
    let root = unique_prefix("fetch");
    let restore = tempfile::tempdir().unwrap();
    let data = restore.path().join("mysql");
    std::fs::create_dir_all(&data).unwrap();
    let output = fetch(
        &server,
        &root,
        "orders-mariadb/",
        restore.path(),
        Some(&data),
    );
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(
        !restore.path().join("orders-mariadb").exists(),
        "downloaded over data"
    );

    let output = fetch(&server, &root, "orders-mariadb/", restore.path(), None);
    assert!(!output.status.success());
    let message = stderr(&output);
    assert!(
        message.contains("no backup ending in .sql.gz")
            && message.contains(&format!("s3://{}/{root}orders-mariadb/", server.bucket)),
        "{message}"
    );
}

#[test]
#[ignore = "needs an S3 server: hack/backing-services.sh start, then cargo test -- --ignored"]
fn a_broken_target_fails_the_run_with_what_to_fix() {
    let server = server();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("20261201T030000.000Z.sql.gz"), b"dump").unwrap();
    let args = |report: &str| {
        vec![
            "store-upload".to_owned(),
            "--dir".to_owned(),
            dir.path().to_str().unwrap().to_owned(),
            "--suffix".to_owned(),
            ".sql.gz".to_owned(),
            "--location".to_owned(),
            "s3://x/".to_owned(),
            "--report".to_owned(),
            dir.path().join(report).to_str().unwrap().to_owned(),
        ]
    };
    let run = |bucket: &str, endpoint: &str, secret: &str| {
        let started = Instant::now();
        let output = Command::new(env!("CARGO_BIN_EXE_kea-operator"))
            .args(args("report.json"))
            .args(["--s3-bucket", bucket, "--s3-endpoint", endpoint])
            .env("AWS_ACCESS_KEY_ID", &server.access_key)
            .env("AWS_SECRET_ACCESS_KEY", secret)
            .output()
            .expect("kea-operator runs");
        assert!(!output.status.success(), "a broken target succeeded");
        assert!(
            !dir.path().join("report.json").exists(),
            "a failed run reported a backup"
        );
        (stderr(&output), started.elapsed())
    };

    let (message, _) = run("no-such-bucket", &server.endpoint, &server.secret_key);
    assert!(
        message.contains("bucket no-such-bucket does not exist at"),
        "{message}"
    );
    let (message, _) = run(&server.bucket, &server.endpoint, "not-the-secret");
    assert!(message.contains("refused the credentials"), "{message}");
    assert!(
        !message.contains("not-the-secret") && !message.contains(&server.secret_key),
        "the secret is echoed: {message}"
    );
    // Nothing listens on port 9 of loopback: the run ends within its retry budget.
    let (message, took) = run(&server.bucket, "http://127.0.0.1:9", &server.secret_key);
    assert!(message.contains("127.0.0.1:9"), "{message}");
    assert!(took < Duration::from_secs(90), "took {took:?}");

    let output = Command::new(env!("CARGO_BIN_EXE_kea-operator"))
        .args(args("report.json"))
        .args([
            "--s3-bucket",
            &server.bucket,
            "--s3-endpoint",
            "ftp://s3.example",
        ])
        .output()
        .expect("kea-operator runs");
    assert!(
        stderr(&output).contains("must be an http:// or https:// URL"),
        "{}",
        stderr(&output)
    );
    let output = Command::new(env!("CARGO_BIN_EXE_kea-operator"))
        .args(args("report.json"))
        .args([
            "--s3-bucket",
            &server.bucket,
            "--s3-endpoint",
            &server.endpoint,
        ])
        .env_remove("AWS_ACCESS_KEY_ID")
        .env_remove("AWS_SECRET_ACCESS_KEY")
        .output()
        .expect("kea-operator runs");
    assert!(
        stderr(&output).contains("set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"),
        "{}",
        stderr(&output)
    );
}

/// The server's HTTPS port and the file of the test authority that signs its certificate.
fn tls_server() -> (Server, String) {
    let endpoint = std::env::var("KEA_TEST_S3_TLS_ENDPOINT")
        .expect("KEA_TEST_S3_TLS_ENDPOINT is not set: `eval \"$(hack/backing-services.sh env)\"`");
    let ca_file = std::env::var("KEA_TEST_S3_CA_FILE").expect("KEA_TEST_S3_CA_FILE is not set");
    (
        Server {
            endpoint,
            ..server()
        },
        ca_file,
    )
}

#[test]
#[ignore = "needs an S3 server: hack/backing-services.sh start, then cargo test -- --ignored"]
fn an_https_endpoint_is_trusted_through_the_authority_of_the_ca_file() {
    let (server, ca_file) = tls_server();
    let root = unique_prefix("https");
    let store = format!("{root}orders-redis/");
    let dir = tempfile::tempdir().unwrap();
    let name = "20261205T030000.000Z.rdb";
    // More than one part: the multipart upload goes over TLS too.
    let backup = content(7, 9 * 1024 * 1024 + 3);
    std::fs::write(dir.path().join(name), &backup).unwrap();
    let upload = |ca: Option<&str>| {
        let mut args = vec![
            "store-upload".to_owned(),
            "--dir".to_owned(),
            dir.path().to_str().unwrap().to_owned(),
            "--suffix".to_owned(),
            ".rdb".to_owned(),
            "--location".to_owned(),
            format!("s3://{}/{store}", server.bucket),
            "--report".to_owned(),
            dir.path().join("report.json").to_str().unwrap().to_owned(),
        ];
        if let Some(ca) = ca {
            args.extend(["--s3-ca-file".to_owned(), ca.to_owned()]);
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        kea(&server, &store, &args)
    };

    // The test authority is no public one: without it, the server is not trusted.
    let output = upload(None);
    assert!(!output.status.success(), "an untrusted server was used");
    let message = stderr(&output);
    assert!(
        message.contains("TLS certificate is not trusted") && message.contains(&server.endpoint),
        "{message}"
    );
    // A CA file that holds no certificate says so, and what to give instead.
    let not_pem = dir.path().join("not-a-certificate.pem");
    std::fs::write(&not_pem, "MIIB...\n").unwrap();
    let output = upload(Some(not_pem.to_str().unwrap()));
    assert!(!output.status.success());
    let message = stderr(&output);
    assert!(
        message.contains("holds no usable PEM certificate")
            && message.contains("not-a-certificate.pem"),
        "{message}"
    );
    assert!(!dir.path().join("report.json").exists());

    let output = upload(Some(&ca_file));
    assert!(output.status.success(), "store-upload: {}", stderr(&output));
    let restore = tempfile::tempdir().unwrap();
    let output = kea(
        &server,
        &root,
        &[
            "store-fetch",
            "--path",
            "orders-redis/",
            "--suffix",
            ".rdb",
            "--to",
            restore.path().to_str().unwrap(),
            "--s3-ca-file",
            &ca_file,
        ],
    );
    assert!(output.status.success(), "store-fetch: {}", stderr(&output));
    assert_eq!(
        std::fs::read(restore.path().join("orders-redis").join(name)).unwrap(),
        backup,
        "the backup round-trips over HTTPS byte for byte"
    );
}
