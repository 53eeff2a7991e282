//! TLS for registries: the system's CA certificates plus the administrator's `ca_certs`, with
//! one addition to WebPKI's rules: a server certificate that is byte for byte one of the
//! configured `ca_certs` is trusted as it is. That is what configuring a self-signed
//! registry certificate means (docker's own recipe, `openssl req -x509`, makes one with
//! CA:TRUE, which WebPKI refuses as a server certificate), and what Go-based tools accept.

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};
use std::path::{Path, PathBuf};
use std::sync::Arc;

#[derive(Debug)]
struct Verifier {
    webpki: Arc<WebPkiServerVerifier>,
    pinned: Vec<CertificateDer<'static>>,
}

impl ServerCertVerifier for Verifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self
            .webpki
            .verify_server_cert(end_entity, intermediates, server_name, ocsp, now)
        {
            Err(_)
                if self
                    .pinned
                    .iter()
                    .any(|p| p.as_ref() == end_entity.as_ref()) =>
            {
                Ok(ServerCertVerified::assertion())
            }
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.webpki.supported_verify_schemes()
    }
}

/// The rustls client configuration for registries; errors are messages for the user.
pub fn client_config(ca_certs: &[PathBuf]) -> Result<rustls::ClientConfig, String> {
    client_config_with(ca_certs, None)
}

/// [`client_config`] showing the certificate in the PEM file `identity.0` (with the
/// certificates that chain it to its CA, if any), whose private key is in `identity.1`,
/// to servers that ask for one (etcd's `--client-cert-auth`).
pub fn client_config_with(
    ca_certs: &[PathBuf],
    identity: Option<(&Path, &Path)>,
) -> Result<rustls::ClientConfig, String> {
    // ring, selected explicitly: the default aws-lc provider is a slow C build (DESIGN.md).
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = RootCertStore::empty();
    // Unreadable system certificates are skipped, as curl does; the configured ones must load.
    for cert in rustls_native_certs::load_native_certs().certs {
        let _ = roots.add(cert);
    }
    let mut pinned = Vec::new();
    for path in ca_certs {
        let pem = std::fs::read(path)
            .map_err(|e| format!("cannot read the CA certificate {}: {e}", path.display()))?;
        let certs = CertificateDer::pem_slice_iter(&pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("{}: not a PEM certificate: {e}", path.display()))?;
        if certs.is_empty() {
            return Err(format!("{}: holds no PEM certificate", path.display()));
        }
        for cert in certs {
            roots
                .add(cert.clone())
                .map_err(|e| format!("{}: unusable CA certificate: {e}", path.display()))?;
            pinned.push(cert);
        }
    }
    let webpki = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .map_err(|e| format!("cannot set up certificate verification: {e}"))?;
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("cannot set up TLS: {e}"))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(Verifier { webpki, pinned }));
    let Some((cert, key)) = identity else {
        return Ok(config.with_no_client_auth());
    };
    let chain = CertificateDer::pem_file_iter(cert)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("{}: not a readable PEM certificate: {e}", cert.display()))?;
    if chain.is_empty() {
        return Err(format!("{}: holds no PEM certificate", cert.display()));
    }
    let key_der = PrivateKeyDer::from_pem_file(key).map_err(|e| {
        format!(
            "{}: not a readable PEM private key (PKCS#8, RSA or EC): {e}",
            key.display()
        )
    })?;
    config.with_client_auth_cert(chain, key_der).map_err(|e| {
        format!(
            "{} and {}: not a certificate and its key: {e}",
            cert.display(),
            key.display()
        )
    })
}

/// Whether `error` (anywhere in its chain, including inside I/O errors) is a refused certificate.
pub fn is_certificate_error(error: &(dyn std::error::Error + 'static)) -> bool {
    certificate_error(error).is_some()
}

/// What is wrong with the server's certificate, in words and with what to do, where
/// `error` (or one it wraps) is a certificate's refusal.
pub fn certificate_problem(error: &(dyn std::error::Error + 'static)) -> Option<String> {
    use rustls::CertificateError as C;
    let problem = match certificate_error(error)? {
        C::UnknownIssuer => "is signed by a CA berth does not trust: add the CA's certificate (PEM) to [registry] ca_certs in berth's configuration",
        C::Expired => "has expired: the registry's administrator must renew it",
        C::NotValidYet => "is not valid yet (or this machine's clock is behind)",
        C::NotValidForName => "is not for this host name: use the name the certificate was made for",
        C::Revoked => "has been revoked",
        C::BadSignature => "has a bad signature",
        other => {
            let text = format!("{other:?}");
            return Some(match text.contains("CaUsedAsEndEntity") {
                true => "the registry's certificate is a CA's, not a server's: the registry must serve a certificate its CA signed (and [registry] ca_certs trust that CA)".into(),
                false => format!("the registry's certificate was refused ({text})"),
            });
        }
    };
    Some(format!("the registry's certificate {problem}"))
}

/// The certificate refusal `error` is, or wraps.
fn certificate_error<'a>(
    error: &'a (dyn std::error::Error + 'static),
) -> Option<&'a rustls::CertificateError> {
    let mut current: Option<&'a (dyn std::error::Error + 'static)> = Some(error);
    while let Some(e) = current {
        if let Some(rustls::Error::InvalidCertificate(refusal)) = e.downcast_ref::<rustls::Error>()
        {
            return Some(refusal);
        }
        // io::Error's source() skips the error it wraps: look inside explicitly.
        if let Some(inner) = e
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
        {
            if let Some(refusal) = certificate_error(inner) {
                return Some(refusal);
            }
        }
        current = e.source();
    }
    None
}
