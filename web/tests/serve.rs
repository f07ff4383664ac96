//! `web::serve` against real slow clients over TCP: a declared body over the limit, headers
//! trickled, a body at a byte at a time, an idle keep-alive connection, and more connections
//! than the cap; and the client address it hands the login throttle. Timeouts are short here;
//! every wait polls with a generous deadline.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::{Harness, Setup};
use kiln_web::{ConsoleConfig, ServeOptions};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

/// Long enough for anything that should happen to happen on a loaded machine.
const DEADLINE: Duration = Duration::from_secs(30);

struct Server {
    address: SocketAddr,
    shutdown: CancellationToken,
    done: tokio::task::JoinHandle<std::io::Result<()>>,
    harness: Harness,
}

impl Server {
    async fn stop(self) {
        self.shutdown.cancel();
        tokio::time::timeout(DEADLINE, self.done)
            .await
            .expect("the server stops")
            .unwrap()
            .unwrap();
    }
}

async fn serve(options: ServeOptions) -> Server {
    let harness = common::start(Setup {
        dags: &[("demo.toml", common::TWO_TASK_DAG)],
        console: ConsoleConfig::new(Some("secret".to_owned()), None),
        ..Setup::default()
    })
    .await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let shutdown = CancellationToken::new();
    let done = tokio::spawn(kiln_web::serve(
        listener,
        harness.state.clone(),
        options,
        shutdown.clone(),
    ));
    Server {
        address,
        shutdown,
        done,
        harness,
    }
}

fn options(header: u64, body: u64, connections: usize) -> ServeOptions {
    ServeOptions {
        header_read_timeout: Duration::from_millis(header),
        body_timeout: Duration::from_millis(body),
        max_connections: connections,
    }
}

/// What the server sent until it closed the connection (or the deadline passed: `None`).
async fn read_to_close(stream: &mut TcpStream) -> Option<String> {
    let mut received = Vec::new();
    let read = tokio::time::timeout(DEADLINE, async {
        let mut buffer = [0u8; 4096];
        loop {
            match stream.read(&mut buffer).await {
                Ok(0) | Err(_) => return,
                Ok(count) => received.extend_from_slice(&buffer[..count]),
            }
        }
    })
    .await;
    read.ok()
        .map(|()| String::from_utf8_lossy(&received).into_owned())
}

/// Reads one response's head and its `Content-Length` body; answers its status line.
async fn read_response(stream: &mut TcpStream) -> String {
    let mut received = Vec::new();
    let mut buffer = [0u8; 4096];
    tokio::time::timeout(DEADLINE, async {
        loop {
            if let Some(end) = received.windows(4).position(|window| window == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&received[..end]).into_owned();
                let length: usize = head
                    .lines()
                    .find_map(|line| {
                        let (name, value) = line.split_once(':')?;
                        name.eq_ignore_ascii_case("content-length")
                            .then(|| value.trim().parse().ok())?
                    })
                    .unwrap_or(0);
                if received.len() >= end + 4 + length {
                    return head.lines().next().unwrap_or_default().to_owned();
                }
            }
            let count = stream.read(&mut buffer).await.unwrap();
            assert!(count > 0, "closed mid-response: {received:?}");
            received.extend_from_slice(&buffer[..count]);
        }
    })
    .await
    .expect("a response arrives")
}

const LIST_DAGS: &[u8] = b"GET /api/v1/dags HTTP/1.1\r\nHost: kiln\r\n\r\n";

#[tokio::test]
async fn a_declared_body_over_the_limit_is_refused_before_it_is_read() {
    // A body time far past the deadline: an answer at all means it came without waiting.
    let server = serve(options(60_000, 600_000, 64)).await;
    for (path, token) in [
        (
            "/api/v1/exec/logs",
            "Authorization: Bearer worker-secret\r\n",
        ),
        ("/api/v1/dags/demo/runs", ""),
        ("/login", ""),
    ] {
        let mut stream = TcpStream::connect(server.address).await.unwrap();
        let request = format!(
            "POST {path} HTTP/1.1\r\nHost: kiln\r\n{token}Content-Type: application/json\r\n\
             Content-Length: 1000000000000000\r\n\r\n{{}}"
        );
        stream.write_all(request.as_bytes()).await.unwrap();
        let answer = read_to_close(&mut stream)
            .await
            .expect("answered and closed");
        assert!(answer.starts_with("HTTP/1.1 413"), "{path}: {answer}");
        assert!(
            answer.contains("declares 1000000000000000 bytes"),
            "{path}: {answer}"
        );
    }
    server.stop().await;
}

#[tokio::test]
async fn headers_trickled_past_the_header_timeout_close_the_connection() {
    let server = serve(options(500, 60_000, 64)).await;
    let mut stream = TcpStream::connect(server.address).await.unwrap();
    stream
        .write_all(b"GET /api/v1/dags HTTP/1.1\r\n")
        .await
        .unwrap();
    let trickle = async {
        for line in 0u64.. {
            let header = format!("X-Slow-{line}: 1\r\n");
            if stream.write_all(header.as_bytes()).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    tokio::time::timeout(DEADLINE, trickle)
        .await
        .expect("the server closes a connection whose headers never end");
    server.stop().await;
}

#[tokio::test]
async fn a_body_sent_a_byte_at_a_time_gets_408_after_the_body_timeout() {
    let server = serve(options(60_000, 500, 64)).await;
    let mut stream = TcpStream::connect(server.address).await.unwrap();
    stream
        .write_all(
            b"POST /api/v1/exec/logs HTTP/1.1\r\nHost: kiln\r\nAuthorization: Bearer worker-secret\r\n\
              Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n",
        )
        .await
        .unwrap();
    let (mut reader, mut writer) = stream.into_split();
    let trickle = tokio::spawn(async move {
        for _ in 0..1000 {
            if writer.write_all(b" ").await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    let mut received = Vec::new();
    let read = tokio::time::timeout(DEADLINE, reader.read_to_end(&mut received)).await;
    trickle.abort();
    assert!(read.is_ok(), "the connection is closed");
    let answer = String::from_utf8_lossy(&received);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("did not arrive within 0.5 s"), "{answer}");
    server.stop().await;
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed() {
    let server = serve(options(500, 60_000, 64)).await;
    let mut stream = TcpStream::connect(server.address).await.unwrap();
    stream.write_all(LIST_DAGS).await.unwrap();
    assert_eq!(read_response(&mut stream).await, "HTTP/1.1 200 OK");
    // Kept alive after the answer, then closed once it idles past the header timeout.
    assert_eq!(read_to_close(&mut stream).await.as_deref(), Some(""));
    server.stop().await;
}

#[tokio::test]
async fn connections_over_the_cap_wait_until_one_closes() {
    let server = serve(options(60_000, 60_000, 2)).await;
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut stream = TcpStream::connect(server.address).await.unwrap();
        stream.write_all(LIST_DAGS).await.unwrap();
        assert_eq!(read_response(&mut stream).await, "HTTP/1.1 200 OK");
        held.push(stream);
    }
    // The kernel completes the handshake, but the server does not take the connection.
    let mut waiting = TcpStream::connect(server.address).await.unwrap();
    waiting.write_all(LIST_DAGS).await.unwrap();
    let mut byte = [0u8; 1];
    let early = tokio::time::timeout(Duration::from_millis(300), waiting.read(&mut byte)).await;
    assert!(early.is_err(), "answered over the cap: {early:?}");
    drop(held.pop());
    assert_eq!(read_response(&mut waiting).await, "HTTP/1.1 200 OK");
    server.stop().await;
}

#[tokio::test]
async fn the_server_answers_after_a_slowloris_flood() {
    let server = serve(options(500, 500, 16)).await;
    let mut flood = Vec::new();
    for _ in 0..100 {
        let mut stream = TcpStream::connect(server.address).await.unwrap();
        stream
            .write_all(b"GET /api/v1/dags HTTP/1.1\r\nX-Slow: ")
            .await
            .unwrap();
        flood.push(stream);
    }
    // Each flooding connection is closed after the header timeout, freeing its place.
    let mut stream = TcpStream::connect(server.address).await.unwrap();
    stream.write_all(LIST_DAGS).await.unwrap();
    assert_eq!(read_response(&mut stream).await, "HTTP/1.1 200 OK");
    for mut slow in flood {
        assert!(
            read_to_close(&mut slow).await.is_some(),
            "a flooding connection stays open"
        );
    }
    server.stop().await;
}

/// One request on its own connection; answers everything the server sent.
async fn exchange(address: SocketAddr, request: String) -> String {
    let mut stream = TcpStream::connect(address).await.unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    read_to_close(&mut stream)
        .await
        .expect("answered and closed")
}

async fn post_login(address: SocketAddr, token: &str, password: &str) -> String {
    let form = format!("csrf={token}&password={password}");
    exchange(
        address,
        format!(
            "POST /login HTTP/1.1\r\nHost: kiln\r\nConnection: close\r\nCookie: kiln_login={token}\r\n\
             Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n{form}",
            form.len()
        ),
    )
    .await
}

#[tokio::test]
async fn serve_tells_the_login_throttle_the_client_address() {
    let server = serve(options(60_000, 60_000, 64)).await;
    let page = exchange(
        server.address,
        "GET /login HTTP/1.1\r\nHost: kiln\r\nConnection: close\r\n\r\n".to_owned(),
    )
    .await;
    let token = page
        .split("kiln_login=")
        .nth(1)
        .and_then(|rest| rest.split(';').next())
        .unwrap()
        .to_owned();
    for _ in 0..5 {
        let answer = post_login(server.address, &token, "guess").await;
        assert!(answer.starts_with("HTTP/1.1 401"), "{answer}");
    }
    // A login without an address (the app called directly) clears the login's count once its
    // wait is over, but not 127.0.0.1's: that one is known only through `serve`.
    let mut direct = common::Browser::new(&server.harness);
    let deadline = std::time::Instant::now() + DEADLINE;
    loop {
        let csrf = direct.get("/login").await.csrf();
        let page = direct
            .post("/login", Some(&csrf), &[("password", "secret")])
            .await;
        if page.status != axum::http::StatusCode::TOO_MANY_REQUESTS {
            assert_eq!(page.status, axum::http::StatusCode::SEE_OTHER);
            break;
        }
        assert!(std::time::Instant::now() < deadline, "still throttled");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let sixth = post_login(server.address, &token, "guess").await;
    assert!(sixth.starts_with("HTTP/1.1 401"), "{sixth}");
    let seventh = post_login(server.address, &token, "guess").await;
    assert!(seventh.starts_with("HTTP/1.1 429"), "{seventh}");
    assert!(
        seventh.to_ascii_lowercase().contains("retry-after: 2"),
        "{seventh}"
    );
    server.stop().await;
}
