//! The platform's side of callbacks: sending a signed notification to a channel's callback
//! URL, as the real platform does, including the faulty deliveries a gateway must withstand.

use std::time::Duration;

use time::OffsetDateTime;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::signing::signed_form;

/// How a notification is spoiled, to test the receiving side.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Spoil {
    /// A genuine notification.
    None,
    /// Signed with the wrong secret.
    BadSignature,
    /// Signed correctly but stamped eleven minutes ago.
    Stale,
}

/// Sends one notification (`method` and `fields`, plus `appKey`, `timestamp` and `sign`) as a
/// form POST to `url` (`http://host:port/path`, plain HTTP on loopback). Returns the HTTP
/// status and body of the answer.
pub async fn send_notification(
    url: &str,
    app_key: &str,
    app_secret: &str,
    method: &str,
    fields: &[(&str, &str)],
    spoil: Spoil,
) -> std::io::Result<(u16, String)> {
    let bad = |m: &str| std::io::Error::new(std::io::ErrorKind::InvalidInput, m.to_string());
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| bad("only http:// URLs"))?;
    let (host, path) = rest
        .split_once('/')
        .map(|(h, p)| (h, format!("/{p}")))
        .unwrap_or((rest, "/".into()));
    let at = match spoil {
        Spoil::Stale => OffsetDateTime::now_utc() - time::Duration::minutes(11),
        _ => OffsetDateTime::now_utc(),
    };
    let secret = match spoil {
        Spoil::BadSignature => "not-the-app-secret",
        _ => app_secret,
    };
    let body = signed_form(app_key, secret, method, at, fields);
    let request = format!(
        "POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let mut stream = tokio::time::timeout(
        Duration::from_secs(10),
        tokio::net::TcpStream::connect(host),
    )
    .await
    .map_err(|_| bad("connect timed out"))??;
    stream.write_all(request.as_bytes()).await?;
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut answer))
        .await
        .map_err(|_| bad("the answer timed out"))??;
    let text = String::from_utf8_lossy(&answer).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| bad("not an HTTP answer"))?;
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok((status, body))
}
