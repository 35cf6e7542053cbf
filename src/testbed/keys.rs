//! The service-account signing key kube-apiserver requires, made with ring so the test bed
//! needs no openssl.

use base64::{Engine, engine::general_purpose::STANDARD};
use ring::{
    rand::SystemRandom,
    signature::{ECDSA_P256_SHA256_ASN1_SIGNING, EcdsaKeyPair, KeyPair},
};

/// DER prefix of a P-256 SubjectPublicKeyInfo, before the 65-byte uncompressed point.
const P256_SPKI_PREFIX: [u8; 26] = [
    0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08, 0x2a,
    0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00,
];

/// A fresh P-256 key pair as (PKCS#8 private key PEM, SubjectPublicKeyInfo PEM).
pub fn service_account_key_pair() -> (String, String) {
    let rng = SystemRandom::new();
    let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &rng)
        .expect("key generation");
    let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, pkcs8.as_ref(), &rng)
        .expect("own key");
    let mut spki = P256_SPKI_PREFIX.to_vec();
    spki.extend_from_slice(pair.public_key().as_ref());
    (pem("PRIVATE KEY", pkcs8.as_ref()), pem("PUBLIC KEY", &spki))
}

fn pem(label: &str, der: &[u8]) -> String {
    let body = STANDARD.encode(der);
    let lines: Vec<&str> = body
        .as_bytes()
        .chunks(64)
        .map(|c| std::str::from_utf8(c).expect("base64 is ascii"))
        .collect();
    format!(
        "-----BEGIN {label}-----\n{}\n-----END {label}-----\n",
        lines.join("\n")
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn pem_blocks_are_well_formed() {
        let (private, public) = super::service_account_key_pair();
        assert!(
            private.starts_with("-----BEGIN PRIVATE KEY-----\n")
                && private.ends_with("-----END PRIVATE KEY-----\n")
        );
        assert!(public.starts_with("-----BEGIN PUBLIC KEY-----\n"));
        // 26-byte prefix + 65-byte point = 91 bytes = 124 base64 characters.
        let body: String = public.lines().filter(|l| !l.starts_with("-----")).collect();
        assert_eq!(body.len(), 124);
    }
}
