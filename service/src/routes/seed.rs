//! The seed demo's routes, with the seed's contract: plain-text answers to
//! `GET /` and `GET /oscheck`.

/// The seed's greeting.
pub const GREETING: &str = "Hello KEA!";

/// Start point: the greeting.
#[utoipa::path(get, path = "/", tag = "seed",
    responses((status = 200, description = "The greeting", body = String, example = "Hello KEA!")))]
pub async fn hello() -> &'static str {
    GREETING
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
