//! The HTTP/1.1 server under the router, with the limits a service facing
//! untrusted clients needs:
//!
//! - at most `max_connections` connections; more are answered with a JSON 503
//!   and closed at once, so a flood cannot exhaust file descriptors;
//! - a header timeout: a client must send a whole request head within it, and
//!   a keep-alive connection idle for that long is closed (slow and idle clients
//!   cannot pin connections);
//! - a cap on the size of a request head and on each connection's read buffer;
//! - hyper's own error answers (400, 414, 431 for heads it cannot parse) sent
//!   as the service's JSON errors, like every other error.
//!
//! Shutdown: on the signal the service turns unready and keeps accepting for
//! `shutdown_delay` while every answer carries `Connection: close` (see
//! [`crate::routes`]), so clients move to other pods. Then it stops accepting;
//! a request that still arrives on an open keep-alive connection is answered
//! (with `Connection: close`), idle connections close after the header timeout,
//! and the process exits once every connection is closed or at `drain_timeout`.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};

use crate::routes::{App, Flags};
use crate::telemetry::LogThrottle;

/// Largest read buffer of one connection: a request head must fit in it, and
/// no client can make a connection hold more.
pub const MAX_READ_BUFFER_BYTES: usize = 64 * 1024;

/// The answer to a connection over the limit.
const TOO_MANY_CONNECTIONS: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\ncontent-length: 92\r\nconnection: close\r\nretry-after: 1\r\n\r\n{\"error\":{\"code\":\"too_many_connections\",\"message\":\"the service is at its connection limit\"}}";

/// How the server treats connections.
#[derive(Debug, Clone, Copy)]
pub struct ServerOptions {
    /// Connections served at once.
    pub max_connections: usize,
    /// Deadline to receive a whole request head; also the keep-alive idle timeout.
    pub header_timeout: Duration,
    /// Largest request head (request line and headers), in bytes.
    pub max_header_bytes: usize,
    /// After the signal: how long to keep accepting while unready.
    pub shutdown_delay: Duration,
    /// After the delay: how long open connections get to finish.
    pub drain_timeout: Duration,
}

static ACCEPT_ERRORS: LogThrottle = LogThrottle::new(Duration::from_secs(5));
static REJECTED: LogThrottle = LogThrottle::new(Duration::from_secs(5));

/// Serves `app` on `listener` until `signal` resolves, then shuts down as the
/// module documentation describes. `flags.draining` is set on the signal.
pub async fn serve(
    listener: TcpListener,
    app: App,
    options: ServerOptions,
    flags: Arc<Flags>,
    signal: impl Future<Output = ()>,
) {
    let max_connections = u32::try_from(options.max_connections.max(1)).unwrap_or(u32::MAX);
    let permits = Arc::new(Semaphore::new(max_connections as usize));
    let (closing_tx, closing_rx) = watch::channel(false);
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(options.header_timeout)
        .max_header_size(options.max_header_bytes)
        .max_buf_size(MAX_READ_BUFFER_BYTES.max(options.max_header_bytes));

    accept_until(
        &listener,
        &app,
        &builder,
        &permits,
        &closing_rx,
        &flags,
        options,
        signal,
    )
    .await;
    drop(listener);
    let _ = closing_tx.send(true);
    tracing::info!("stopped accepting; answering what arrives on open connections");
    match tokio::time::timeout(options.drain_timeout, permits.acquire_many(max_connections)).await {
        Ok(_) => tracing::info!("drained; bye"),
        Err(_) => tracing::warn!(
            drain_timeout = ?options.drain_timeout,
            open = max_connections as usize - permits.available_permits(),
            "connections still open at the drain deadline; exiting"
        ),
    }
}

#[allow(clippy::too_many_arguments)] // The loop's whole context, passed once.
async fn accept_until(
    listener: &TcpListener,
    app: &App,
    builder: &http1::Builder,
    permits: &Arc<Semaphore>,
    closing: &watch::Receiver<bool>,
    flags: &Flags,
    options: ServerOptions,
    signal: impl Future<Output = ()>,
) {
    let signal = signal;
    tokio::pin!(signal);
    let delay = tokio::time::sleep(Duration::MAX / 4);
    tokio::pin!(delay);
    let mut signalled = false;
    loop {
        tokio::select! {
            () = &mut signal, if !signalled => {
                signalled = true;
                flags.draining.store(true, Ordering::Relaxed);
                tracing::info!(shutdown_delay = ?options.shutdown_delay, "termination requested: unready, draining");
                delay.as_mut().reset(tokio::time::Instant::now() + options.shutdown_delay);
            }
            () = &mut delay, if signalled => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => match Arc::clone(permits).try_acquire_owned() {
                    Ok(permit) => {
                        let connection = serve_connection(stream, app.clone(), builder.clone(), closing.clone());
                        tokio::spawn(async move {
                            connection.await;
                            drop(permit);
                        });
                    }
                    Err(_) => reject(&stream, options.max_connections),
                },
                Err(error) => {
                    if let Some(held_back) = ACCEPT_ERRORS.admit() {
                        tracing::warn!(%error, held_back, "accepting a connection failed");
                    }
                    // Out of file descriptors or memory: give connections time to close.
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        }
    }
}

/// Answers a connection over the limit without reading it, and closes it.
fn reject(stream: &TcpStream, limit: usize) {
    let _ = stream.try_write(TOO_MANY_CONNECTIONS);
    if let Some(held_back) = REJECTED.admit() {
        tracing::warn!(
            limit,
            held_back,
            "connection limit reached: connections refused"
        );
    }
}

async fn serve_connection(
    stream: TcpStream,
    app: App,
    builder: http1::Builder,
    mut closing: watch::Receiver<bool>,
) {
    let _ = stream.set_nodelay(true);
    let io = TokioIo::new(JsonParseErrors::new(stream));
    let connection = builder.serve_connection(io, TowerToHyperService::new(app));
    tokio::pin!(connection);
    tokio::select! {
        _ = connection.as_mut() => return,
        _ = closing.wait_for(|closing| *closing) => {}
    }
    // Still answers what arrives (with `Connection: close`); an idle
    // connection ends at the header timeout.
    let _ = connection.await;
}

/// A connection's stream that rewrites hyper's automatic answers to request
/// heads it cannot parse (empty 400, 414 and 431) into the service's JSON
/// errors. hyper writes such an answer alone, as the last write of the
/// connection.
struct JsonParseErrors<S> {
    inner: S,
    /// A replacement being written, how much of it is written, and the length
    /// of the original to report once it is.
    replacement: Option<(Vec<u8>, usize, usize)>,
}

impl<S> JsonParseErrors<S> {
    fn new(inner: S) -> Self {
        Self {
            inner,
            replacement: None,
        }
    }
}

/// The JSON answer replacing one of hyper's automatic error heads, if `head` is one.
fn json_parse_error(head: &[u8]) -> Option<Vec<u8>> {
    let is_automatic = |status: &[u8]| {
        head.starts_with(b"HTTP/1.1 ")
            && head.get(9..12) == Some(status)
            && head.ends_with(b"\r\n\r\n")
            && head
                .windows(19)
                .any(|window| window.eq_ignore_ascii_case(b"content-length: 0\r\n"))
    };
    let (status, code, message) = if is_automatic(b"431") {
        (
            "431 Request Header Fields Too Large",
            "headers_too_large",
            "the request line and headers are too large or too many: send fewer or smaller headers",
        )
    } else if is_automatic(b"414") {
        (
            "414 URI Too Long",
            "uri_too_long",
            "the URI is too long: shorten the path and query",
        )
    } else if is_automatic(b"400") {
        (
            "400 Bad Request",
            "bad_request",
            "the request line or a header is malformed: send valid HTTP/1.1",
        )
    } else {
        return None;
    };
    let body = format!(r#"{{"error":{{"code":"{code}","message":"{message}"}}}}"#);
    Some(
        format!(
            "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        )
        .into_bytes(),
    )
}

impl<S: AsyncRead + Unpin> AsyncRead for JsonParseErrors<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for JsonParseErrors<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        if this.replacement.is_none()
            && buf.len() < 1024
            && buf.starts_with(b"HTTP/1.1 4")
            && let Some(replacement) = json_parse_error(buf)
        {
            this.replacement = Some((replacement, 0, buf.len()));
        }
        if let Some((replacement, written, original)) = &mut this.replacement {
            while *written < replacement.len() {
                let n = ready!(Pin::new(&mut this.inner).poll_write(cx, &replacement[*written..]))?;
                if n == 0 {
                    return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
                }
                *written += n;
            }
            let original = *original;
            this.replacement = None;
            return Poll::Ready(Ok(original));
        }
        Pin::new(&mut this.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    // Not vectored: hyper then writes each answer's head as one buffer, which
    // is what the rewrite looks at.
    fn is_write_vectored(&self) -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn automatic_error_heads_become_json() {
        let head = b"HTTP/1.1 431 Request Header Fields Too Large\r\nconnection: close\r\ncontent-length: 0\r\ndate: Sun, 29 Nov 2026 15:00:00 GMT\r\n\r\n";
        let answer =
            String::from_utf8(json_parse_error(head).unwrap_or_default()).unwrap_or_default();
        assert!(answer.starts_with("HTTP/1.1 431 "), "{answer}");
        let body = answer.split("\r\n\r\n").nth(1).unwrap_or_default();
        let json: serde_json::Value = serde_json::from_str(body).unwrap_or_default();
        assert_eq!(json["error"]["code"], "headers_too_large");
        assert!(answer.contains(&format!("content-length: {}\r\n", body.len())));
        // A handler's own 400 has a body and is left alone.
        assert!(
            json_parse_error(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 60\r\n\r\n").is_none()
        );
        assert!(json_parse_error(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n").is_none());
    }
}
