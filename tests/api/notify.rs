//! Notification delivery over real SMTP, to a sink speaking the protocol inside the test: each
//! message arrives once with its recipient, subject, `Message-ID` and both parts; a server that
//! is down is retried until it is back; a refused recipient fails with the reason.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

use crate::helpers::{TestApp, cf, spawn_app_with};

/// One message as the sink received it.
#[derive(Clone, Debug)]
pub struct Received {
    pub from: String,
    pub to: Vec<String>,
    pub data: String,
}

impl Received {
    fn parsed(&self) -> mail_parser::Message<'_> {
        mail_parser::MessageParser::default()
            .parse(self.data.as_bytes())
            .expect("a parsable message")
    }

    /// The subject, decoded.
    pub fn subject(&self) -> String {
        self.parsed().subject().unwrap_or_default().to_owned()
    }

    /// The Message-ID, without angle brackets.
    pub fn message_id(&self) -> String {
        self.parsed().message_id().unwrap_or_default().to_owned()
    }

    /// The plain-text part, decoded.
    pub fn text(&self) -> String {
        self.parsed()
            .body_text(0)
            .map(|t| t.into_owned())
            .unwrap_or_default()
    }

    /// The HTML part, decoded.
    pub fn html(&self) -> String {
        self.parsed()
            .body_html(0)
            .map(|t| t.into_owned())
            .unwrap_or_default()
    }
}

/// A minimal SMTP server: it accepts every message, except for recipients it is told to
/// refuse (550), and keeps them.
#[derive(Clone)]
pub struct Sink {
    received: Arc<Mutex<Vec<Received>>>,
    refuse: Arc<Mutex<Vec<String>>>,
    /// How long the end of each message's data waits for its reply, after how many
    /// messages answered at once.
    delay: Arc<Mutex<(Duration, usize)>>,
}

impl Sink {
    /// A sink on a free port; returns it and the port.
    pub async fn start(refuse: &[&str]) -> (Self, u16) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        (Self::start_on(listener, refuse).await, port)
    }

    /// Holds the final reply of each message after the first `after` this long (a server
    /// that slows down).
    pub fn set_delay(&self, delay: Duration, after: usize) {
        *self.delay.lock().unwrap() = (delay, after);
    }

    pub async fn start_on(listener: TcpListener, refuse: &[&str]) -> Self {
        let sink = Self {
            received: Arc::default(),
            refuse: Arc::new(Mutex::new(refuse.iter().map(|s| s.to_string()).collect())),
            delay: Arc::default(),
        };
        let serving = sink.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let sink = serving.clone();
                tokio::spawn(async move { sink.session(stream).await });
            }
        });
        sink
    }

    async fn session(&self, stream: tokio::net::TcpStream) {
        let (read, mut write) = stream.into_split();
        let mut lines = BufReader::new(read).lines();
        let _ = write.write_all(b"220 sink ESMTP\r\n").await;
        let (mut from, mut to) = (String::new(), Vec::new());
        while let Ok(Some(line)) = lines.next_line().await {
            let upper = line.to_ascii_uppercase();
            let reply: &[u8] = if upper.starts_with("EHLO") || upper.starts_with("HELO") {
                b"250-sink\r\n250 8BITMIME\r\n"
            } else if upper.starts_with("MAIL FROM:") {
                from = line[10..].trim().to_owned();
                to.clear();
                b"250 OK\r\n"
            } else if upper.starts_with("RCPT TO:") {
                let address = line[8..].trim().trim_matches(['<', '>']).to_owned();
                let refused = self.refuse.lock().unwrap().contains(&address);
                if refused {
                    b"550 5.1.1 no such mailbox\r\n"
                } else {
                    to.push(address);
                    b"250 OK\r\n"
                }
            } else if upper == "DATA" {
                let _ = write.write_all(b"354 go on\r\n").await;
                let mut data = String::new();
                while let Ok(Some(l)) = lines.next_line().await {
                    if l == "." {
                        break;
                    }
                    // Dot-stuffing (RFC 5321 4.5.2).
                    data.push_str(
                        l.strip_prefix('.')
                            .filter(|_| l.starts_with(".."))
                            .unwrap_or(&l),
                    );
                    data.push('\n');
                }
                // The data is here; a slow server only answers late (a sender that dies
                // meanwhile never learns it was received).
                let count = {
                    let mut received = self.received.lock().unwrap();
                    received.push(Received {
                        from: from.clone(),
                        to: to.clone(),
                        data,
                    });
                    received.len()
                };
                let (delay, after) = *self.delay.lock().unwrap();
                if count > after && !delay.is_zero() {
                    tokio::time::sleep(delay).await;
                }
                b"250 queued\r\n"
            } else if upper == "QUIT" {
                let _ = write.write_all(b"221 bye\r\n").await;
                return;
            } else {
                b"250 OK\r\n"
            };
            if write.write_all(reply).await.is_err() {
                return;
            }
        }
    }

    pub fn messages(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }
}

async fn app_sending_to(port: u16) -> TestApp {
    spawn_app_with(move |c| {
        c.smtp_url = Some(format!("smtp://127.0.0.1:{port}"));
        c.smtp_from = "Comune di Ciriè <sportello@comune.cirie.to.it>".to_owned();
    })
    .await
}

async fn register(app: &TestApp, n: u32, email: &str) -> String {
    let r = app
        .client
        .post(app.url("/v1/registrations"))
        .json(&json!({"codice_fiscale": cf(n), "name": "Giulia Neri", "email": email}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    r.json::<Value>().await.unwrap()["registration_id"]
        .as_str()
        .unwrap()
        .to_owned()
}

async fn outbox_row(app: &TestApp, recipient: &str) -> (String, String, i32, Option<String>) {
    sqlx::query_as(
        "select id, status, attempts, last_error from notification_outbox where recipient = $1",
    )
    .bind(recipient)
    .fetch_one(app.services.db.pool())
    .await
    .unwrap()
}

pub async fn wait_for(what: &str, within: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !done() {
        assert!(
            Instant::now() < deadline,
            "{what} did not happen in {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_activation_code_arrives_by_email_once() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let sink = Sink::start_on(listener, &[]).await;
    let app = app_sending_to(port).await;
    let registration = register(&app, 4000, "giulia.neri@example.it").await;
    wait_for("delivery", Duration::from_secs(10), || {
        !sink.messages().is_empty()
    })
    .await;
    // Nothing more arrives later: one message, once.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let messages = sink.messages();
    assert_eq!(messages.len(), 1, "{messages:?}");
    let m = &messages[0];
    assert_eq!(m.to, vec!["giulia.neri@example.it".to_owned()]);
    assert!(
        m.from.contains("sportello@comune.cirie.to.it"),
        "{}",
        m.from
    );
    let (id, status, attempts, _) = outbox_row(&app, "giulia.neri@example.it").await;
    assert_eq!((status.as_str(), attempts), ("sent", 1));
    assert!(
        m.data
            .contains(&format!("Message-ID: <{id}@comune.cirie.to.it>")),
        "{}",
        m.data
    );
    assert!(
        m.data
            .contains("Subject: Codice di attivazione del tuo accesso ai servizi online")
    );
    assert!(m.data.contains("Content-Type: multipart/alternative"));
    assert!(m.data.contains("Content-Type: text/plain"));
    assert!(m.data.contains("Content-Type: text/html"));
    // The code in the e-mail is the one that activates the registration.
    let payload: String =
        sqlx::query_scalar("select payload from notification_outbox where id = $1")
            .bind(&id)
            .fetch_one(app.services.db.pool())
            .await
            .unwrap();
    let code = serde_json::from_str::<Value>(&payload).unwrap()["code"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(m.data.contains(&code));
    let activated = app
        .client
        .post(app.url("/v1/registrations/activate"))
        .json(&json!({"registration_id": registration, "code": code}))
        .send()
        .await
        .unwrap();
    assert_eq!(activated.status(), 201);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_waits_while_the_smtp_server_is_down_and_arrives_once_it_is_back() {
    // Bind a port without listening: connections to it are refused for now, and no other
    // test's `bind(0)` can be given it meanwhile (a port that was merely closed could be, and
    // that test's sink would then receive this one's message).
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let port = socket.local_addr().unwrap().port();
    let app = app_sending_to(port).await;
    register(&app, 4010, "paziente@example.it").await;
    let db = app.services.db.clone();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, status, attempts, error) = outbox_row(&app, "paziente@example.it").await;
        if attempts >= 2 {
            assert_eq!(status, "pending", "a refused connection is temporary");
            assert!(error.is_some(), "the reason is kept");
            break;
        }
        assert!(Instant::now() < deadline, "no retry happened");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    drop(db);
    let listener = socket.listen(16).unwrap();
    let sink = Sink::start_on(listener, &[]).await;
    wait_for(
        "delivery after the server came back",
        Duration::from_secs(20),
        || !sink.messages().is_empty(),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(sink.messages().len(), 1, "delivered once");
    let (_, status, _, _) = outbox_row(&app, "paziente@example.it").await;
    assert_eq!(status, "sent");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_recipient_fails_with_the_reason_and_is_not_retried() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let sink = Sink::start_on(listener, &["nessuno@example.it"]).await;
    let app = app_sending_to(port).await;
    register(&app, 4020, "nessuno@example.it").await;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, status, attempts, error) = outbox_row(&app, "nessuno@example.it").await;
        if status == "failed" {
            assert_eq!(attempts, 1, "a permanent failure is not retried");
            assert!(error.unwrap_or_default().contains("550"));
            break;
        }
        assert!(Instant::now() < deadline, "the message did not fail");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(sink.messages().is_empty());
}
