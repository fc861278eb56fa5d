//! The client API exposed safely: HTTPS with a certificate made by
//! `quorate tls`, and rqlite's users file (wrong password 401, missing
//! permission 403), on a real node; no password reaches the log.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use serde_json::Value;

use common::cluster::{make_ca, make_node_cert};
use common::{TestNode, QUORATED};

const READER_PASSWORD: &str = "reader-pw-5f1c";
const ADMIN_PASSWORD: &str = "admin-pw-9e2a";

struct Reply {
    status: u16,
    headers: hyper::HeaderMap,
    body: String,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or(Value::Null)
    }
}

/// One HTTPS request that trusts only `ca`.
async fn https(
    addr: SocketAddr,
    ca: &Path,
    method: &str,
    path: &str,
    credentials: Option<(&str, &str)>,
    body: &str,
) -> Result<Reply, String> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca).map_err(|e| e.to_string())? {
        roots
            .add(cert.map_err(|e| e.to_string())?)
            .map_err(|e| e.to_string())?;
    }
    let config = rustls::ClientConfig::builder_with_provider(quorate::tls::crypto_provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| e.to_string())?;
    let stream = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(ServerName::from(addr.ip()), tcp)
        .await
        .map_err(|e| format!("TLS: {e}"))?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(connection);
    let mut request = hyper::Request::builder()
        .method(method)
        .uri(path)
        .header("host", addr.to_string())
        .header("content-type", "application/json");
    if let Some((user, password)) = credentials {
        use base64::Engine;
        let token = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        request = request.header("authorization", format!("Basic {token}"));
    }
    let response = sender
        .send_request(
            request
                .body(Full::new(Bytes::from(body.to_string())))
                .map_err(|e| e.to_string())?,
        )
        .await
        .map_err(|e| e.to_string())?;
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let bytes = response
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    Ok(Reply {
        status,
        headers,
        body: String::from_utf8_lossy(&bytes).into_owned(),
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_and_users_file_guard_the_api() {
    let tls = tempfile::tempdir().unwrap();
    make_ca(tls.path());
    make_node_cert("api", tls.path(), tls.path());
    let ca = tls.path().join("ca.pem");

    let mut node = TestNode::new("secure", "");
    let users = node.dir.path().join("users.json");
    let hash = bcrypt::hash(ADMIN_PASSWORD, 4).unwrap();
    std::fs::write(
        &users,
        serde_json::json!([
            {"username": "reader", "password": READER_PASSWORD, "perms": ["query"]},
            {"username": "admin", "password": hash, "perms": ["all"]},
            {"username": "*", "perms": ["ready"]}
        ])
        .to_string(),
    )
    .unwrap();
    let config = std::fs::read_to_string(&node.config_path).unwrap().replace(
        "[api]\n",
        &format!(
            "[api]\ntls_cert = \"{}\"\ntls_key = \"{}\"\nusers_file = \"{}\"\n",
            tls.path().join("api.pem").display(),
            tls.path().join("api.key").display(),
            users.display()
        ),
    );
    std::fs::write(&node.config_path, config).unwrap();

    // TestNode::start waits over plain HTTP; this node speaks only HTTPS.
    let log = std::fs::File::create(node.log_path()).unwrap();
    node.child = Some(
        Command::new(QUORATED)
            .arg("--config")
            .arg(&node.config_path)
            .arg("--bootstrap")
            .env("RUST_LOG", "debug")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("spawn quorated"),
    );
    let addr: SocketAddr = format!("127.0.0.1:{}", node.api_port).parse().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match https(addr, &ca, "GET", "/readyz", None, "").await {
            Ok(r) if r.status == 200 => break,
            other => {
                assert!(
                    Instant::now() < deadline,
                    "no HTTPS /readyz: {:?}\n{}",
                    other.map(|r| r.status),
                    node.log()
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }

    let admin = Some(("admin", ADMIN_PASSWORD));
    let reader = Some(("reader", READER_PASSWORD));
    let r = https(
        addr,
        &ca,
        "POST",
        "/db/execute",
        admin,
        r#"["CREATE TABLE s (id INTEGER PRIMARY KEY, v TEXT)", "INSERT INTO s VALUES (1, 'x')"]"#,
    )
    .await
    .unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    let r = https(addr, &ca, "GET", "/db/query?q=SELECT+v+FROM+s", reader, "")
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["results"][0]["values"], serde_json::json!([["x"]]));

    // Wrong or missing password: 401 with a challenge.
    for credentials in [
        None,
        Some(("reader", "wrong")),
        Some(("nobody", READER_PASSWORD)),
    ] {
        let r = https(addr, &ca, "GET", "/db/query?q=SELECT+1", credentials, "")
            .await
            .unwrap();
        assert_eq!(r.status, 401, "{credentials:?}: {}", r.body);
        assert_eq!(r.json()["code"], "unauthorized");
        assert_eq!(r.headers["www-authenticate"], "Basic realm=\"rqlite\"");
    }
    // A good password without the permission: 403, and nothing written.
    let r = https(
        addr,
        &ca,
        "POST",
        "/db/execute",
        reader,
        r#"["DELETE FROM s"]"#,
    )
    .await
    .unwrap();
    assert_eq!(r.status, 403, "{}", r.body);
    assert_eq!(r.json()["code"], "forbidden");
    let r = https(addr, &ca, "GET", "/db/backup", reader, "")
        .await
        .unwrap();
    assert_eq!(r.status, 403);
    let r = https(
        addr,
        &ca,
        "GET",
        "/db/query?q=SELECT+count(*)+FROM+s",
        admin,
        "",
    )
    .await
    .unwrap();
    assert_eq!(r.json()["results"][0]["values"], serde_json::json!([[1]]));

    // Clients are told the node's address with its scheme.
    let r = https(addr, &ca, "GET", "/status", admin, "").await.unwrap();
    assert_eq!(r.json()["http"]["addr"], format!("https://{addr}"));
    assert_eq!(r.json()["http"]["auth"], "enabled");
    let r = https(addr, &ca, "GET", "/nodes", admin, "").await.unwrap();
    assert_eq!(r.json()["secure"]["api_addr"], format!("https://{addr}"));

    // Plain HTTP gets no answer from a TLS port.
    let plain = ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(5))
        .build()
        .get(&format!("http://{addr}/readyz"))
        .call();
    assert!(plain.is_err(), "plain HTTP answered on an HTTPS port");
    // A client that does not trust the certificate's CA gets nowhere.
    let other_ca = tempfile::tempdir().unwrap();
    make_ca(other_ca.path());
    let refused = https(
        addr,
        &other_ca.path().join("ca.pem"),
        "GET",
        "/readyz",
        None,
        "",
    )
    .await;
    assert!(refused.is_err(), "a client trusting another CA connected");

    // No secret in the log, even at debug level.
    let log = node.log();
    assert!(log.contains("quorated serving"), "{log}");
    for secret in [READER_PASSWORD, ADMIN_PASSWORD, &hash] {
        assert!(!log.contains(secret), "a password is in the log");
    }
}

#[test]
fn bad_security_settings_stop_the_start_with_the_reason() {
    let cases: [(&str, &str, &str); 3] = [
        (
            "tls_cert = \"/nonexistent/api.pem\"\n",
            "",
            "is set without api.tls_key",
        ),
        (
            "tls_cert = \"/nonexistent/api.pem\"\ntls_key = \"/nonexistent/api.key\"\n",
            "",
            "api.tls_cert /nonexistent/api.pem",
        ),
        (
            "users_file = \"USERS\"\n",
            "[{\"username\": \"a\", \"password\": \"pw-7731\", \"perms\": [\"raed\"]}]",
            "unknown permission \"raed\"",
        ),
    ];
    for (keys, users_text, want) in cases {
        let node = TestNode::new("refused", "");
        let users = node.dir.path().join("users.json");
        std::fs::write(&users, users_text).unwrap();
        let keys = keys.replace("USERS", &users.display().to_string());
        let config = std::fs::read_to_string(&node.config_path)
            .unwrap()
            .replace("[api]\n", &format!("[api]\n{keys}"));
        std::fs::write(&node.config_path, config).unwrap();
        let out = Command::new(QUORATED)
            .arg("--config")
            .arg(&node.config_path)
            .arg("--bootstrap")
            .stdin(Stdio::null())
            .output()
            .expect("run quorated");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{keys}: started");
        assert!(stderr.contains(want), "{keys}: {stderr}");
        assert!(!stderr.contains("pw-7731"), "{stderr}");
    }
}
