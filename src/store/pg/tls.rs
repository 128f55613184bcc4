//! TLS to PostgreSQL, with libpq's meanings of `sslmode`: `disable` (never), `allow` and
//! `prefer` (when the server offers it), `require` (always; the certificate is not checked,
//! unless a CA file is given or `~/.postgresql/root.crt` exists, as libpq does), `verify-ca`
//! (a certificate signed by the CA of `sslrootcert` or `~/.postgresql/root.crt`: required)
//! and `verify-full` (a trusted CA's, for the host connected to; trusted: `sslrootcert`,
//! else `~/.postgresql/root.crt`, else the system's, as `sslrootcert=system` asks).

use std::path::PathBuf;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};

/// How much of the server's certificate is checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Check {
  /// Encryption only.
  None,
  /// Signed by a trusted CA.
  Ca,
  /// Signed by a trusted CA, for this host.
  Full,
}

/// The `sslmode` and `sslrootcert` of a URL: what tokio-postgres is told (it knows `disable`,
/// `prefer` and `require`) and how the certificate is checked.
pub fn settings(
  mode: Option<&str>,
  root_cert: Option<&str>,
) -> Result<(tokio_postgres::config::SslMode, Check), String> {
  use tokio_postgres::config::SslMode;
  let mode = mode.unwrap_or("prefer");
  if root_cert == Some("system") && mode != "verify-full" {
    // The system's CAs vouch for any public name: without the name check, for anyone.
    return Err(format!(
      "sslrootcert=system needs sslmode=verify-full (not {mode})"
    ));
  }
  // A CA file given (or libpq's default one present) is checked against, as libpq does.
  let has_ca = root_cert.is_some() || home_root().is_some();
  let check = |default| if has_ca { Check::Ca } else { default };
  Ok(match mode {
    "disable" => (SslMode::Disable, Check::None),
    "allow" | "prefer" => (SslMode::Prefer, check(Check::None)),
    "require" => (SslMode::Require, check(Check::None)),
    "verify-ca" if !has_ca => {
      return Err(
        "sslmode=verify-ca needs the CA to trust: sslrootcert=<a PEM file> (or ~/.postgresql/root.crt)"
          .to_string(),
      )
    }
    "verify-ca" => (SslMode::Require, Check::Ca),
    "verify-full" => (SslMode::Require, Check::Full),
    other => {
      return Err(format!(
        "sslmode={other} is not one of disable, allow, prefer, require, verify-ca, verify-full"
      ))
    }
  })
}

/// libpq's default CA file, when it exists.
fn home_root() -> Option<PathBuf> {
  std::env::var_os("HOME")
    .map(|h| PathBuf::from(h).join(".postgresql/root.crt"))
    .filter(|p| p.exists())
}

/// The client configuration for `check`, trusting `root_cert` (see the module's comment).
pub fn client_config(check: Check, root_cert: Option<&str>) -> Result<Arc<ClientConfig>, String> {
  let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
  let builder = ClientConfig::builder_with_provider(provider.clone())
    .with_safe_default_protocol_versions()
    .map_err(|e| format!("TLS: {e}"))?;
  let config = match check {
    Check::None => builder
      .dangerous()
      .with_custom_certificate_verifier(Arc::new(Unchecked(provider)))
      .with_no_client_auth(),
    Check::Ca | Check::Full => {
      let roots = Arc::new(roots(root_cert)?);
      let webpki = WebPkiServerVerifier::builder_with_provider(roots, provider)
        .build()
        .map_err(|e| format!("TLS: {e}"))?;
      if check == Check::Full {
        builder.with_webpki_verifier(webpki).with_no_client_auth()
      } else {
        builder
          .dangerous()
          .with_custom_certificate_verifier(Arc::new(AnyName(webpki)))
          .with_no_client_auth()
      }
    }
  };
  Ok(Arc::new(config))
}

/// The trusted CAs.
fn roots(root_cert: Option<&str>) -> Result<RootCertStore, String> {
  let mut roots = RootCertStore::empty();
  let file = match root_cert {
    Some("system") => None,
    Some(path) => Some(PathBuf::from(path)),
    None => home_root(),
  };
  if let Some(file) = file {
    let certs =
      CertificateDer::pem_file_iter(&file).map_err(|e| format!("sslrootcert {}: {e}", file.display()))?;
    for cert in certs {
      let cert = cert.map_err(|e| format!("sslrootcert {}: {e}", file.display()))?;
      roots
        .add(cert)
        .map_err(|e| format!("sslrootcert {}: {e}", file.display()))?;
    }
    if roots.is_empty() {
      return Err(format!("sslrootcert {}: no certificate in it", file.display()));
    }
  } else {
    let found = rustls_native_certs::load_native_certs();
    roots.add_parsable_certificates(found.certs);
    if roots.is_empty() {
      return Err("no trusted CA certificates found on this system: name one with sslrootcert=".to_string());
    }
  }
  Ok(roots)
}

/// Accepts any certificate (`sslmode=require` without a CA): the handshake's signatures are
/// still checked, so the connection is encrypted to whoever holds the certificate's key.
#[derive(Debug)]
struct Unchecked(Arc<CryptoProvider>);

impl ServerCertVerifier for Unchecked {
  fn verify_server_cert(
    &self,
    _end_entity: &CertificateDer<'_>,
    _intermediates: &[CertificateDer<'_>],
    _server_name: &ServerName<'_>,
    _ocsp: &[u8],
    _now: UnixTime,
  ) -> Result<ServerCertVerified, rustls::Error> {
    Ok(ServerCertVerified::assertion())
  }

  fn verify_tls12_signature(
    &self,
    message: &[u8],
    cert: &CertificateDer<'_>,
    dss: &DigitallySignedStruct,
  ) -> Result<HandshakeSignatureValid, rustls::Error> {
    verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
  }

  fn verify_tls13_signature(
    &self,
    message: &[u8],
    cert: &CertificateDer<'_>,
    dss: &DigitallySignedStruct,
  ) -> Result<HandshakeSignatureValid, rustls::Error> {
    verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
  }

  fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
    self.0.signature_verification_algorithms.supported_schemes()
  }
}

/// `verify-ca`: the chain is checked, the host name is not.
#[derive(Debug)]
struct AnyName(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for AnyName {
  fn verify_server_cert(
    &self,
    end_entity: &CertificateDer<'_>,
    intermediates: &[CertificateDer<'_>],
    server_name: &ServerName<'_>,
    ocsp: &[u8],
    now: UnixTime,
  ) -> Result<ServerCertVerified, rustls::Error> {
    match self
      .0
      .verify_server_cert(end_entity, intermediates, server_name, ocsp, now)
    {
      Err(rustls::Error::InvalidCertificate(
        CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
      )) => Ok(ServerCertVerified::assertion()),
      other => other,
    }
  }

  fn verify_tls12_signature(
    &self,
    message: &[u8],
    cert: &CertificateDer<'_>,
    dss: &DigitallySignedStruct,
  ) -> Result<HandshakeSignatureValid, rustls::Error> {
    self.0.verify_tls12_signature(message, cert, dss)
  }

  fn verify_tls13_signature(
    &self,
    message: &[u8],
    cert: &CertificateDer<'_>,
    dss: &DigitallySignedStruct,
  ) -> Result<HandshakeSignatureValid, rustls::Error> {
    self.0.verify_tls13_signature(message, cert, dss)
  }

  fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
    self.0.supported_verify_schemes()
  }
}

#[cfg(test)]
mod tests {
  use super::*;
  use tokio_postgres::config::SslMode;

  #[test]
  fn sslmodes_mean_what_they_mean_for_libpq() {
    assert_eq!(settings(None, None).unwrap(), (SslMode::Prefer, Check::None));
    assert_eq!(
      settings(Some("disable"), None).unwrap(),
      (SslMode::Disable, Check::None)
    );
    assert_eq!(
      settings(Some("require"), None).unwrap(),
      (SslMode::Require, Check::None)
    );
    assert_eq!(
      settings(Some("require"), Some("/ca.pem")).unwrap(),
      (SslMode::Require, Check::Ca)
    );
    assert_eq!(
      settings(Some("verify-ca"), Some("/ca.pem")).unwrap(),
      (SslMode::Require, Check::Ca)
    );
    assert_eq!(
      settings(Some("verify-full"), None).unwrap(),
      (SslMode::Require, Check::Full)
    );
    assert_eq!(
      settings(Some("verify-full"), Some("system")).unwrap(),
      (SslMode::Require, Check::Full)
    );
    if home_root().is_none() {
      // The system's CAs without the name check would accept any public certificate.
      assert!(settings(Some("verify-ca"), None)
        .unwrap_err()
        .contains("sslrootcert"));
    }
    assert!(settings(Some("verify-ca"), Some("system"))
      .unwrap_err()
      .contains("verify-full"));
    assert!(settings(Some("require"), Some("system"))
      .unwrap_err()
      .contains("verify-full"));
    assert!(settings(Some("always"), None)
      .unwrap_err()
      .contains("sslmode=always"));
  }

  #[test]
  fn a_missing_or_empty_root_certificate_file_is_named() {
    let e = client_config(Check::Full, Some("/nonexistent/ca.pem")).unwrap_err();
    assert!(e.contains("/nonexistent/ca.pem"), "{e}");
    let dir = std::env::temp_dir().join(format!("bmad-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let empty = dir.join("empty.pem");
    std::fs::write(&empty, "not a certificate\n").unwrap();
    let e = client_config(Check::Ca, empty.to_str()).unwrap_err();
    assert!(e.contains("no certificate"), "{e}");
    let _ = std::fs::remove_dir_all(&dir);
    assert!(client_config(Check::None, None).is_ok());
  }
}
