//! TLS to Postgres on rustls, with libpq's `sslmode` and `sslrootcert`.
//!
//! tokio-postgres only knows `sslmode` disable, prefer and require, and never checks a certificate
//! itself: that is the connector's job. So [`split_url`] takes `sslmode` and `sslrootcert` out of
//! the metadata URL, tokio-postgres gets the rest and the matching [`tokio_postgres::config::SslMode`],
//! and [`PgTls`] builds the one connector (and its certificate verifier) that every connection of
//! the store uses: the pool, `migrate`, the LISTEN connection and query cancellation.
//!
//! The modes mean what they mean to libpq:
//! - `disable`: plain TCP.
//! - `prefer` (the default, as in libpq and tokio-postgres): TLS when the server offers it, plain
//!   when it does not; the certificate is not checked.
//! - `require`: TLS or no connection; the certificate is not checked (the handshake's signatures
//!   still are, so the server must hold the key of the certificate it shows). With a CA file, as in
//!   libpq, `require` behaves as `verify-ca`.
//! - `verify-ca`: the certificate must chain to a trusted root; its names are not checked.
//! - `verify-full`: the chain, and the certificate must name the host of the URL.
//!
//! Trusted roots: the CA file (`sslrootcert=PATH` in the URL, else the `metadata_ca_file`
//! setting), else the system's store. `sslrootcert=system` asks for the system's store explicitly
//! and, as in libpq 16, implies `verify-full` and refuses a weaker mode.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, WebPkiSupportedAlgorithms};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::ParsedCertificate;
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio_postgres_rustls::MakeRustlsConnect;

/// libpq's `sslmode`, less `allow` (plain first, TLS if refused), which tokio-postgres cannot do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum SslMode {
    Disable,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

impl SslMode {
    pub fn parse(value: &str) -> Result<SslMode, String> {
        match value {
            "disable" => Ok(SslMode::Disable),
            "prefer" => Ok(SslMode::Prefer),
            "require" => Ok(SslMode::Require),
            "verify-ca" => Ok(SslMode::VerifyCa),
            "verify-full" => Ok(SslMode::VerifyFull),
            other => Err(format!(
                "metadata_url: sslmode={other:?} is not supported; use disable, prefer, require, verify-ca or verify-full"
            )),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            SslMode::Disable => "disable",
            SslMode::Prefer => "prefer",
            SslMode::Require => "require",
            SslMode::VerifyCa => "verify-ca",
            SslMode::VerifyFull => "verify-full",
        }
    }

    fn verifies(self) -> bool {
        self >= SslMode::VerifyCa
    }
}

/// A metadata URL without its TLS parameters, and those parameters.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SplitUrl {
    /// What tokio-postgres parses: the URL less `sslmode` and `sslrootcert`.
    pub rest: String,
    /// `sslmode`, when the URL has one (the last, as libpq reads it).
    pub sslmode: Option<SslMode>,
    /// `sslrootcert`, when the URL has one.
    pub sslrootcert: Option<String>,
}

/// Takes `sslmode` and `sslrootcert` out of a `postgres://` URL (percent-decoded query
/// parameters) or a `key=value` connection string. An unknown `sslmode` is an error naming it.
pub fn split_url(url: &str) -> Result<SplitUrl, String> {
    let mut split = SplitUrl { rest: String::new(), sslmode: None, sslrootcert: None };
    let mut take = |key: &str, value: String| -> Result<bool, String> {
        match key {
            "sslmode" => split.sslmode = Some(SslMode::parse(&value)?),
            "sslrootcert" => split.sslrootcert = Some(value),
            _ => return Ok(false),
        }
        Ok(true)
    };
    let rest = if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        // As tokio-postgres reads it: the credentials end at the first '@', the query starts at
        // the next '?'.
        let after_credentials = url.find('@').map_or(0, |at| at + 1);
        match url[after_credentials..].find('?').map(|q| after_credentials + q) {
            None => url.to_owned(),
            Some(q) => {
                let mut kept = Vec::new();
                for pair in url[q + 1..].split('&') {
                    let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
                    let key = percent_encoding::percent_decode_str(key).decode_utf8_lossy();
                    let value = percent_encoding::percent_decode_str(value).decode_utf8_lossy().into_owned();
                    if !take(&key, value)? {
                        kept.push(pair);
                    }
                }
                let kept = kept.join("&");
                if kept.is_empty() {
                    url[..q].to_owned()
                } else {
                    format!("{}?{kept}", &url[..q])
                }
            }
        }
    } else {
        let mut rest = String::new();
        let mut copied = 0;
        for (key, value, span) in key_values(url) {
            if take(&key, value)? {
                rest.push_str(&url[copied..span.start]);
                copied = span.end;
            }
        }
        rest.push_str(&url[copied..]);
        rest
    };
    split.rest = rest;
    Ok(split)
}

/// The `key = value` pairs of a libpq connection string with their byte spans; stops at the first
/// thing it cannot read (tokio-postgres then reports it).
fn key_values(s: &str) -> Vec<(String, String, std::ops::Range<usize>)> {
    let bytes = s.as_bytes();
    let skip_space = |mut i: usize| {
        while i < bytes.len() && bytes[i].is_ascii_whitespace() {
            i += 1;
        }
        i
    };
    let mut pairs = Vec::new();
    let mut i = skip_space(0);
    while i < bytes.len() {
        let start = i;
        while i < bytes.len() && !bytes[i].is_ascii_whitespace() && bytes[i] != b'=' {
            i += 1;
        }
        let key = s[start..i].to_owned();
        i = skip_space(i);
        if bytes.get(i) != Some(&b'=') {
            break;
        }
        i = skip_space(i + 1);
        let quoted = bytes.get(i) == Some(&b'\'');
        if quoted {
            i += 1;
        }
        let mut value = Vec::new();
        let mut closed = !quoted;
        while i < bytes.len() {
            match bytes[i] {
                b'\\' if i + 1 < bytes.len() => {
                    value.push(bytes[i + 1]);
                    i += 2;
                    continue;
                }
                b'\'' if quoted => {
                    closed = true;
                    i += 1;
                    break;
                }
                b if !quoted && b.is_ascii_whitespace() => break,
                b => value.push(b),
            }
            i += 1;
        }
        if !closed {
            break;
        }
        pairs.push((key, String::from_utf8_lossy(&value).into_owned(), start..i));
        i = skip_space(i);
    }
    pairs
}

/// Where the trusted roots come from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Roots {
    /// A PEM bundle.
    File(PathBuf),
    /// The operating system's store.
    System,
}

impl std::fmt::Display for Roots {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Roots::File(path) => write!(f, "the CA file {}", path.display()),
            Roots::System => f.write_str("the system's trusted roots"),
        }
    }
}

/// The connector every connection of one store uses, and what it was asked for.
#[derive(Clone)]
pub struct PgTls {
    /// The mode in effect (`require` with a CA file is `verify-ca`).
    pub mode: SslMode,
    /// The mode the settings asked for.
    pub requested: SslMode,
    /// The roots certificates are checked against, when they are.
    pub roots: Option<Roots>,
    pub connector: MakeRustlsConnect,
}

impl std::fmt::Debug for PgTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgTls")
            .field("mode", &self.mode)
            .field("requested", &self.requested)
            .field("roots", &self.roots)
            .finish_non_exhaustive()
    }
}

impl PgTls {
    /// The connector for `sslmode` (`None`: prefer) and a CA file: `sslrootcert` (`system` for the
    /// system's store) or else `ca_file`. Reads the CA file now, so a missing or empty one fails
    /// at start.
    pub fn new(sslmode: Option<SslMode>, sslrootcert: Option<&str>, ca_file: Option<&Path>) -> Result<PgTls, String> {
        let explicit = match sslrootcert {
            Some("system") => Some(Roots::System),
            Some(path) => Some(Roots::File(PathBuf::from(path))),
            None => ca_file.map(|path| Roots::File(path.to_owned())),
        };
        let (requested, mode) = modes(sslmode, explicit.as_ref())?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let algorithms = provider.signature_verification_algorithms;
        let (verifier, roots): (Arc<dyn ServerCertVerifier>, _) = if mode.verifies() {
            let roots = explicit.unwrap_or(Roots::System);
            let store = Arc::new(load_roots(&roots)?);
            let verifier: Arc<dyn ServerCertVerifier> = if mode == SslMode::VerifyFull {
                WebPkiServerVerifier::builder_with_provider(store, Arc::clone(&provider))
                    .build()
                    .map_err(|e| format!("metadata TLS: {roots}: {e}"))?
            } else {
                Arc::new(WithoutName { roots: Some(store), algorithms })
            };
            (verifier, Some(roots))
        } else {
            (Arc::new(WithoutName { roots: None, algorithms }), None)
        };
        let mut config = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("metadata TLS: {e}"))?
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_no_client_auth();
        // What Postgres 17 expects with `sslnegotiation=direct`; older servers ignore it.
        config.alpn_protocols = vec![b"postgresql".to_vec()];
        Ok(PgTls { mode, requested, roots, connector: MakeRustlsConnect::new(config) })
    }

    /// tokio-postgres's own mode: whether to ask for TLS and whether to insist. The connector
    /// decides what is checked.
    pub fn tokio_mode(&self) -> tokio_postgres::config::SslMode {
        match self.mode {
            SslMode::Disable => tokio_postgres::config::SslMode::Disable,
            SslMode::Prefer => tokio_postgres::config::SslMode::Prefer,
            SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull => tokio_postgres::config::SslMode::Require,
        }
    }

    /// A connection failure in words, with what the TLS settings have to do with it: a server
    /// refusing plain connections, a certificate that failed the mode's check.
    pub fn explain(&self, described: String) -> String {
        let mode = if self.mode == self.requested {
            format!("sslmode={}", self.mode.name())
        } else {
            format!("sslmode={}, checked as {} because a CA file is set", self.requested.name(), self.mode.name())
        };
        if described.contains("no encryption") {
            let why = if self.mode == SslMode::Disable {
                "the server demands TLS: pg_hba.conf refuses unencrypted connections; use sslmode=require or stronger"
            } else {
                "the server refuses unencrypted connections"
            };
            return format!("{described} ({why}; {mode})");
        }
        if described.contains("invalid peer certificate") {
            let roots = self.roots.as_ref().map_or_else(String::new, |roots| format!(" against {roots}"));
            return format!("{described} (the server's certificate failed the check of {mode}{roots})");
        }
        if described.contains("TLS") {
            return format!("{described} ({mode})");
        }
        described
    }
}

/// The mode asked for and the mode in effect, given the roots named, if any.
fn modes(sslmode: Option<SslMode>, explicit: Option<&Roots>) -> Result<(SslMode, SslMode), String> {
    // As libpq 16 has it: the system's store is only worth trusting for a checked name.
    let requested = match (sslmode, explicit) {
        (None, Some(Roots::System)) => SslMode::VerifyFull,
        (Some(mode), Some(Roots::System)) if mode != SslMode::VerifyFull => {
            return Err(format!(
                "metadata_url: sslrootcert=system needs sslmode=verify-full (or no sslmode), not {}",
                mode.name()
            ));
        }
        (mode, _) => mode.unwrap_or(SslMode::Prefer),
    };
    let mode = match (requested, explicit) {
        (SslMode::Require, Some(Roots::File(_))) => SslMode::VerifyCa,
        _ => requested,
    };
    Ok((requested, mode))
}

fn load_roots(roots: &Roots) -> Result<RootCertStore, String> {
    let mut store = RootCertStore::empty();
    match roots {
        Roots::File(path) => {
            let certs = CertificateDer::pem_file_iter(path)
                .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
                .map_err(|e| format!("metadata TLS: reading the CA file {}: {e}", path.display()))?;
            let (added, _) = store.add_parsable_certificates(certs);
            if added == 0 {
                return Err(format!("metadata TLS: the CA file {} holds no usable certificate", path.display()));
            }
        }
        Roots::System => {
            let found = rustls_native_certs::load_native_certs();
            store.add_parsable_certificates(found.certs);
            if store.is_empty() {
                return Err(format!(
                    "metadata TLS: no trusted roots found in the system's store ({} errors); set metadata_ca_file or sslrootcert",
                    found.errors.len()
                ));
            }
        }
    }
    Ok(store)
}

/// The checks short of `verify-full`'s: `prefer` and `require` (`roots` `None`) take any
/// certificate, `verify-ca` one that chains to `roots`, whatever its names. Either way the
/// handshake must be signed with the certificate's key.
#[derive(Debug)]
struct WithoutName {
    roots: Option<Arc<RootCertStore>>,
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for WithoutName {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if let Some(roots) = &self.roots {
            let cert = ParsedCertificate::try_from(end_entity)?;
            rustls::client::verify_server_cert_signed_by_trust_anchor(
                &cert,
                roots,
                intermediates,
                now,
                self.algorithms.all,
            )?;
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn url_parameters_are_taken_out_and_decoded() {
        let s =
            split_url("postgres://u:p%3F@h:5432/db?sslmode=verify-full&application_name=x&sslrootcert=%2Fa%20b.pem")
                .unwrap();
        assert_eq!(s.rest, "postgres://u:p%3F@h:5432/db?application_name=x");
        assert_eq!(s.sslmode, Some(SslMode::VerifyFull));
        assert_eq!(s.sslrootcert.as_deref(), Some("/a b.pem"));
        let s = split_url("postgresql://h/db?sslmode=require").unwrap();
        assert_eq!((s.rest.as_str(), s.sslmode), ("postgresql://h/db", Some(SslMode::Require)));
        let s = split_url("postgres://h/db").unwrap();
        assert_eq!((s.rest.as_str(), s.sslmode, s.sslrootcert), ("postgres://h/db", None, None));
    }

    #[test]
    fn key_value_parameters_are_taken_out() {
        let s = split_url("host=h sslmode = 'verify-ca' user=u sslrootcert='/x y\\'s.pem' dbname=d").unwrap();
        assert_eq!(s.rest, "host=h  user=u  dbname=d");
        assert_eq!(s.sslmode, Some(SslMode::VerifyCa));
        assert_eq!(s.sslrootcert.as_deref(), Some("/x y's.pem"));
        s.rest.parse::<tokio_postgres::Config>().unwrap();
    }

    #[test]
    fn an_unknown_sslmode_is_named() {
        for url in ["postgres://h/db?sslmode=verify_full", "host=h sslmode=verify_full"] {
            let e = split_url(url).unwrap_err();
            assert!(e.contains("sslmode=\"verify_full\"") && e.contains("verify-full"), "{e}");
        }
        assert!(split_url("postgres://h/db?sslmode=allow").unwrap_err().contains("\"allow\""));
    }

    #[test]
    fn require_with_a_ca_file_verifies_the_chain() {
        let dir = tempfile::tempdir().unwrap();
        let ca = dir.path().join("ca.pem");
        let missing = PgTls::new(Some(SslMode::Require), None, Some(&ca)).unwrap_err();
        assert!(missing.contains("ca.pem"), "{missing}");
        std::fs::write(&ca, "not a certificate").unwrap();
        let empty = PgTls::new(Some(SslMode::VerifyFull), Some(ca.to_str().unwrap()), None).unwrap_err();
        assert!(empty.contains("no usable certificate"), "{empty}");
        let system = Some(&Roots::System);
        assert_eq!(modes(None, system).unwrap(), (SslMode::VerifyFull, SslMode::VerifyFull));
        assert!(modes(Some(SslMode::Require), system).is_err());
        let file = Roots::File(ca.clone());
        assert_eq!(modes(Some(SslMode::Require), Some(&file)).unwrap(), (SslMode::Require, SslMode::VerifyCa));
        assert_eq!(modes(Some(SslMode::Prefer), Some(&file)).unwrap(), (SslMode::Prefer, SslMode::Prefer));
        let weaker = PgTls::new(Some(SslMode::VerifyCa), Some("system"), None).unwrap_err();
        assert!(weaker.contains("sslrootcert=system needs sslmode=verify-full"), "{weaker}");
        let plain = PgTls::new(Some(SslMode::Require), None, None).unwrap();
        assert_eq!((plain.mode, plain.roots), (SslMode::Require, None));
        assert_eq!(PgTls::new(None, None, None).unwrap().mode, SslMode::Prefer);
    }
}
