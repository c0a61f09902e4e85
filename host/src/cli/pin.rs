//! TLS to the node's own daemon: the CLI trusts exactly the certificate in `api.ssl.cert`
//! (pinned, whatever name it carries), so a self-signed certificate works, and so does a
//! public one issued for the node's name while the CLI dials 127.0.0.1.

use std::path::Path;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, SignatureScheme};

/// The only protocol the daemon's TLS offers (`tls.rs`).
const ALPN_HTTP_1_1: &[u8] = b"http/1.1";

/// A client TLS config that accepts the daemon only when it presents the first certificate
/// of the PEM file at `cert` (the node's certificate, as `fullchain.pem` orders them).
pub fn client_config(cert: &Path) -> anyhow::Result<Arc<ClientConfig>> {
    let pinned = CertificateDer::pem_file_iter(cert)
        .map_err(|e| anyhow::anyhow!("api.ssl.cert: cannot read {}: {e}", cert.display()))?
        .next()
        .ok_or_else(|| anyhow::anyhow!("api.ssl.cert: {} holds no certificate", cert.display()))?
        .map_err(|e| anyhow::anyhow!("api.ssl.cert: {}: {e}", cert.display()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = Arc::new(Pinned {
        certificate: pinned,
        provider: provider.clone(),
    });
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("ring's default provider has the suites of TLS 1.2 and 1.3")
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    config.alpn_protocols = vec![ALPN_HTTP_1_1.to_vec()];
    Ok(Arc::new(config))
}

/// Accepts one certificate, byte for byte; the handshake's signatures are still checked
/// against it, so only the holder of its key passes.
#[derive(Debug)]
struct Pinned {
    /// The certificate the daemon must present.
    certificate: CertificateDer<'static>,
    /// Verifies the handshake's signatures.
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for Pinned {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if end_entity.as_ref() == self.certificate.as_ref() {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::General(
                "the daemon's certificate is not the one in api.ssl.cert".into(),
            ))
        }
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
