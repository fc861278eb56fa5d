//! rustls and quinn configuration for mutual TLS 1.3 between nodes, and the
//! translation of QUIC connection errors into [`TransportError`]s that name
//! the peer and say what to fix.

use std::net::SocketAddr;
use std::sync::Arc;

use quinn::crypto::rustls::{HandshakeData, QuicClientConfig, QuicServerConfig};
use quinn::{ConnectionError, IdleTimeout, VarInt};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::Resumption;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::{NoServerSessionStorage, ParsedCertificate, WebPkiClientVerifier};
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};

use super::frame::Hello;
use super::{TransportError, TransportOptions, ALPN, PROTOCOL_VERSION};
use crate::tls::{cert_matches_node_name, crypto_provider, NodeIdentity};

/// Connection close code: the peer was refused after the TLS handshake
/// (cluster, identity, protocol); the reason says why.
pub(super) const CLOSE_REFUSED: VarInt = VarInt::from_u32(1);
/// Connection close code: this node is shutting down.
pub(super) const CLOSE_SHUTDOWN: VarInt = VarInt::from_u32(2);
/// Connection close code: an RPC timed out and the connection is dropped.
pub(super) const CLOSE_EVICTED: VarInt = VarInt::from_u32(3);
/// Connection close code: the peer sent too many malformed frames; it may
/// dial again and is served normally if it behaves.
pub(super) const CLOSE_MISBEHAVING: VarInt = VarInt::from_u32(4);
/// Connection close code: this node serves its maximum of incoming
/// connections already.
pub(super) const CLOSE_BUSY: VarInt = VarInt::from_u32(5);
/// Connection close code: another connection carries the traffic of the
/// pair (both nodes dialled each other, the peer restarted, or a call timed
/// out and a new one was dialled).
pub(super) const CLOSE_DUPLICATE: VarInt = VarInt::from_u32(6);

/// SNI sent when dialling an address whose node name is not known yet; the
/// name is then learnt from the Hello and checked against the certificate.
pub(super) const UNKNOWN_PEER_SNI: &str = "quorate-peer";

/// TLS alert 120: no ALPN protocol in common.
const ALERT_NO_APPLICATION_PROTOCOL: u8 = 120;

/// The three QUIC configurations of a node.
pub(super) struct QuicConfigs {
    pub server: quinn::ServerConfig,
    /// Verifies the peer's certificate for the node name we dial.
    pub client: quinn::ClientConfig,
    /// Verifies only that the CA signed the peer's certificate.
    pub client_any_name: quinn::ClientConfig,
}

pub(super) fn quic_configs(
    identity: &NodeIdentity,
    opts: &TransportOptions,
) -> Result<QuicConfigs, TransportError> {
    let provider = crypto_provider();
    let roots = Arc::new(
        identity
            .root_store()
            .map_err(|e| TransportError::Identity(e.to_string()))?,
    );
    let bad_identity = |e: rustls::Error| TransportError::Identity(e.to_string());

    let client_verifier =
        WebPkiClientVerifier::builder_with_provider(roots.clone(), provider.clone())
            .build()
            .map_err(|e| TransportError::Identity(e.to_string()))?;
    let mut server = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(bad_identity)?
        .with_client_cert_verifier(client_verifier)
        .with_single_cert(identity.cert_chain.clone(), identity.key.clone_key())
        .map_err(bad_identity)?;
    server.alpn_protocols = vec![ALPN.to_vec()];
    // Without resumption every connection presents and verifies a full
    // certificate chain, which the Hello check reads.
    server.session_storage = Arc::new(NoServerSessionStorage {});
    server.send_tls13_tickets = 0;
    let server =
        QuicServerConfig::try_from(server).map_err(|e| TransportError::Identity(e.to_string()))?;
    let mut server = quinn::ServerConfig::with_crypto(Arc::new(server));

    let client = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(bad_identity)?
        .with_root_certificates(roots.clone())
        .with_client_auth_cert(identity.cert_chain.clone(), identity.key.clone_key())
        .map_err(bad_identity)?;
    let any_name = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(bad_identity)?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(CaOnlyVerifier { roots, provider }))
        .with_client_auth_cert(identity.cert_chain.clone(), identity.key.clone_key())
        .map_err(bad_identity)?;

    let transport = Arc::new(transport_config(opts)?);
    server.transport_config(transport.clone());
    let quic_client = |mut c: rustls::ClientConfig| -> Result<quinn::ClientConfig, TransportError> {
        c.alpn_protocols = vec![ALPN.to_vec()];
        c.resumption = Resumption::disabled();
        let c =
            QuicClientConfig::try_from(c).map_err(|e| TransportError::Identity(e.to_string()))?;
        let mut c = quinn::ClientConfig::new(Arc::new(c));
        c.transport_config(transport.clone());
        Ok(c)
    };
    Ok(QuicConfigs {
        server,
        client: quic_client(client)?,
        client_any_name: quic_client(any_name)?,
    })
}

/// Ack-eliciting packets a peer may take before it must acknowledge them.
/// quinn's default (1) acknowledges every other packet, mostly in packets
/// of their own: replication is many small messages, so on the 16-client
/// benchmark 8 took UDP datagrams from 3.3 to 2.5 per transaction and the
/// nodes' CPU per transaction down ~8 % (four ABBA pairs). An ACK still
/// rides on any packet going the other way, comes within the peer's
/// `max_ack_delay` (25 ms), and comes at once on a packet out of order, so
/// loss is still found by the packets after it.
const ACK_ELICITING_THRESHOLD: u32 = 8;

fn transport_config(opts: &TransportOptions) -> Result<quinn::TransportConfig, TransportError> {
    let mut t = quinn::TransportConfig::default();
    let idle = IdleTimeout::try_from(opts.idle_timeout)
        .map_err(|_| TransportError::Config("idle_timeout is too long".into()))?;
    t.max_idle_timeout(Some(idle));
    t.keep_alive_interval(Some(opts.keep_alive));
    // Concurrent RPCs to one peer beyond this wait for a stream; quinn's
    // default of 100 is tight for a leader replicating and forwarding.
    t.max_concurrent_bidi_streams(VarInt::from_u32(256));
    t.max_concurrent_uni_streams(VarInt::from_u32(0));
    let mut ack = quinn::AckFrequencyConfig::default();
    ack.ack_eliciting_threshold(VarInt::from_u32(ACK_ELICITING_THRESHOLD));
    t.ack_frequency_config(Some(ack));
    Ok(t)
}

/// Accepts a server certificate signed by the cluster CA whatever name it
/// carries: used when dialling an address without an expected node name.
/// The Hello check then binds the connection to a name in the certificate.
#[derive(Debug)]
struct CaOnlyVerifier {
    roots: Arc<RootCertStore>,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for CaOnlyVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let cert = ParsedCertificate::try_from(end_entity)?;
        rustls::client::verify_server_cert_signed_by_trust_anchor(
            &cert,
            &self.roots,
            intermediates,
            now,
            self.provider.signature_verification_algorithms.all,
        )?;
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// The certificate the peer presented in the handshake (its own first).
pub(super) fn peer_certificate(conn: &quinn::Connection) -> Option<CertificateDer<'static>> {
    conn.peer_identity()?
        .downcast::<Vec<CertificateDer<'static>>>()
        .ok()?
        .into_iter()
        .next()
}

/// Checks a peer's Hello against our cluster, its certificate and, when
/// dialling a known node, the name we expected. The `Err` is the refusal
/// reason, logged and sent to the peer.
pub(super) fn check_hello(
    ours: &TransportOptions,
    addr: SocketAddr,
    hello: &Hello,
    cert: Option<&CertificateDer<'_>>,
    expected: Option<&str>,
) -> Result<(), String> {
    let name = shown(&hello.node_name);
    if hello.protocol != PROTOCOL_VERSION {
        return Err(format!(
            "peer {name} at {addr} speaks quorate protocol {}, we speak {PROTOCOL_VERSION}",
            hello.protocol
        ));
    }
    if hello.cluster_name != ours.cluster_name {
        return Err(format!(
            "peer {name} at {addr} belongs to cluster {}, we are {}",
            shown(&hello.cluster_name),
            shown(&ours.cluster_name)
        ));
    }
    let cert = cert.ok_or_else(|| format!("peer at {addr} presented no certificate"))?;
    if let Err(e) = cert_matches_node_name(cert, &hello.node_name) {
        return Err(format!(
            "peer at {addr} claims to be node {name}, but its certificate is not for that name ({e})"
        ));
    }
    match expected {
        Some(want) if want != hello.node_name => Err(format!(
            "peer at {addr} is node {name}, expected {}",
            shown(want)
        )),
        _ => Ok(()),
    }
}

/// A name from the network, quoted and escaped so it cannot forge log lines.
pub(super) fn shown(name: &str) -> String {
    format!("'{}'", name.escape_debug())
}

/// Whether the handshake settled on our ALPN. rustls already refuses a
/// mismatch; this keeps a future config change from silently dropping the gate.
pub(super) fn negotiated_alpn(conn: &quinn::Connection) -> bool {
    conn.handshake_data()
        .and_then(|d| d.downcast::<HandshakeData>().ok())
        .and_then(|d| d.protocol)
        .is_some_and(|p| p == ALPN)
}

/// Names what went wrong with a connection to `peer`, from the dialler's side.
pub(super) fn classify(peer: SocketAddr, err: ConnectionError) -> TransportError {
    match err {
        ConnectionError::ApplicationClosed(close) if close.error_code == CLOSE_REFUSED => {
            TransportError::Refused {
                peer,
                reason: format!("by the peer: {}", String::from_utf8_lossy(&close.reason)),
            }
        }
        ConnectionError::ApplicationClosed(close)
            if close.error_code == CLOSE_MISBEHAVING || close.error_code == CLOSE_BUSY =>
        {
            TransportError::Connection {
                peer,
                reason: format!(
                    "closed by the peer: {}",
                    String::from_utf8_lossy(&close.reason)
                ),
            }
        }
        ConnectionError::ApplicationClosed(close) if close.error_code == CLOSE_SHUTDOWN => {
            TransportError::Connection {
                peer,
                reason: "the peer is shutting down".into(),
            }
        }
        ConnectionError::ConnectionClosed(close) => match tls_alert(close.error_code.into()) {
            Some(ALERT_NO_APPLICATION_PROTOCOL) => no_common_protocol(peer),
            Some(alert) => TransportError::Tls {
                peer,
                reason: format!(
                    "the peer rejected the handshake with TLS alert {} ({close}); is our \
                     certificate signed by its cluster CA and still valid?",
                    alert_name(alert)
                ),
            },
            None => TransportError::Connection {
                peer,
                reason: format!("closed by the peer: {close}"),
            },
        },
        ConnectionError::TransportError(e) => match tls_alert(e.code.into()) {
            Some(ALERT_NO_APPLICATION_PROTOCOL) => no_common_protocol(peer),
            Some(_) => TransportError::Tls {
                peer,
                reason: format!(
                    "{} (is its certificate signed by our cluster CA?)",
                    e.reason
                ),
            },
            None => TransportError::Connection {
                peer,
                reason: e.to_string(),
            },
        },
        // Also reached by requests already sent on a connection that then
        // went silent: not "never sent", so not `Unreachable`.
        ConnectionError::TimedOut => TransportError::Connection {
            peer,
            reason: "no answer (QUIC idle timeout)".into(),
        },
        // This side closed the connection (an eviction raced with this
        // call): a connection failure, so the next call dials afresh. A
        // closed transport is reported as `Closed` before any call starts.
        ConnectionError::LocallyClosed => TransportError::Connection {
            peer,
            reason: "the connection was closed on this side".into(),
        },
        other => TransportError::Connection {
            peer,
            reason: other.to_string(),
        },
    }
}

fn no_common_protocol(peer: SocketAddr) -> TransportError {
    TransportError::Refused {
        peer,
        reason: format!(
            "the peer does not speak {} (no common ALPN protocol): is it another, incompatible \
             quorate version?",
            String::from_utf8_lossy(ALPN)
        ),
    }
}

/// QUIC carries TLS alerts as transport error codes 0x100 + alert.
fn tls_alert(code: u64) -> Option<u8> {
    if (0x100..=0x1ff).contains(&code) {
        Some((code & 0xff) as u8)
    } else {
        None
    }
}

fn alert_name(alert: u8) -> String {
    let name = match alert {
        40 => "handshake_failure",
        42 => "bad_certificate",
        43 => "unsupported_certificate",
        44 => "certificate_revoked",
        45 => "certificate_expired",
        46 => "certificate_unknown",
        48 => "unknown_ca",
        51 => "decrypt_error",
        70 => "protocol_version",
        80 => "internal_error",
        116 => "certificate_required",
        120 => "no_application_protocol",
        _ => return format!("{alert}"),
    };
    name.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn addr() -> SocketAddr {
        "127.0.0.1:4567".parse().unwrap()
    }

    #[test]
    fn tls_alerts_are_recognised() {
        assert_eq!(tls_alert(0x100 + 48), Some(48));
        assert_eq!(tls_alert(0x1ff), Some(255));
        assert_eq!(tls_alert(0x0a), None);
        assert_eq!(tls_alert(0x200), None);
        assert_eq!(alert_name(48), "unknown_ca");
        assert_eq!(alert_name(7), "7");
    }

    #[test]
    fn refusals_carry_the_peer_and_its_reason() {
        let err = classify(
            addr(),
            ConnectionError::ApplicationClosed(quinn::ApplicationClose {
                error_code: CLOSE_REFUSED,
                reason: Bytes::from_static(b"wrong cluster"),
            }),
        );
        assert!(matches!(err, TransportError::Refused { .. }), "{err}");
        let text = err.to_string();
        assert!(
            text.contains("127.0.0.1:4567") && text.contains("wrong cluster"),
            "{text}"
        );
        assert!(err.is_connection_failure());
        assert!(matches!(
            classify(addr(), ConnectionError::TimedOut),
            TransportError::Connection { .. }
        ));
        assert!(matches!(
            classify(addr(), ConnectionError::Reset),
            TransportError::Connection { .. }
        ));
    }
}
