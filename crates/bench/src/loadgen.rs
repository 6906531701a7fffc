//! A minimal HTTP/1.1 load generator: keep-alive connections, each sending
//! pre-built requests one after another and timing each response.
//!
//! Requests are built (and signed) before the clock starts, and the client
//! parses only the status line and Content-Length, so that the generator
//! spends as little of the shared CPU as possible.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use bytes::Bytes;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

/// What a run measured.
#[derive(Debug)]
pub struct LoadReport {
    /// Requests answered.
    pub requests: u64,
    /// Responses whose status was not 200.
    pub non_200: u64,
    /// Wall time from the first request to the last response.
    pub elapsed: Duration,
    /// Per-request latency, in microseconds.
    pub latencies_us: Vec<u64>,
}

/// Builds one raw HTTP/1.1 POST.
pub fn build_request(host: &str, path: &str, headers: &[(&str, String)], body: &[u8]) -> Bytes {
    let mut req = format!(
        "POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (name, value) in headers {
        req.push_str(name);
        req.push_str(": ");
        req.push_str(value);
        req.push_str("\r\n");
    }
    req.push_str("\r\n");
    let mut bytes = req.into_bytes();
    bytes.extend_from_slice(body);
    Bytes::from(bytes)
}

/// Sends every request of `requests` over `connections` keep-alive connections.
pub async fn run(
    addr: SocketAddr,
    requests: Arc<Vec<Bytes>>,
    connections: usize,
) -> anyhow::Result<LoadReport> {
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(connections);
    for _ in 0..connections {
        let requests = Arc::clone(&requests);
        let next = Arc::clone(&next);
        tasks.push(tokio::spawn(async move {
            connection(addr, &requests, &next).await
        }));
    }
    let mut report = LoadReport {
        requests: 0,
        non_200: 0,
        elapsed: Duration::ZERO,
        latencies_us: Vec::with_capacity(requests.len()),
    };
    for task in tasks {
        let (latencies, non_200) = task.await.context("load task panicked")??;
        report.requests += latencies.len() as u64;
        report.non_200 += non_200;
        report.latencies_us.extend(latencies);
    }
    report.elapsed = started.elapsed();
    Ok(report)
}

async fn connection(
    addr: SocketAddr,
    requests: &[Bytes],
    next: &AtomicUsize,
) -> anyhow::Result<(Vec<u64>, u64)> {
    let mut stream = TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let mut buf = vec![0u8; 16 * 1024];
    let mut latencies = Vec::new();
    let mut non_200 = 0;
    loop {
        let i = next.fetch_add(1, Ordering::Relaxed);
        let Some(request) = requests.get(i) else {
            break;
        };
        let sent = Instant::now();
        stream.write_all(request).await?;
        let status = read_response(&mut stream, &mut buf).await?;
        latencies.push(u64::try_from(sent.elapsed().as_micros()).unwrap_or(u64::MAX));
        if status != 200 {
            non_200 += 1;
        }
    }
    Ok((latencies, non_200))
}

/// Reads one response; returns its status code.
async fn read_response(stream: &mut TcpStream, buf: &mut Vec<u8>) -> anyhow::Result<u16> {
    let mut filled = 0;
    let head_end = loop {
        if filled == buf.len() {
            buf.resize(buf.len() * 2, 0);
        }
        let n = stream.read(&mut buf[filled..]).await?;
        if n == 0 {
            bail!("connection closed by the server");
        }
        filled += n;
        if let Some(pos) = find(&buf[..filled], b"\r\n\r\n") {
            break pos + 4;
        }
    };
    let head = std::str::from_utf8(&buf[..head_end]).context("non-UTF-8 response head")?;
    let status: u16 = head
        .get(9..12)
        .and_then(|s| s.parse().ok())
        .context("malformed status line")?;
    let length = head
        .lines()
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse::<usize>().ok())?
        })
        .unwrap_or(0);
    let mut remaining = (head_end + length).saturating_sub(filled);
    while remaining > 0 {
        let take = remaining.min(buf.len());
        let n = stream.read(&mut buf[..take]).await?;
        if n == 0 {
            bail!("connection closed mid-body");
        }
        remaining -= n;
    }
    Ok(status)
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// `GET path` over a fresh connection; returns the body.
pub async fn get(addr: SocketAddr, path: &str) -> anyhow::Result<String> {
    let mut stream = TcpStream::connect(addr).await?;
    stream
        .write_all(
            format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await?;
    let text = String::from_utf8(response).context("non-UTF-8 response")?;
    let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    Ok(body.to_owned())
}
