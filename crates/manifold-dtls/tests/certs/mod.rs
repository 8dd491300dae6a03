//! Test certificates, shared with manifold-core's negotiation tests (included by path).

use str0m::config::DtlsCert;

/// A self-signed certificate for `alg`, in the form str0m takes.
pub fn certificate(alg: &'static rcgen::SignatureAlgorithm) -> DtlsCert {
    let key = rcgen::KeyPair::generate_for(alg).expect("key generation");
    let cert = rcgen::CertificateParams::new(vec!["manifold-test".to_owned()])
        .expect("params")
        .self_signed(&key)
        .expect("self-signed certificate");
    DtlsCert {
        certificate: cert.der().to_vec(),
        private_key: key.serialize_der(),
    }
}
