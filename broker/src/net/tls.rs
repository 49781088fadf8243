//! TLS on the cluster port: every node serves and dials with its own certificate and accepts
//! only peers whose certificate chains to the cluster's CA (mutual TLS, TLS 1.3 only). A dialer
//! checks the certificate against the host it dialed (the peer's address in `--peers` or in the
//! membership), so node certificates name their cluster address (IP or DNS) as a subject
//! alternative name. The handshake of [`super::handshake`] then runs inside the TLS session,
//! bound to it by the session's exporter value.

use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::net::TcpStream;
use tokio_rustls::{client, server, TlsAcceptor, TlsConnector};

/// RFC 5705 / 8446 exporter label: both ends of one TLS session derive the same value from it,
/// and no one else can.
const EXPORTER_LABEL: &[u8] = b"EXPORTER-depot-cluster-handshake";

/// The exporter value of a session, mixed into the handshake's proofs.
pub type Binding = [u8; 32];

/// This node's TLS identity and the CA it trusts for its peers.
#[derive(Clone)]
pub struct ClusterTls {
    connector: TlsConnector,
    acceptor: TlsAcceptor,
}

impl std::fmt::Debug for ClusterTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClusterTls")
    }
}

fn certificates(pem: &[u8], what: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs =
        CertificateDer::pem_slice_iter(pem).collect::<Result<Vec<_>, _>>().map_err(|e| format!("{what}: {e}"))?;
    match certs.is_empty() {
        true => Err(format!("{what}: no PEM CERTIFICATE in it")),
        false => Ok(certs),
    }
}

impl ClusterTls {
    /// From PEM text: this node's certificate (chain), its private key, and the CA
    /// certificate(s) every node's certificate chains to.
    pub fn from_pem(cert: &[u8], key: &[u8], ca: &[u8]) -> Result<ClusterTls, String> {
        let certs = certificates(cert, "cluster_tls_cert")?;
        let key = PrivateKeyDer::from_pem_slice(key).map_err(|e| format!("cluster_tls_key: {e}"))?;
        let mut roots = rustls::RootCertStore::empty();
        for ca in certificates(ca, "cluster_tls_ca")? {
            roots.add(ca).map_err(|e| format!("cluster_tls_ca: {e}"))?;
        }
        let roots = Arc::new(roots);
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let versions = [&rustls::version::TLS13];
        let client = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&versions)
            .map_err(|e| e.to_string())?
            .with_root_certificates(roots.clone())
            .with_client_auth_cert(certs.clone(), key.clone_key())
            .map_err(|e| format!("cluster_tls_cert and cluster_tls_key: {e}"))?;
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(roots, provider.clone())
            .build()
            .map_err(|e| format!("cluster_tls_ca: {e}"))?;
        let server = rustls::ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&versions)
            .map_err(|e| e.to_string())?
            .with_client_cert_verifier(verifier)
            .with_single_cert(certs, key)
            .map_err(|e| format!("cluster_tls_cert and cluster_tls_key: {e}"))?;
        Ok(ClusterTls {
            connector: TlsConnector::from(Arc::new(client)),
            acceptor: TlsAcceptor::from(Arc::new(server)),
        })
    }

    /// Opens TLS to the node at `addr` (`host:port`) over `tcp`, checking its certificate
    /// against `host`.
    pub(crate) async fn connect(
        &self,
        addr: &str,
        tcp: TcpStream,
    ) -> std::io::Result<(client::TlsStream<TcpStream>, Binding)> {
        let host = host_of(addr);
        let name = ServerName::try_from(host.to_owned()).map_err(|e| {
            std::io::Error::new(std::io::ErrorKind::InvalidInput, format!("{host} is not a host name: {e}"))
        })?;
        let stream = self.connector.connect(name, tcp).await?;
        let binding = stream.get_ref().1.export_keying_material([0u8; 32], EXPORTER_LABEL, None);
        Ok((stream, binding.map_err(std::io::Error::other)?))
    }

    /// Accepts TLS from a dialer, which must present a certificate of the cluster's CA.
    pub(crate) async fn accept(&self, tcp: TcpStream) -> std::io::Result<(server::TlsStream<TcpStream>, Binding)> {
        let stream = self.acceptor.accept(tcp).await?;
        let binding = stream.get_ref().1.export_keying_material([0u8; 32], EXPORTER_LABEL, None);
        Ok((stream, binding.map_err(std::io::Error::other)?))
    }
}

/// The host of `host:port` or `[v6]:port`.
fn host_of(addr: &str) -> &str {
    let host = addr.rsplit_once(':').map_or(addr, |(host, _)| host);
    host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host)
}

#[cfg(test)]
mod tests {
    use super::host_of;

    #[test]
    fn hosts_of_addresses() {
        assert_eq!(host_of("10.0.0.1:6222"), "10.0.0.1");
        assert_eq!(host_of("depot-1.internal:6222"), "depot-1.internal");
        assert_eq!(host_of("[::1]:6222"), "::1");
    }
}
