//! A plain HTTP/1.1 proxy in front of the simulator that loses answers: it
//! forwards every request, and for the first matching ones it throws the
//! simulator's answer away and answers 502 instead. The simulator has then
//! acted on a request whose caller saw it fail, as when a response is lost
//! on its way back from HubSpot.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

const BAD_GATEWAY: &[u8] =
    b"HTTP/1.1 502 Bad Gateway\r\ncontent-length: 0\r\nconnection: close\r\n\r\n";

/// The running proxy; stops when dropped.
pub struct LossyProxy {
    /// `http://127.0.0.1:{port}`.
    pub url: String,
    lost: Arc<AtomicU64>,
    task: JoinHandle<()>,
}

impl LossyProxy {
    /// Forwards to `upstream` (`http://host:port`); loses the answers of the
    /// first `times` requests whose request line starts with `line_prefix`
    /// (e.g. `POST /webhooks/v3/1/subscriptions?`).
    pub async fn spawn(upstream: &str, line_prefix: &str, times: u64) -> Self {
        let upstream = upstream
            .strip_prefix("http://")
            .expect("a plain HTTP upstream")
            .to_owned();
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("proxy binds");
        let url = format!("http://{}", listener.local_addr().expect("bound address"));
        let lost = Arc::new(AtomicU64::new(0));
        let line_prefix = line_prefix.to_owned();
        let task = tokio::spawn({
            let lost = Arc::clone(&lost);
            async move {
                while let Ok((client, _)) = listener.accept().await {
                    let upstream = upstream.clone();
                    let line_prefix = line_prefix.clone();
                    let lost = Arc::clone(&lost);
                    tokio::spawn(async move {
                        // A broken connection fails the caller's call, which
                        // the test then reports.
                        let _ = relay(client, &upstream, &line_prefix, &lost, times).await;
                    });
                }
            }
        });
        Self { url, lost, task }
    }

    /// Answers lost so far.
    pub fn lost(&self) -> u64 {
        self.lost.load(Ordering::SeqCst)
    }
}

impl Drop for LossyProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// One request per connection: the answers say `connection: close`.
async fn relay(
    client: TcpStream,
    upstream: &str,
    line_prefix: &str,
    lost: &AtomicU64,
    times: u64,
) -> std::io::Result<()> {
    let mut client = BufReader::new(client);
    let mut request_line = String::new();
    client.read_line(&mut request_line).await?;
    let mut head = request_line.clone();
    let mut length = 0;
    loop {
        let mut line = String::new();
        client.read_line(&mut line).await?;
        if line == "\r\n" || line.is_empty() {
            break;
        }
        let lower = line.to_ascii_lowercase();
        if let Some(value) = lower.strip_prefix("content-length:") {
            length = value.trim().parse().unwrap_or(0);
        }
        if !lower.starts_with("connection:") {
            head.push_str(&line);
        }
    }
    head.push_str("connection: close\r\n\r\n");
    let mut body = vec![0; length];
    client.read_exact(&mut body).await?;

    let mut server = TcpStream::connect(upstream).await?;
    server.write_all(head.as_bytes()).await?;
    server.write_all(&body).await?;
    let mut answer = Vec::new();
    server.read_to_end(&mut answer).await?;

    let lose = request_line.starts_with(line_prefix)
        && lost
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                (n < times).then_some(n + 1)
            })
            .is_ok();
    let client = client.get_mut();
    client
        .write_all(if lose { BAD_GATEWAY } else { &answer })
        .await?;
    client.shutdown().await
}
