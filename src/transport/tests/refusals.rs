//! Refusals: another CA, a Hello name not in the certificate, another
//! cluster (and its log line), another ALPN.

use std::io;
use std::sync::Mutex;

use super::*;

#[tokio::test]
async fn a_certificate_of_another_ca_is_refused() {
    let ours = pki();
    let theirs = pki();
    let a = node(&ours, "mine", "node-a").await;
    let b = node(&theirs, "mine", "node-b").await;

    // Each side finds the other's server certificate untrusted.
    let err =
        a.t.call(b.addr(), None, ECHO, Bytes::new())
            .await
            .unwrap_err();
    assert!(matches!(err, TransportError::Tls { .. }), "{err}");
    assert!(err.to_string().contains(&b.addr().to_string()), "{err}");
    let err =
        b.t.call(a.addr(), Some("node-a"), ECHO, Bytes::new())
            .await
            .unwrap_err();
    assert!(matches!(err, TransportError::Tls { .. }), "{err}");
    assert!(err.to_string().contains(&a.addr().to_string()), "{err}");

    // A dialler that trusts both CAs gets past its own check; the
    // listener refuses its client certificate, which the dialler only
    // learns on its first stream.
    let mut both = identity(&theirs, "node-c");
    both.ca_certs.extend(identity(&ours, "node-d").ca_certs);
    let c = start(
        Transport::bind(localhost(), both, opts("mine", "node-c"))
            .await
            .unwrap(),
    )
    .await;
    let err =
        c.t.call(a.addr(), Some("node-a"), ECHO, Bytes::new())
            .await
            .unwrap_err();
    assert!(matches!(err, TransportError::Tls { .. }), "{err}");
    let text = err.to_string();
    assert!(
        text.contains(&a.addr().to_string()) && text.contains("rejected the handshake"),
        "{text}"
    );
    assert!(c.t.connected_peers().is_empty());
    for n in [a, b, c] {
        n.t.close().await;
    }
}

#[tokio::test]
async fn a_hello_name_not_in_the_certificate_is_refused() {
    let p = pki();
    let b = node(&p, "mine", "node-b").await;
    // node-c's certificate, claiming to be node-a.
    let err = Transport::bind(localhost(), identity(&p, "node-c"), opts("mine", "node-a"))
        .await
        .err()
        .unwrap();
    assert!(matches!(err, TransportError::Identity(_)), "{err}");
    let rogue = start(
        Transport::bind_unchecked(localhost(), identity(&p, "node-c"), opts("mine", "node-a"))
            .await
            .unwrap(),
    )
    .await;

    // The listener refuses the rogue dialler and says why.
    let err = rogue
        .t
        .call(b.addr(), Some("node-b"), ECHO, Bytes::new())
        .await
        .unwrap_err();
    assert!(matches!(err, TransportError::Refused { .. }), "{err}");
    let text = err.to_string();
    assert!(
        text.contains(&b.addr().to_string())
            && text.contains("claims to be node 'node-a'")
            && text.contains("not for that name"),
        "{text}"
    );

    // A dialler refuses a rogue listener too, with or without a name.
    let err =
        b.t.call(rogue.addr(), None, ECHO, Bytes::new())
            .await
            .unwrap_err();
    assert!(matches!(err, TransportError::Refused { .. }), "{err}");
    assert!(
        err.to_string().contains("claims to be node 'node-a'"),
        "{err}"
    );
    let err =
        b.t.call(rogue.addr(), Some("node-a"), ECHO, Bytes::new())
            .await
            .unwrap_err();
    assert!(matches!(err, TransportError::Tls { .. }), "{err}");
    assert!(b.t.connected_peers().is_empty());
    rogue.t.close().await;
    b.t.close().await;
}

/// Collects what `tracing` prints while it is the thread's subscriber.
#[derive(Clone, Default)]
struct LogBuf(Arc<Mutex<Vec<u8>>>);

impl io::Write for LogBuf {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for LogBuf {
    type Writer = LogBuf;
    fn make_writer(&'a self) -> LogBuf {
        self.clone()
    }
}

// Current-thread runtime: the listener's tasks log on this thread, so the
// thread-local subscriber sees them.
#[tokio::test(flavor = "current_thread")]
async fn another_cluster_is_refused_and_logged() {
    let logs = LogBuf::default();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(logs.clone())
        .with_ansi(false)
        .with_max_level(tracing::Level::WARN)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let p = pki();
    let b = node(&p, "mine", "node-b").await;
    let c = node(&p, "other", "node-c").await;
    let err =
        c.t.call(b.addr(), Some("node-b"), ECHO, Bytes::new())
            .await
            .unwrap_err();
    assert!(matches!(err, TransportError::Refused { .. }), "{err}");
    let text = err.to_string();
    assert!(
        text.contains(&b.addr().to_string())
            && text.contains("belongs to cluster 'other', we are 'mine'"),
        "{text}"
    );
    let err =
        b.t.call(c.addr(), None, ECHO, Bytes::new())
            .await
            .unwrap_err();
    assert!(matches!(err, TransportError::Refused { .. }), "{err}");
    assert!(
        err.to_string()
            .contains("belongs to cluster 'mine', we are 'other'"),
        "{err}"
    );

    // The listener logs its refusal in its own task, which may run after
    // the caller already has its answer.
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    let line = loop {
        let logged = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
        let found = logged
            .lines()
            .find(|l| l.contains("refused a replication peer") && l.contains("cluster 'other'"))
            .map(str::to_owned);
        match found {
            Some(line) => break line,
            None if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(std::time::Duration::from_millis(20)).await
            }
            None => panic!("no refusal in the log:\n{logged}"),
        }
    };
    assert!(line.contains("WARN"), "{line}");
    assert!(line.contains(&c.addr().to_string()), "{line}");
    b.t.close().await;
    c.t.close().await;
}

#[tokio::test]
async fn another_alpn_is_refused() {
    let p = pki();
    let b = node(&p, "mine", "node-b").await;
    let id = identity(&p, "node-a");
    let mut tls = rustls::ClientConfig::builder_with_provider(crate::tls::crypto_provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_root_certificates(id.root_store().unwrap())
        .with_client_auth_cert(id.cert_chain.clone(), id.key.clone_key())
        .unwrap();
    tls.alpn_protocols = vec![b"quorate/2".to_vec()];
    let quic = quinn::crypto::rustls::QuicClientConfig::try_from(tls).unwrap();
    let mut client = quinn::Endpoint::client(localhost()).unwrap();
    client.set_default_client_config(quinn::ClientConfig::new(Arc::new(quic)));
    let err = client
        .connect(b.addr(), "node-b")
        .unwrap()
        .await
        .unwrap_err();
    let err = super::tls::classify(b.addr(), err);
    assert!(matches!(err, TransportError::Refused { .. }), "{err}");
    assert!(
        err.to_string().contains("does not speak quorate/1"),
        "{err}"
    );
    b.t.close().await;
}
