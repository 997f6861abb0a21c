//! Test keys made at test time (nothing committed): RSA 2048 and Ed25519 pairs from
//! aws-lc-rs, as the signing key and the public key PEM an `[apps]` file would hold.

use aws_lc_rs::encoding::{AsDer, Pkcs8V1Der, PublicKeyX509Der};
use aws_lc_rs::signature::KeyPair as _;
use jsonwebtoken::EncodingKey;

/// A PEM block of `der`.
pub(crate) fn pem(label: &str, der: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut b64 = String::new();
    for chunk in der.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | u32::from(*b) << (16 - 8 * i));
        for i in 0..4 {
            if i <= chunk.len() {
                b64.push(T[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                b64.push('=');
            }
        }
    }
    let lines: Vec<&str> = b64
        .as_bytes()
        .chunks(64)
        .map(|l| std::str::from_utf8(l).unwrap())
        .collect();
    format!(
        "-----BEGIN {label}-----\n{}\n-----END {label}-----\n",
        lines.join("\n")
    )
}

/// A fresh RSA 2048 key: the signing key and the public key PEM.
pub(crate) fn rsa_key() -> (EncodingKey, String) {
    let kp = aws_lc_rs::rsa::KeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048).unwrap();
    let private: Pkcs8V1Der = kp.as_der().unwrap();
    let public: PublicKeyX509Der = kp.public_key().as_der().unwrap();
    let signing = EncodingKey::from_rsa_pem(pem("PRIVATE KEY", private.as_ref()).as_bytes());
    (signing.unwrap(), pem("PUBLIC KEY", public.as_ref()))
}

/// A fresh Ed25519 key: the signing key and the public key PEM.
pub(crate) fn ed_key() -> (EncodingKey, String) {
    let kp = aws_lc_rs::signature::Ed25519KeyPair::generate().unwrap();
    let private: Pkcs8V1Der = kp.as_der().unwrap();
    let public: PublicKeyX509Der = kp.public_key().as_der().unwrap();
    (
        EncodingKey::from_ed_der(private.as_ref()),
        pem("PUBLIC KEY", public.as_ref()),
    )
}
