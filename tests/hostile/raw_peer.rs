//! A hand-made replication peer: a quinn client holding whatever
//! certificate a test wants and writing frames byte by byte, so tests can
//! send what a real node never would. The frame layout is spelt out here
//! on purpose (u32 big-endian length, version, type, payload): a test that
//! reused the daemon's encoder could not catch the encoder's mistakes.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use quinn::crypto::rustls::QuicClientConfig;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

pub const WIRE_VERSION: u8 = 1;
pub const HELLO: u8 = 1;
pub const REQUEST: u8 = 2;
pub const RESPONSE: u8 = 6;
pub const FAILURE: u8 = 7;
pub const REJECTED: u8 = 8;

/// A client certificate and its key (PEM forms too, for a daemon's config).
pub struct ClientCert {
    pub chain: Vec<CertificateDer<'static>>,
    pub key: PrivateKeyDer<'static>,
    pub cert_pem: String,
    pub key_pem: String,
}

/// A node certificate for `name` signed by the CA that `quorate tls ca`
/// wrote into `tls_dir`, valid from `not_before` to `not_after`: what
/// `quorate tls node` would make, but with any validity a test needs.
/// A certificate for `name` signed by the cluster CA and valid now.
pub fn valid_cert(tls_dir: &Path, name: &str) -> ClientCert {
    let now = time::OffsetDateTime::now_utc();
    signed_cert(
        tls_dir,
        name,
        now - time::Duration::days(1),
        now + time::Duration::days(30),
    )
}

pub fn signed_cert(
    tls_dir: &Path,
    name: &str,
    not_before: time::OffsetDateTime,
    not_after: time::OffsetDateTime,
) -> ClientCert {
    let ca_key_pem = std::fs::read_to_string(tls_dir.join(quorate::tls::CA_KEY_FILE)).unwrap();
    let ca_key = KeyPair::from_pem(&ca_key_pem).unwrap();
    // The CA's subject and constraints as `quorate tls ca` sets them, so
    // the issuer and key identifier match the real CA certificate.
    let mut ca = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, quorate::tls::CA_COMMON_NAME);
    ca.distinguished_name = dn;
    ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let issuer = Issuer::new(ca, ca_key);

    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, name);
    params.distinguished_name = dn;
    params.subject_alt_names = vec![
        SanType::DnsName(name.try_into().unwrap()),
        SanType::IpAddress("127.0.0.1".parse().unwrap()),
    ];
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    params.use_authority_key_identifier_extension = true;
    params.not_before = not_before;
    params.not_after = not_after;
    let key = KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, &issuer).unwrap();
    ClientCert {
        chain: vec![cert.der().clone()],
        key: PrivateKeyDer::try_from(key.serialize_der()).unwrap(),
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    }
}

/// The certificate and key `quorate tls node NAME` wrote into `tls_dir`.
pub fn node_cert(tls_dir: &Path, name: &str) -> ClientCert {
    let cert_pem = std::fs::read_to_string(tls_dir.join(format!("{name}.pem"))).unwrap();
    let key_pem = std::fs::read_to_string(tls_dir.join(format!("{name}.key"))).unwrap();
    ClientCert {
        chain: CertificateDer::pem_slice_iter(cert_pem.as_bytes())
            .map(|c| c.unwrap())
            .collect(),
        key: PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).unwrap(),
        cert_pem,
        key_pem,
    }
}

/// A QUIC client endpoint trusting the cluster CA in `tls_dir`, presenting
/// `cert` (or no certificate at all).
pub fn client(tls_dir: &Path, cert: Option<ClientCert>) -> quinn::Endpoint {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for ca in CertificateDer::pem_file_iter(tls_dir.join(quorate::tls::CA_CERT_FILE)).unwrap() {
        roots.add(ca.unwrap()).unwrap();
    }
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_root_certificates(roots);
    let mut config = match cert {
        Some(c) => builder.with_client_auth_cert(c.chain, c.key).unwrap(),
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![quorate::transport::ALPN.to_vec()];
    let mut endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    let mut transport = quinn::TransportConfig::default();
    transport.max_idle_timeout(Some(Duration::from_secs(10).try_into().unwrap()));
    let mut client =
        quinn::ClientConfig::new(Arc::new(QuicClientConfig::try_from(config).unwrap()));
    client.transport_config(Arc::new(transport));
    endpoint.set_default_client_config(client);
    endpoint
}

/// One frame: length (counting version and type), version, type, payload.
pub fn frame(ty: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = ((payload.len() + 2) as u32).to_be_bytes().to_vec();
    out.extend_from_slice(&[WIRE_VERSION, ty]);
    out.extend_from_slice(payload);
    out
}

/// A Hello payload: protocol number, then the two names, each prefixed by
/// its length in one byte.
pub fn hello(cluster: &str, node: &str) -> Vec<u8> {
    let mut out = quorate::transport::PROTOCOL_VERSION.to_be_bytes().to_vec();
    for name in [cluster, node] {
        out.push(name.len() as u8);
        out.extend_from_slice(name.as_bytes());
    }
    out
}

/// The first frame of what came back, as (type, payload).
pub fn parse_answer(bytes: &[u8]) -> Option<(u8, Vec<u8>)> {
    let len = u32::from_be_bytes(bytes.get(..4)?.try_into().ok()?) as usize;
    let body = bytes.get(4..4 + len)?;
    Some((*body.get(1)?, body.get(2..)?.to_vec()))
}

/// Sends `bytes` on a new stream, finishes it and reads the whole answer.
pub async fn exchange(conn: &quinn::Connection, bytes: &[u8]) -> Result<Vec<u8>, String> {
    // The node's reason for a refusal travels in the connection close.
    let why = |e: &dyn std::fmt::Display| match conn.close_reason() {
        Some(reason) => format!("{e}; {reason}"),
        None => e.to_string(),
    };
    let work = async {
        let (mut send, mut recv) = conn.open_bi().await.map_err(|e| why(&e))?;
        send.write_all(bytes).await.map_err(|e| why(&e))?;
        let _ = send.finish();
        recv.read_to_end(1 << 20).await.map_err(|e| why(&e))
    };
    tokio::time::timeout(Duration::from_secs(15), work)
        .await
        .map_err(|_| "no answer within 15 s".to_string())?
}

/// Dials the node at `addr` (certificate name `server_name`) and trades
/// Hellos. `Ok` with the connection when the node answered with its own
/// Hello; `Err` with what went wrong otherwise.
pub async fn connect_and_hello(
    endpoint: &quinn::Endpoint,
    addr: SocketAddr,
    server_name: &str,
    cluster: &str,
    node: &str,
) -> Result<quinn::Connection, String> {
    let connecting = endpoint
        .connect(addr, server_name)
        .map_err(|e| e.to_string())?;
    let conn = tokio::time::timeout(Duration::from_secs(15), connecting)
        .await
        .map_err(|_| "handshake timed out".to_string())?
        .map_err(|e| format!("handshake: {e}"))?;
    let answer = exchange(&conn, &frame(HELLO, &hello(cluster, node))).await?;
    match parse_answer(&answer) {
        Some((HELLO, _)) => Ok(conn),
        other => Err(format!(
            "no hello back: {other:?}; connection: {:?}",
            conn.close_reason()
        )),
    }
}

/// The small runtime the raw peer's async calls run on.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap()
}
