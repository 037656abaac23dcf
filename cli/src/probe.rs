//! `kea-operator probe URL`: GETs a plain `http://` URL and succeeds on a 2xx answer. The
//! chart's `helm test` pod runs it against the operator's `/readyz`: the operator image has
//! no other HTTP client.

use std::time::Duration;

use kea_operator::{Error, Result};

/// GETs `url` and fails unless it answers 2xx within `timeout`; prints the status.
pub async fn probe(url: &str, timeout: Duration) -> Result<()> {
    let status = status_of(url, timeout).await?;
    println!("{url}: {status}");
    if (200..300).contains(&status) {
        Ok(())
    } else {
        Err(Error::Io(std::io::Error::other(format!(
            "{url} answered {status}"
        ))))
    }
}

/// GETs `url` (plain `http://host:port/path`) and returns the status code; fails when no
/// answer comes within `timeout`.
pub async fn status_of(url: &str, timeout: std::time::Duration) -> Result<u16> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let invalid = || Error::InvalidObject(format!("{url}: expected http://HOST:PORT/PATH"));
    let rest = url.strip_prefix("http://").ok_or_else(invalid)?;
    let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
    if authority.is_empty() {
        return Err(invalid());
    }
    let address = if authority.contains(':') {
        authority.to_owned()
    } else {
        format!("{authority}:80")
    };
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(&address).await?;
        let request =
            format!("GET /{path} HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await?;
        // The status line is all that is needed; 64 KiB bounds what is read.
        let mut answer = Vec::new();
        stream.take(64 * 1024).read_to_end(&mut answer).await?;
        Ok::<_, std::io::Error>(answer)
    };
    let answer = tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| {
            Error::Io(std::io::Error::other(format!(
                "{url}: no answer within {timeout:?}"
            )))
        })??;
    let status_line = String::from_utf8_lossy(&answer);
    status_line
        .lines()
        .next()
        .and_then(|line| {
            line.strip_prefix("HTTP/1.1 ")
                .or_else(|| line.strip_prefix("HTTP/1.0 "))
        })
        .and_then(|rest| rest.get(..3))
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| Error::Io(std::io::Error::other(format!("{url}: not an HTTP answer"))))
}
