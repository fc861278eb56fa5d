//! Cluster CA and node certificates (`quorate tls`), and loading a node's
//! TLS identity for the replication transport.
//!
//! The CA signs node certificates whose name (CN and DNS SAN) is the node
//! name, so a peer's certificate says which node it is. Files are never
//! overwritten: replacing a CA by accident would cut a node off its cluster.
//!
//! Without rcgen's `x509-parser` feature a CA certificate cannot be read
//! back into issuer parameters, so [`write_node_cert`] rebuilds them from
//! the same [`ca_params`] that made the CA and then checks the new
//! certificate against the CA file with webpki: a CA made elsewhere, or a
//! key that does not belong to the certificate, is reported, never written.

use std::fs::{self, DirBuilder, OpenOptions};
use std::io::{self, Write};
use std::net::IpAddr;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::{ParsedCertificate, WebPkiClientVerifier};
use rustls::RootCertStore;

use crate::config::check_node_name;

/// Subject CN of every cluster CA `quorate tls ca` makes.
pub const CA_COMMON_NAME: &str = "quorate cluster CA";
pub const CA_CERT_FILE: &str = "ca.pem";
pub const CA_KEY_FILE: &str = "ca.key";
/// Validity of the CA and node certificates, in days (10 years).
pub const VALIDITY_DAYS: i64 = 3650;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{0}")]
    Other(String),
    #[error("cannot {action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    #[error("{path} already exists: refusing to overwrite it (move it away to make a new one)")]
    Exists { path: PathBuf },
    #[error("no CA in {dir}: run `quorate tls ca --out {dir}` first")]
    NoCa { dir: PathBuf },
    #[error(
        "invalid node name: expected a name of letters, digits, '.', '_' and '-', at most 63 \
         characters, like \"node-a\", {why}"
    )]
    BadName { why: String },
    #[error("invalid --addr {addr:?}: expected an IP address like 192.168.1.11 or a DNS name")]
    BadAddr { addr: String },
    /// A file that exists but holds the wrong thing.
    #[error("{path}: {message}")]
    BadFile { path: PathBuf, message: String },
    #[error("cannot make {what}: {source}")]
    Generate {
        what: &'static str,
        source: rcgen::Error,
    },
}

/// What the replication transport needs to speak mutual TLS as this node.
#[derive(Debug)]
pub struct NodeIdentity {
    /// The cluster CA: the only issuer peers' certificates may have.
    pub ca_certs: Vec<CertificateDer<'static>>,
    /// This node's certificate first, then any intermediates in the file.
    pub cert_chain: Vec<CertificateDer<'static>>,
    pub key: PrivateKeyDer<'static>,
}

impl Clone for NodeIdentity {
    fn clone(&self) -> Self {
        NodeIdentity {
            ca_certs: self.ca_certs.clone(),
            cert_chain: self.cert_chain.clone(),
            key: self.key.clone_key(),
        }
    }
}

impl NodeIdentity {
    /// The trust anchors for rustls verifiers: the cluster CA only.
    pub fn root_store(&self) -> Result<RootCertStore, TlsError> {
        let mut roots = RootCertStore::empty();
        for ca in &self.ca_certs {
            roots
                .add(ca.clone())
                .map_err(|e| TlsError::Other(format!("unusable CA certificate: {e}")))?;
        }
        Ok(roots)
    }

    /// Whether this node's own certificate is for `node_name`: a config
    /// whose node_name differs from its certificate would be refused by
    /// every peer, so the daemon checks at start.
    pub fn check_node_name(&self, node_name: &str) -> Result<(), TlsError> {
        let cert = self
            .cert_chain
            .first()
            .ok_or_else(|| TlsError::Other("empty certificate chain".into()))?;
        cert_matches_node_name(cert, node_name)
    }
}

/// Whether a certificate names `node_name` (DNS SAN, as webpki checks it).
///
/// Checking a claimed name is what we can do: extracting the name from a
/// certificate needs an X.509 parser, which no dependency of ours exposes.
pub fn cert_matches_node_name(cert: &CertificateDer<'_>, node_name: &str) -> Result<(), TlsError> {
    let parsed = ParsedCertificate::try_from(cert)
        .map_err(|e| TlsError::Other(format!("unreadable certificate: {e}")))?;
    let name = ServerName::try_from(node_name).map_err(|_| TlsError::BadName {
        why: format!("got {node_name:?}"),
    })?;
    rustls::client::verify_server_name(&parsed, &name)
        .map_err(|e| TlsError::Other(format!("certificate is not for node {node_name:?}: {e}")))
}

/// The crypto provider every quorate TLS object is built with. Naming it
/// explicitly keeps rustls from panicking if a second provider is ever
/// compiled in (STACK.md).
pub fn crypto_provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// `quorate tls ca --out DIR`: writes `ca.pem` and `ca.key` (0600); returns their paths.
pub fn write_ca(out_dir: &Path) -> Result<(PathBuf, PathBuf), TlsError> {
    let cert_path = out_dir.join(CA_CERT_FILE);
    let key_path = out_dir.join(CA_KEY_FILE);
    ensure_dir(out_dir)?;
    refuse_existing(&[&cert_path, &key_path])?;

    let key = KeyPair::generate().map_err(|source| TlsError::Generate {
        what: "the CA key",
        source,
    })?;
    let cert = ca_params()
        .self_signed(&key)
        .map_err(|source| TlsError::Generate {
            what: "the CA certificate",
            source,
        })?;
    write_pair(&cert_path, &cert.pem(), &key_path, &key.serialize_pem())?;
    Ok((cert_path, key_path))
}

/// `quorate tls node NAME --addr IP[,IP...] --ca-dir DIR --out DIR`: writes
/// `NAME.pem` and `NAME.key` (0600); returns their paths.
///
/// The certificate names NAME as CN and DNS SAN, and every address as an IP
/// SAN (or a DNS SAN when it is not an IP address); an element may hold
/// several addresses separated by commas.
pub fn write_node_cert(
    name: &str,
    addrs: &[String],
    ca_dir: &Path,
    out_dir: &Path,
) -> Result<(PathBuf, PathBuf), TlsError> {
    check_node_name(name).map_err(|why| TlsError::BadName { why })?;
    let mut sans = vec![SanType::DnsName(ia5(name)?)];
    for addr in addrs
        .iter()
        .flat_map(|a| a.split(','))
        .map(str::trim)
        .filter(|a| !a.is_empty())
    {
        let san = match addr.parse::<IpAddr>() {
            Ok(ip) => SanType::IpAddress(ip),
            Err(_) => {
                rustls::pki_types::DnsName::try_from(addr).map_err(|_| TlsError::BadAddr {
                    addr: addr.to_string(),
                })?;
                SanType::DnsName(ia5(addr)?)
            }
        };
        if !sans.contains(&san) {
            sans.push(san);
        }
    }

    let ca_cert_path = ca_dir.join(CA_CERT_FILE);
    let ca_key_path = ca_dir.join(CA_KEY_FILE);
    if !ca_cert_path.exists() || !ca_key_path.exists() {
        return Err(TlsError::NoCa {
            dir: ca_dir.to_path_buf(),
        });
    }
    // read_certs never returns an empty list.
    let ca_der = read_certs(&ca_cert_path)?.remove(0);
    let ca_key_pem = read_text(&ca_key_path)?;
    let ca_key = KeyPair::from_pem(&ca_key_pem).map_err(|e| TlsError::BadFile {
        path: ca_key_path.clone(),
        message: format!("not a private key quorate can use (PKCS#8 PEM): {e}"),
    })?;

    let cert_path = out_dir.join(format!("{name}.pem"));
    let key_path = out_dir.join(format!("{name}.key"));
    ensure_dir(out_dir)?;
    refuse_existing(&[&cert_path, &key_path])?;

    let mut params = CertificateParams::default();
    params.distinguished_name = distinguished_name(name);
    params.subject_alt_names = sans;
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    params.use_authority_key_identifier_extension = true;
    set_validity(&mut params);

    let key = KeyPair::generate().map_err(|source| TlsError::Generate {
        what: "the node key",
        source,
    })?;
    let issuer = Issuer::new(ca_params(), ca_key);
    let cert = params
        .signed_by(&key, &issuer)
        .map_err(|source| TlsError::Generate {
            what: "the node certificate",
            source,
        })?;

    verify_chain(cert.der(), &ca_der).map_err(|e| TlsError::BadFile {
        path: ca_cert_path.clone(),
        message: format!(
            "a certificate signed with {} does not verify against this CA ({e}): the key does not \
             belong to the certificate, or the CA was not made by `quorate tls ca`",
            ca_key_path.display()
        ),
    })?;
    write_pair(&cert_path, &cert.pem(), &key_path, &key.serialize_pem())?;
    Ok((cert_path, key_path))
}

/// Reads the `[tls]` files of a node and checks they fit together: the key
/// belongs to the certificate, and the certificate is signed by the CA.
pub fn load_node_identity(ca: &Path, cert: &Path, key: &Path) -> Result<NodeIdentity, TlsError> {
    let ca_certs = read_certs(ca)?;
    let cert_chain = read_certs(cert)?;
    let key_bytes = fs::read(key).map_err(|source| TlsError::Io {
        action: "read",
        path: key.to_path_buf(),
        source,
    })?;
    let private_key = PrivateKeyDer::from_pem_slice(&key_bytes).map_err(|e| TlsError::BadFile {
        path: key.to_path_buf(),
        message: format!("no private key in PEM form: {e}"),
    })?;

    rustls::sign::CertifiedKey::from_der(
        cert_chain.clone(),
        private_key.clone_key(),
        &crypto_provider(),
    )
    .map_err(|e| TlsError::BadFile {
        path: key.to_path_buf(),
        message: format!("unusable with certificate {}: {e}", cert.display()),
    })?;

    let mut verified = Err(TlsError::Other("no CA certificate".into()));
    for anchor in &ca_certs {
        // read_certs never returns an empty list.
        verified = verify_chain(&cert_chain[0], anchor).map_err(|e| TlsError::BadFile {
            path: cert.to_path_buf(),
            message: format!("not signed by the cluster CA in {}: {e}", ca.display()),
        });
        if verified.is_ok() {
            break;
        }
    }
    verified?;
    Ok(NodeIdentity {
        ca_certs,
        cert_chain,
        key: private_key,
    })
}

/// The CA's subject, key usages and key-id method. `write_node_cert`
/// rebuilds the issuer from these, so they must never change for CAs
/// already in the field.
fn ca_params() -> CertificateParams {
    let mut params = CertificateParams::default();
    params.distinguished_name = distinguished_name(CA_COMMON_NAME);
    // Path length 0: the CA signs node certificates, never another CA.
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    set_validity(&mut params);
    params
}

fn distinguished_name(common_name: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    dn
}

fn set_validity(params: &mut CertificateParams) {
    let now = time::OffsetDateTime::now_utc();
    // A day of slack so a peer whose clock is a little behind still accepts
    // a certificate made a minute ago.
    params.not_before = now - time::Duration::days(1);
    params.not_after = now + time::Duration::days(VALIDITY_DAYS);
}

fn ia5(name: &str) -> Result<rcgen::string::Ia5String, TlsError> {
    rcgen::string::Ia5String::try_from(name).map_err(|_| TlsError::BadAddr {
        addr: name.to_string(),
    })
}

/// Chain check with webpki: signature, validity, CA constraints, and the
/// clientAuth usage every node certificate carries.
fn verify_chain(
    end_entity: &CertificateDer<'_>,
    ca: &CertificateDer<'static>,
) -> Result<(), String> {
    let mut roots = RootCertStore::empty();
    roots
        .add(ca.clone())
        .map_err(|e| format!("unusable CA certificate: {e}"))?;
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), crypto_provider())
        .build()
        .map_err(|e| e.to_string())?;
    verifier
        .verify_client_cert(end_entity, &[], UnixTime::now())
        .map(|_| ())
        .map_err(|e| e.to_string())
}

fn read_text(path: &Path) -> Result<String, TlsError> {
    fs::read_to_string(path).map_err(|source| TlsError::Io {
        action: "read",
        path: path.to_path_buf(),
        source,
    })
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let bytes = fs::read(path).map_err(|source| TlsError::Io {
        action: "read",
        path: path.to_path_buf(),
        source,
    })?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::BadFile {
            path: path.to_path_buf(),
            message: format!("bad PEM: {e}"),
        })?;
    if certs.is_empty() {
        return Err(TlsError::BadFile {
            path: path.to_path_buf(),
            message: "no certificate in it (expected a PEM \"BEGIN CERTIFICATE\" block)".into(),
        });
    }
    Ok(certs)
}

fn ensure_dir(dir: &Path) -> Result<(), TlsError> {
    if dir.is_dir() {
        return Ok(());
    }
    DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(dir)
        .map_err(|source| TlsError::Io {
            action: "create directory",
            path: dir.to_path_buf(),
            source,
        })
}

fn refuse_existing(paths: &[&Path]) -> Result<(), TlsError> {
    match paths.iter().find(|p| p.exists()) {
        Some(p) => Err(TlsError::Exists {
            path: p.to_path_buf(),
        }),
        None => Ok(()),
    }
}

/// Writes a certificate and its key, or neither.
fn write_pair(
    cert_path: &Path,
    cert_pem: &str,
    key_path: &Path,
    key_pem: &str,
) -> Result<(), TlsError> {
    // The key first: if it cannot be written there is no orphan
    // certificate, and a key without a certificate is useless, not dangerous.
    write_new(key_path, key_pem, 0o600)?;
    if let Err(e) = write_new(cert_path, cert_pem, 0o644) {
        let _ = fs::remove_file(key_path);
        return Err(e);
    }
    Ok(())
}

/// Creates a file that must not exist yet (`create_new` also closes the race
/// with a concurrent writer), with its final mode from the start so a key is
/// never readable by others even for a moment.
fn write_new(path: &Path, contents: &str, mode: u32) -> Result<(), TlsError> {
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(|source| match source.kind() {
            io::ErrorKind::AlreadyExists => TlsError::Exists {
                path: path.to_path_buf(),
            },
            _ => TlsError::Io {
                action: "create",
                path: path.to_path_buf(),
                source,
            },
        })?;
    let written = file
        .write_all(contents.as_bytes())
        .and_then(|()| file.sync_all());
    if let Err(source) = written {
        let _ = fs::remove_file(path);
        return Err(TlsError::Io {
            action: "write",
            path: path.to_path_buf(),
            source,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::client::danger::ServerCertVerifier;
    use rustls::client::WebPkiServerVerifier;
    use rustls::server::danger::ClientCertVerifier;
    use std::os::unix::fs::PermissionsExt;

    fn mode(p: &Path) -> u32 {
        fs::metadata(p).unwrap().permissions().mode() & 0o777
    }

    fn der(path: &Path) -> CertificateDer<'static> {
        read_certs(path).unwrap().remove(0)
    }

    fn server_verifier(ca: &Path) -> Arc<WebPkiServerVerifier> {
        let mut roots = RootCertStore::empty();
        roots.add(der(ca)).unwrap();
        WebPkiServerVerifier::builder_with_provider(Arc::new(roots), crypto_provider())
            .build()
            .unwrap()
    }

    fn client_verifier(ca: &Path) -> Arc<dyn ClientCertVerifier> {
        let mut roots = RootCertStore::empty();
        roots.add(der(ca)).unwrap();
        WebPkiClientVerifier::builder_with_provider(Arc::new(roots), crypto_provider())
            .build()
            .unwrap()
    }

    fn server_ok(ca: &Path, cert: &Path, name: &str, now: UnixTime) -> Result<(), rustls::Error> {
        let name = ServerName::try_from(name.to_string()).unwrap();
        server_verifier(ca)
            .verify_server_cert(&der(cert), &[], &name, &[], now)
            .map(|_| ())
    }

    fn in_days(days: i64) -> UnixTime {
        let secs = time::OffsetDateTime::now_utc().unix_timestamp() + days * 86_400;
        UnixTime::since_unix_epoch(std::time::Duration::from_secs(secs as u64))
    }

    struct Pki {
        _dir: tempfile::TempDir,
        ca_dir: PathBuf,
        out: PathBuf,
    }

    fn pki() -> Pki {
        let dir = tempfile::tempdir().unwrap();
        let ca_dir = dir.path().join("ca");
        let out = dir.path().join("nodes");
        write_ca(&ca_dir).unwrap();
        Pki {
            ca_dir,
            out,
            _dir: dir,
        }
    }

    #[test]
    fn ca_files_and_modes() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("tls");
        let (cert, key) = write_ca(&out).unwrap();
        assert_eq!(cert, out.join("ca.pem"));
        assert_eq!(key, out.join("ca.key"));
        assert_eq!(mode(&key), 0o600);
        assert_eq!(mode(&cert) & 0o077 & !0o044, 0, "ca.pem writable by others");
        assert!(fs::read_to_string(&cert)
            .unwrap()
            .starts_with("-----BEGIN CERTIFICATE-----"));
        assert!(fs::read_to_string(&key)
            .unwrap()
            .starts_with("-----BEGIN PRIVATE KEY-----"));
    }

    #[test]
    fn ca_is_never_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, _) = write_ca(dir.path()).unwrap();
        let before = fs::read(&cert).unwrap();
        let err = write_ca(dir.path()).unwrap_err();
        assert!(
            matches!(&err, TlsError::Exists { path } if *path == cert),
            "{err}"
        );
        assert!(err.to_string().contains("refusing to overwrite"), "{err}");
        assert_eq!(fs::read(&cert).unwrap(), before);

        // Half a CA (key lost) is refused as well.
        let other = tempfile::tempdir().unwrap();
        fs::write(other.path().join("ca.key"), "x").unwrap();
        assert!(matches!(
            write_ca(other.path()),
            Err(TlsError::Exists { .. })
        ));
        assert!(!other.path().join("ca.pem").exists());
    }

    #[test]
    fn node_cert_is_accepted_for_its_name_and_addresses() {
        let p = pki();
        let addrs = vec!["192.168.1.11,::1".to_string(), "gw.example.org".to_string()];
        let (cert, key) = write_node_cert("node-a", &addrs, &p.ca_dir, &p.out).unwrap();
        assert_eq!(cert, p.out.join("node-a.pem"));
        assert_eq!(key, p.out.join("node-a.key"));
        assert_eq!(mode(&key), 0o600);

        let ca = p.ca_dir.join("ca.pem");
        let now = UnixTime::now();
        for name in ["node-a", "192.168.1.11", "::1", "gw.example.org"] {
            server_ok(&ca, &cert, name, now).unwrap_or_else(|e| panic!("{name}: {e}"));
        }
        for name in ["node-b", "192.168.1.12", "example.org"] {
            assert!(
                server_ok(&ca, &cert, name, now).is_err(),
                "accepted for {name}"
            );
        }
        client_verifier(&ca)
            .verify_client_cert(&der(&cert), &[], now)
            .unwrap();
    }

    #[test]
    fn certificates_last_ten_years() {
        let p = pki();
        let (cert, _) = write_node_cert("node-a", &[], &p.ca_dir, &p.out).unwrap();
        let ca = p.ca_dir.join("ca.pem");
        server_ok(&ca, &cert, "node-a", in_days(VALIDITY_DAYS - 2)).unwrap();
        let expired = server_ok(&ca, &cert, "node-a", in_days(VALIDITY_DAYS + 2)).unwrap_err();
        assert!(expired.to_string().contains("expired"), "{expired}");
    }

    #[test]
    fn cert_from_another_ca_is_rejected() {
        let ours = pki();
        let theirs = pki();
        let (cert, key) = write_node_cert("node-a", &[], &theirs.ca_dir, &theirs.out).unwrap();
        let ca = ours.ca_dir.join("ca.pem");
        // Every cluster CA has the same subject, so webpki finds "our" CA as
        // the issuer and rejects the signature rather than the issuer name.
        let err = server_ok(&ca, &cert, "node-a", UnixTime::now()).unwrap_err();
        assert!(
            matches!(
                err,
                rustls::Error::InvalidCertificate(
                    rustls::CertificateError::BadSignature
                        | rustls::CertificateError::UnknownIssuer
                )
            ),
            "{err}"
        );
        assert!(client_verifier(&ca)
            .verify_client_cert(&der(&cert), &[], UnixTime::now())
            .is_err());

        let err = load_node_identity(&ca, &cert, &key)
            .unwrap_err()
            .to_string();
        assert!(err.contains("not signed by the cluster CA"), "{err}");
    }

    #[test]
    fn node_names_follow_the_config_rule() {
        let p = pki();
        for bad in ["", "node a", "-node", "node.1", "nöde", &"n".repeat(64)] {
            let err = write_node_cert(bad, &[], &p.ca_dir, &p.out).unwrap_err();
            assert!(matches!(err, TlsError::BadName { .. }), "{bad:?}: {err}");
            assert!(check_node_name(bad).is_err());
        }
        write_node_cert("node_1.example", &[], &p.ca_dir, &p.out).unwrap();
        let err =
            write_node_cert("node-a", &["not an address!".into()], &p.ca_dir, &p.out).unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid --addr \"not an address!\": expected an IP address like 192.168.1.11 or a DNS name"
        );
        assert!(!p.out.join("node-a.pem").exists());
    }

    #[test]
    fn missing_ca_is_explained() {
        let dir = tempfile::tempdir().unwrap();
        let err = write_node_cert("node-a", &[], dir.path(), dir.path()).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "no CA in {0}: run `quorate tls ca --out {0}` first",
                dir.path().display()
            )
        );
    }

    #[test]
    fn node_cert_is_never_overwritten() {
        let p = pki();
        let (cert, _) = write_node_cert("node-a", &[], &p.ca_dir, &p.out).unwrap();
        let before = fs::read(&cert).unwrap();
        let err = write_node_cert("node-a", &[], &p.ca_dir, &p.out).unwrap_err();
        assert!(matches!(err, TlsError::Exists { .. }), "{err}");
        assert_eq!(fs::read(&cert).unwrap(), before);
    }

    #[test]
    fn mismatched_ca_key_is_caught_before_writing() {
        let p = pki();
        let other = pki();
        fs::remove_file(p.ca_dir.join("ca.key")).unwrap();
        fs::copy(other.ca_dir.join("ca.key"), p.ca_dir.join("ca.key")).unwrap();
        let err = write_node_cert("node-a", &[], &p.ca_dir, &p.out).unwrap_err();
        assert!(
            matches!(&err, TlsError::BadFile { path, .. } if path.ends_with("ca.pem")),
            "{err}"
        );
        assert!(!p.out.join("node-a.pem").exists());
        assert!(!p.out.join("node-a.key").exists());

        fs::write(p.ca_dir.join("ca.key"), "garbage").unwrap();
        let err = write_node_cert("node-a", &[], &p.ca_dir, &p.out).unwrap_err();
        assert!(
            matches!(&err, TlsError::BadFile { path, .. } if path.ends_with("ca.key")),
            "{err}"
        );
    }

    #[test]
    fn identity_loads_and_checks_its_parts() {
        let p = pki();
        let (cert, key) =
            write_node_cert("node-a", &["10.0.0.1".into()], &p.ca_dir, &p.out).unwrap();
        let ca = p.ca_dir.join("ca.pem");
        let id = load_node_identity(&ca, &cert, &key).unwrap();
        assert_eq!(id.ca_certs.len(), 1);
        assert_eq!(id.cert_chain.len(), 1);
        assert!(matches!(id.key, PrivateKeyDer::Pkcs8(_)));
        id.check_node_name("node-a").unwrap();
        assert!(id.check_node_name("node-b").is_err());
        assert_eq!(id.root_store().unwrap().len(), 1);
        let copy = id.clone();
        assert_eq!(copy.key.secret_der(), id.key.secret_der());

        // The key of another node does not fit this certificate.
        let (_, other_key) = write_node_cert("node-b", &[], &p.ca_dir, &p.out).unwrap();
        let err = load_node_identity(&ca, &cert, &other_key)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("node-b.key") && err.contains("unusable with certificate"),
            "{err}"
        );

        let missing = p.out.join("nope.pem");
        let err = load_node_identity(&ca, &missing, &key).unwrap_err();
        assert!(
            matches!(&err, TlsError::Io { path, .. } if *path == missing),
            "{err}"
        );

        let err = load_node_identity(&ca, &key, &key).unwrap_err().to_string();
        assert!(err.contains("no certificate in it"), "{err}");
        let err = load_node_identity(&ca, &cert, &cert)
            .unwrap_err()
            .to_string();
        assert!(err.contains("no private key"), "{err}");
    }

    #[test]
    fn identity_works_for_a_mutual_tls_handshake() {
        let p = pki();
        let ca = p.ca_dir.join("ca.pem");
        let (a_cert, a_key) = write_node_cert("node-a", &[], &p.ca_dir, &p.out).unwrap();
        let (b_cert, b_key) = write_node_cert("node-b", &[], &p.ca_dir, &p.out).unwrap();
        let a = load_node_identity(&ca, &a_cert, &a_key).unwrap();
        let b = load_node_identity(&ca, &b_cert, &b_key).unwrap();

        let server = rustls::ServerConfig::builder_with_provider(crypto_provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_client_cert_verifier(
                WebPkiClientVerifier::builder_with_provider(
                    Arc::new(a.root_store().unwrap()),
                    crypto_provider(),
                )
                .build()
                .unwrap(),
            )
            .with_single_cert(a.cert_chain.clone(), a.key.clone_key())
            .unwrap();
        let client = rustls::ClientConfig::builder_with_provider(crypto_provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(b.root_store().unwrap())
            .with_client_auth_cert(b.cert_chain.clone(), b.key.clone_key())
            .unwrap();

        let mut s = rustls::ServerConnection::new(Arc::new(server)).unwrap();
        let mut c = rustls::ClientConnection::new(
            Arc::new(client),
            ServerName::try_from("node-a").unwrap(),
        )
        .unwrap();
        for _ in 0..10 {
            let mut buf = Vec::new();
            while c.wants_write() {
                c.write_tls(&mut buf).unwrap();
            }
            s.read_tls(&mut buf.as_slice()).unwrap();
            s.process_new_packets().unwrap();
            let mut buf = Vec::new();
            while s.wants_write() {
                s.write_tls(&mut buf).unwrap();
            }
            c.read_tls(&mut buf.as_slice()).unwrap();
            c.process_new_packets().unwrap();
            if !c.is_handshaking() && !s.is_handshaking() {
                break;
            }
        }
        assert!(!s.is_handshaking() && !c.is_handshaking());
        let peer = s.peer_certificates().unwrap();
        cert_matches_node_name(&peer[0], "node-b").unwrap();
        assert!(cert_matches_node_name(&peer[0], "node-a").is_err());
    }
}
