//! Bounded resources: body limits, rate limits, quotas, slow clients, search budgets, and a
//! flood against the real binary. Each test sets the limits it is about; the others run with
//! rate limits off (see `helpers::spawn_app_with`).

use std::time::{Duration, Instant};

use futures_util::StreamExt as _;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::helpers::{TestApp, cf, spawn_app, spawn_app_with};
use crate::process::ServerProcess;

fn host(app: &TestApp) -> String {
    app.base.trim_start_matches("http://").to_owned()
}

/// Reads until the server closes the connection, or `within` passes; returns what it sent and
/// whether it closed.
async fn read_until_closed(stream: &mut TcpStream, within: Duration) -> (String, bool) {
    let mut received = Vec::new();
    let deadline = Instant::now() + within;
    let mut buf = [0u8; 4096];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return (String::from_utf8_lossy(&received).into(), true),
            Ok(Ok(n)) => received.extend_from_slice(&buf[..n]),
            Err(_) => return (String::from_utf8_lossy(&received).into(), false),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_bodies_past_64_kib_are_413_and_json_routes_take_no_files() {
    let app = spawn_app().await;
    let citizen = app.citizen(3000).await;
    // Just past the limit, so it is written whole before the answer comes.
    let big = "x".repeat(66 * 1024);
    for (token, path) in [
        (None, "/v1/registrations"),
        (Some(&citizen), "/v1/dossiers"),
    ] {
        let mut request = app
            .client
            .post(app.url(path))
            .json(&json!({"subject": big}));
        if let Some(t) = token {
            request = request.bearer_auth(t);
        }
        let r = request.send().await.unwrap();
        assert_eq!(r.status(), 413, "{path}");
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["error"]["code"], "payload_too_large");
    }
    // A body declared at 10 MiB is refused after the limit, without waiting for the rest.
    let mut stream = TcpStream::connect(host(&app)).await.unwrap();
    let head = format!(
        "POST /v1/registrations HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n",
        host(&app),
        10 * 1024 * 1024
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    // The server may answer, and close, before all of it is written.
    let _ = stream.write_all(&vec![b' '; 80 * 1024]).await;
    let (answer, _) = read_until_closed(&mut stream, Duration::from_secs(5)).await;
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    // A multipart file sent to a JSON route is refused before its body is read.
    let form = reqwest::multipart::Form::new().part(
        "file",
        // Small enough to be sent whole before the answer: the refusal does not wait for it.
        reqwest::multipart::Part::bytes(vec![b'a'; 16 * 1024]),
    );
    let r = app
        .client
        .post(app.url("/v1/dossiers"))
        .bearer_auth(&citizen)
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "invalid_body");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anonymous_routes_are_limited_per_address_and_searches_per_caller() {
    let app = spawn_app_with(|c| {
        c.rate_anonymous = 3;
        c.rate_search = 5;
        c.trusted_proxies = vec!["127.0.0.1/32".parse().unwrap()];
    })
    .await;
    let register = |client: &'static str, n: u32| {
        let app = &app;
        async move {
            app.client
                .post(app.url("/v1/registrations"))
                .header("x-forwarded-for", client)
                .json(&json!({"codice_fiscale": cf(n), "name": "Rita", "email": format!("r{n}@example.it")}))
                .send()
                .await
                .unwrap()
        }
    };
    for n in 0..3 {
        assert_eq!(register("203.0.113.1", 3010 + n).await.status(), 202);
    }
    let limited = register("203.0.113.1", 3013).await;
    // Guessing tokens from that address is limited by the same allowance.
    let guessed = app
        .client
        .get(app.url("/v1/me"))
        .header("x-forwarded-for", "203.0.113.1")
        .bearer_auth("fsc_guess")
        .send()
        .await
        .unwrap();
    assert_eq!(guessed.status(), 429);
    assert_eq!(limited.status(), 429);
    let wait: u64 = limited.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&wait), "{wait}");
    // Another client behind the same proxy has its own allowance.
    assert_eq!(register("203.0.113.2", 3014).await.status(), 202);

    // Searches count per caller: a whole town hall behind one address is not one client.
    let first = app.staff(&["edilizia"]).await;
    let second = app.staff(&["edilizia"]).await;
    for _ in 0..5 {
        assert_eq!(app.search(&first, &[("q", "parere")]).await.status(), 200);
    }
    let limited = app.search(&first, &[("q", "parere")]).await;
    assert_eq!(limited.status(), 429);
    assert!(limited.headers().contains_key("retry-after"));
    assert_eq!(app.search(&second, &[("q", "parere")]).await.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploads_are_limited_per_caller_and_by_quota() {
    let app = spawn_app_with(|c| {
        c.upload_quota_mib = 1;
        c.rate_upload = 4;
    })
    .await;
    let citizen = app.citizen(3020).await;
    let staff = app.staff(&["edilizia"]).await;
    let d = app.open_dossier(&citizen, "cila", &cf(3020)).await;
    let d = d["id"].as_str().unwrap();
    let upload = |token: String, size: usize| {
        let app = &app;
        async move {
            app.upload(
                &token,
                &format!("/v1/dossiers/{d}/documents"),
                vec![b'a'; size],
                "a.txt",
                &[("visibility", "public")],
            )
            .await
        }
    };
    assert_eq!(upload(citizen.clone(), 600 * 1024).await.status(), 201);
    let over = upload(citizen.clone(), 600 * 1024).await;
    assert_eq!(over.status(), 413);
    let body: Value = over.json().await.unwrap();
    assert_eq!(body["error"]["code"], "quota_exceeded");
    // Staff upload for the office, outside any quota.
    assert_eq!(upload(staff.clone(), 2 * 1024 * 1024).await.status(), 201);
    // The fifth upload in a minute is one too many.
    assert_eq!(upload(staff.clone(), 10).await.status(), 201);
    assert_eq!(upload(staff.clone(), 10).await.status(), 201);
    assert_eq!(upload(staff.clone(), 10).await.status(), 201);
    assert_eq!(upload(staff.clone(), 10).await.status(), 429);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_clients_are_cut_off_and_a_steady_upload_goes_through() {
    let app = spawn_app_with(|c| {
        c.header_timeout_seconds = 1;
        c.body_idle_seconds = 1;
        c.body_min_rate = 4000;
        c.body_rate_window_ms = 500;
    })
    .await;
    let citizen = app.citizen(3030).await;
    let d = app.open_dossier(&citizen, "cila", &cf(3030)).await;
    let d = d["id"].as_str().unwrap().to_owned();

    // Headers that never end.
    let mut stream = TcpStream::connect(host(&app)).await.unwrap();
    stream
        .write_all(format!("GET /health HTTP/1.1\r\nHost: {}\r\nX-Slow: ", host(&app)).as_bytes())
        .await
        .unwrap();
    let (_, closed) = read_until_closed(&mut stream, Duration::from_secs(5)).await;
    assert!(closed, "unfinished headers: the connection is closed");

    // A body that stalls, and one that trickles: cut off, nothing stored.
    let upload_head = |length: usize| {
        format!(
            "POST /v1/dossiers/{d}/documents HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {citizen}\r\n\
             Content-Type: multipart/form-data; boundary=XyZ\r\nContent-Length: {length}\r\n\r\n\
             --XyZ\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.txt\"\r\n\r\n",
            host(&app)
        )
    };
    let mut stalled = TcpStream::connect(host(&app)).await.unwrap();
    stalled
        .write_all(upload_head(100_000).as_bytes())
        .await
        .unwrap();
    stalled.write_all(&[b'a'; 1000]).await.unwrap();
    let (answer, closed) = read_until_closed(&mut stalled, Duration::from_secs(6)).await;
    assert!(closed, "a stalled body ends its request: {answer}");

    let mut trickle = TcpStream::connect(host(&app)).await.unwrap();
    trickle
        .write_all(upload_head(100_000).as_bytes())
        .await
        .unwrap();
    let mut closed = false;
    for _ in 0..40 {
        // 20 bytes every 200 ms: 100 bytes/s, never idle for a second.
        if trickle.write_all(&[b'a'; 20]).await.is_err() {
            closed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        let mut buf = [0u8; 512];
        if let Ok(Ok(n)) =
            tokio::time::timeout(Duration::from_millis(1), trickle.read(&mut buf)).await
            && (n == 0 || String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 4"))
        {
            closed = true;
            break;
        }
    }
    assert!(closed, "a trickled body is cut off");

    // Slow but steady: 256 KiB at about 64 KiB/s is well over the minimum rate.
    let chunks: Vec<Result<bytes::Bytes, std::io::Error>> = (0..32)
        .map(|_| Ok(bytes::Bytes::from(vec![b'b'; 8 * 1024])))
        .collect();
    let stream = futures_util::stream::iter(chunks).then(|chunk| async move {
        tokio::time::sleep(Duration::from_millis(125)).await;
        chunk
    });
    let part = reqwest::multipart::Part::stream_with_length(
        reqwest::Body::wrap_stream(stream),
        256 * 1024,
    )
    .file_name("scansione.txt");
    let form = reqwest::multipart::Form::new()
        .part("file", part)
        .text("visibility", "public");
    let r = app
        .client
        .post(app.url(&format!("/v1/dossiers/{d}/documents")))
        .bearer_auth(&citizen)
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
    let documents: Value = app
        .get(&citizen, &format!("/v1/dossiers/{d}/documents"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        documents["items"].as_array().unwrap().len(),
        1,
        "only the steady upload"
    );
}

/// Every limit set to 0 is off: what the load benchmark's "limits" A/B compares against, and
/// what an operator behind a proxy that already enforces them may choose.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_set_to_zero_are_off() {
    let app = spawn_app_with(|c| {
        c.max_connections = 0;
        c.header_timeout_seconds = 0;
        c.body_idle_seconds = 0;
        c.body_min_rate = 0;
        c.body_rate_window_ms = 200;
        c.search_concurrency = 0;
    })
    .await;
    let citizen = app.citizen(3131).await;
    let d = app.open_dossier(&citizen, "cila", &cf(3131)).await;
    let d = d["id"].as_str().unwrap().to_owned();

    // Headers begun and left unfinished for longer than the shortest limit (1 s) stay open,
    // and are answered once they end; meanwhile two more connections are served.
    let mut slow = TcpStream::connect(host(&app)).await.unwrap();
    slow.write_all(format!("GET /health HTTP/1.1\r\nHost: {}\r\nX-Slow: ", host(&app)).as_bytes())
        .await
        .unwrap();
    let mut others = Vec::new();
    for _ in 0..2 {
        let mut other = TcpStream::connect(host(&app)).await.unwrap();
        other
            .write_all(format!("GET /health HTTP/1.1\r\nHost: {}\r\n\r\n", host(&app)).as_bytes())
            .await
            .unwrap();
        let mut buf = [0u8; 512];
        let n = tokio::time::timeout(Duration::from_secs(5), other.read(&mut buf))
            .await
            .expect("a second connection is served while the first is open")
            .unwrap();
        assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
        others.push(other);
    }
    let (_, closed) = read_until_closed(&mut slow, Duration::from_millis(1500)).await;
    assert!(!closed, "no header timeout");
    slow.write_all(b"1\r\n\r\n").await.unwrap();
    let mut buf = [0u8; 512];
    let n = tokio::time::timeout(Duration::from_secs(5), slow.read(&mut buf))
        .await
        .expect("the finished headers are answered")
        .unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));

    // A body that pauses longer than the shortest idle limit, and arrives slower than any
    // minimum rate, is stored.
    let content = b"--XyZ\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.txt\"\r\n\r\nparere favorevole\r\n--XyZ--\r\n";
    let mut upload = TcpStream::connect(host(&app)).await.unwrap();
    upload
        .write_all(
            format!(
                "POST /v1/dossiers/{d}/documents HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {citizen}\r\n\
                 Content-Type: multipart/form-data; boundary=XyZ\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                host(&app),
                content.len()
            )
            .as_bytes(),
        )
        .await
        .unwrap();
    upload.write_all(&content[..20]).await.unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    upload.write_all(&content[20..]).await.unwrap();
    let (answer, _) = read_until_closed(&mut upload, Duration::from_secs(5)).await;
    assert!(answer.starts_with("HTTP/1.1 201"), "{answer}");

    // Searches run without a concurrency limit.
    let r = app.search(&citizen, &[("q", "parere")]).await;
    assert_eq!(r.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_search_past_its_time_budget_is_a_503() {
    let app = spawn_app_with(|c| c.search_budget_ms = 0).await;
    let staff = app.staff(&["edilizia"]).await;
    let r = app.search(&staff, &[("q", "parere")]).await;
    assert_eq!(r.status(), 503);
    assert!(r.headers().contains_key("retry-after"));
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "unavailable");
}

/// Resident memory of a process, in KiB (0 once it has ended).
fn resident_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_large_anonymous_bodies_keeps_memory_bounded_and_health_answering() {
    let data = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(data.path());
    let pid = server.child.id();
    let client = reqwest::Client::new();
    let health = format!("{}/health", server.base);
    assert_eq!(client.get(&health).send().await.unwrap().status(), 200);
    let before = resident_kib(pid);
    let peak = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(before));
    let sampling = {
        let peak = peak.clone();
        tokio::spawn(async move {
            for _ in 0..600 {
                peak.fetch_max(resident_kib(pid), std::sync::atomic::Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };
    // 4 rounds of 48 concurrent 4 MiB bodies: buffered whole, 192 MiB at a time.
    let body = bytes::Bytes::from(vec![b' '; 4 * 1024 * 1024]);
    // The flood has a client of its own: a connection the server cuts after a 413 is never
    // reused for /health.
    let flooder = reqwest::Client::new();
    let mut rejected = 0;
    for _round in 0..4 {
        let sends = (0..48).map(|_| {
            let client = flooder.clone();
            let body = body.clone();
            let url = format!("{}/v1/registrations", server.base);
            async move {
                client
                    .post(url)
                    .header("content-type", "application/json")
                    .body(body)
                    .timeout(Duration::from_secs(20))
                    .send()
                    .await
                    .map(|r| r.status().as_u16())
            }
        });
        let during = async {
            let r = client
                .get(&health)
                .timeout(Duration::from_secs(5))
                .send()
                .await
                .unwrap();
            r.status()
        };
        let (statuses, health_status) = tokio::join!(futures_util::future::join_all(sends), during);
        assert_eq!(health_status, 200, "/health answers during the flood");
        // Refused with 413 (or the connection cut after the limit): never taken in.
        for s in statuses {
            match s {
                Ok(status) => {
                    assert!(status == 413 || status == 429, "{status}");
                    rejected += 1;
                }
                Err(_) => rejected += 1,
            }
        }
    }
    assert_eq!(rejected, 4 * 48);
    sampling.abort();
    let grew = peak
        .load(std::sync::atomic::Ordering::Relaxed)
        .saturating_sub(before);
    assert!(
        grew < 96 * 1024,
        "resident memory grew by {grew} KiB under the flood (from {before} KiB)"
    );
    assert_eq!(client.get(&health).send().await.unwrap().status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_range_reads_and_checks_only_the_pieces_it_covers() {
    let app = spawn_app().await;
    let citizen = app.citizen(3040).await;
    let d = app.open_dossier(&citizen, "cila", &cf(3040)).await;
    // 3 MiB of varied bytes: three pieces of 1 MiB.
    let bytes: Vec<u8> = (0..3 * 1024 * 1024u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let doc = app
        .add_document(&citizen, d["id"].as_str().unwrap(), &bytes, "public")
        .await;
    let path = format!("/v1/documents/{}/content", doc["id"].as_str().unwrap());
    let range = |spec: &'static str| {
        let app = &app;
        let (path, citizen) = (path.clone(), citizen.clone());
        async move {
            app.client
                .get(app.url(&path))
                .bearer_auth(&citizen)
                .header("range", spec)
                .send()
                .await
                .unwrap()
        }
    };
    let r = range("bytes=2097152-2097161").await;
    assert_eq!(r.status(), 206);
    assert_eq!(&r.bytes().await.unwrap()[..], &bytes[2_097_152..2_097_162]);

    // One flipped byte in the middle piece: ranges elsewhere are still served, checked; a range
    // over that piece, and the whole content, are refused.
    app.corrupt_blob(doc["sha256"].as_str().unwrap()).await;
    let r = range("bytes=0-9").await;
    assert_eq!(r.status(), 206, "only the first piece is read and checked");
    assert_eq!(&r.bytes().await.unwrap()[..], &bytes[..10]);
    let r = range("bytes=2097152-2097161").await;
    assert_eq!(r.status(), 206);
    let r = range("bytes=1572860-1572870").await;
    assert_eq!(r.status(), 500);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "integrity_error");
    assert_eq!(app.get(&citizen, &path).await.status(), 500);
}
