//! OpenPGP both ways: round trips for RSA and Curve25519 keys, the message's shape as WAL-G
//! writes it, the cipher choice, messages gpg and WAL-G made, and every way a key or a
//! message can be wrong.

use super::encrypt::SEIPD_TAG;
use super::keys::{choose_cipher, primary_self_signature};
use super::{PgpDecryptor, PgpKeys};
use ::pgp::composed::PublicOrSecret;
use ::pgp::crypto::sym::SymmetricKeyAlgorithm;
use std::io::{self, Read};
use std::sync::Arc;

fn data(name: &str) -> Vec<u8> {
    std::fs::read(format!(
        "{}/tests/data/pgp/{name}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap()
}

const PASSPHRASE: &str = "wal-rus test passphrase";

fn keys(name: &str, pass: Option<&str>) -> Arc<PgpKeys> {
    Arc::new(PgpKeys::parse(&data(name), "WALG_PGP_KEY_PATH", pass.map(String::from)).unwrap())
}

fn sealed(keys: &PgpKeys, plain: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    keys.seal()
        .unwrap()
        .reader(plain)
        .unwrap()
        .read_to_end(&mut out)
        .unwrap();
    out
}

fn opened(keys: &Arc<PgpKeys>, stored: Vec<u8>) -> io::Result<Vec<u8>> {
    let mut out = Vec::new();
    PgpDecryptor::new(Box::new(io::Cursor::new(stored)), keys.clone())
        .read_to_end(&mut out)
        .map(|_| out)
}

fn payload(len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i * 131 % 251) as u8 ^ (i >> 9) as u8)
        .collect()
}

#[test]
fn round_trip_rsa_and_curve25519() {
    for (key, pass) in [
        ("rsa.asc", None),
        ("x25519-passphrase.asc", Some(PASSPHRASE)),
    ] {
        let k = keys(key, pass);
        assert!(k.has_secret());
        assert_eq!(k.cipher(), SymmetricKeyAlgorithm::AES128, "{key}");
        for len in [
            0usize,
            1,
            191,
            192,
            8191 - 6,
            8192 - 6,
            8192,
            3 * 8192,
            100_000,
        ] {
            let plain = payload(len);
            let stored = sealed(&k, &plain);
            assert!(opened(&k, stored).unwrap() == plain, "{key} {len}");
        }
    }
}

#[test]
fn both_passes_identical_and_objects_differ() {
    let k = keys("rsa.asc", None);
    let plain = payload(50_000);
    let seal = k.seal().unwrap();
    let read = |step: usize| {
        let mut r = seal.reader(&plain[..]).unwrap();
        let mut out = Vec::new();
        let mut buf = vec![0u8; step];
        loop {
            let n = r.read(&mut buf).unwrap();
            if n == 0 {
                return out;
            }
            out.extend_from_slice(&buf[..n]);
        }
    };
    let a = read(1);
    let b = read(7000);
    let c = read(1 << 16);
    assert!(a == b && b == c, "the passes of one object agree");
    // Another object (another seal) has another session key and prefix.
    assert!(sealed(&k, &plain) != a);
}

#[test]
fn message_shape_is_walgs() {
    // Two recipients: one PKESK each, then SEIPD v1; no compression inside.
    let k = keys("rsa-and-other.pub.asc", None);
    assert!(!k.has_secret());
    let stored = sealed(&k, &payload(20_000));
    let mut pos = 0;
    let mut tags = Vec::new();
    while pos < stored.len() {
        let tag = stored[pos] & 0x3F;
        tags.push(tag);
        assert_eq!(stored[pos] & 0xC0, 0xC0, "new packet format");
        if tag == SEIPD_TAG {
            assert_eq!(stored[pos + 1], 0xED, "8 KiB partial bodies");
            assert_eq!(stored[pos + 2], 1, "SEIPD version 1");
            break;
        }
        // PKESK: fixed two-octet length.
        let (len, hl) = if stored[pos + 1] < 192 {
            (stored[pos + 1] as usize, 1)
        } else {
            (
                ((stored[pos + 1] as usize - 192) << 8) + stored[pos + 2] as usize + 192,
                2,
            )
        };
        assert_eq!(stored[pos + 1 + hl], 3, "PKESK version 3");
        pos += 1 + hl + len;
    }
    assert_eq!(tags, [1, 1, SEIPD_TAG]);
    // Public keys only: no decryption, and the error says so by name.
    let e = opened(&k, stored).unwrap_err();
    assert!(e.to_string().contains("only public keys"), "{e}");
    assert!(e.to_string().contains("WALG_PGP_KEY_PATH"), "{e}");
}

#[test]
fn each_secret_key_of_a_keyring_opens_it() {
    let public = keys("rsa-and-other.pub.asc", None);
    let plain = payload(9000);
    let stored = sealed(&public, &plain);
    for key in ["rsa.asc", "other.asc"] {
        assert!(
            opened(&keys(key, None), stored.clone()).unwrap() == plain,
            "{key}"
        );
    }
}

#[test]
fn cipher_follows_the_recipients_preferences() {
    let only256 = keys("aes256.asc", None);
    assert_eq!(only256.cipher(), SymmetricKeyAlgorithm::AES256);
    let plain = payload(10_000);
    assert!(opened(&only256, sealed(&only256, &plain)).unwrap() == plain);
    let secret = PublicOrSecret::from_armor_many(&data("aes256.asc")[..])
        .unwrap()
        .0
        .next()
        .unwrap()
        .unwrap();
    let PublicOrSecret::Secret(s) = secret else {
        panic!("a secret key")
    };
    let p = s.to_public_key();
    let (sig, _) = primary_self_signature(&p).unwrap();
    assert_eq!(
        sig.preferred_symmetric_algs(),
        [SymmetricKeyAlgorithm::AES256]
    );
    assert_eq!(
        choose_cipher(&[vec![SymmetricKeyAlgorithm::AES256], vec![]]),
        SymmetricKeyAlgorithm::AES128
    );
    assert_eq!(
        choose_cipher(&[vec![
            SymmetricKeyAlgorithm::AES256,
            SymmetricKeyAlgorithm::AES128
        ]]),
        SymmetricKeyAlgorithm::AES128
    );
}

#[test]
fn wrong_key_and_passphrase_fail_clearly() {
    let plain = payload(5000);
    let stored = sealed(&keys("rsa.asc", None), &plain);
    let e = opened(&keys("other.asc", None), stored).unwrap_err();
    assert!(e.to_string().contains("has no secret key for it"), "{e}");
    let x = keys("x25519-passphrase.asc", Some(PASSPHRASE));
    let stored = sealed(&x, &plain);
    let e = opened(&keys("x25519-passphrase.asc", None), stored.clone()).unwrap_err();
    assert!(e.to_string().contains("set WALG_PGP_KEY_PASSPHRASE"), "{e}");
    let e = opened(&keys("x25519-passphrase.asc", Some("wrong")), stored).unwrap_err();
    assert!(
        e.to_string()
            .contains("WALG_PGP_KEY_PASSPHRASE does not unlock"),
        "{e}"
    );
    // What is not a message at all.
    let e = opened(&x, b"\x04\x22\x4d\x18 an lz4 frame".to_vec()).unwrap_err();
    assert!(e.to_string().contains("not an OpenPGP message"), "{e}");
    let e = opened(&x, Vec::new()).unwrap_err();
    assert!(e.to_string().contains("OpenPGP"), "{e}");
}

#[test]
fn truncation_and_tampering_fail() {
    let k = keys("rsa.asc", None);
    let plain = payload(30_000);
    let stored = sealed(&k, &plain);
    let head = stored.len() - 30_000 - 100;
    for cut in [
        head - 10,
        head + 5,
        head + 8200,
        stored.len() - 22,
        stored.len() - 1,
    ] {
        assert!(
            opened(&k, stored[..cut].to_vec()).is_err(),
            "cut at {cut} of {}",
            stored.len()
        );
    }
    for at in [head + 40, head + 9000, stored.len() - 30, stored.len() - 1] {
        let mut t = stored.clone();
        t[at] ^= 0x10;
        assert!(opened(&k, t).is_err(), "flipped byte {at}");
    }
    let mut longer = stored.clone();
    longer.extend_from_slice(&[0xC0 | 11, 0]);
    assert!(opened(&k, longer).is_err(), "a packet after the message");
}

#[test]
fn decrypts_what_gpg_made() {
    // gpg 2.2 --encrypt: old-format packets, ZLIB compression inside.
    let k = keys("rsa.asc", None);
    let plain: Vec<u8> = (0..20_000).map(|i| ((i * 7 + 3) % 256) as u8).collect();
    assert!(opened(&k, data("gpg-rsa-zlib.gpg")).unwrap() == plain);
}

#[test]
fn decrypts_what_walg_made() {
    // WAL-G v3.0.8 (go-crypto) with a passphrase-protected Curve25519 key, no compression.
    let k = keys("x25519-passphrase.asc", Some(PASSPHRASE));
    assert!(
        opened(&k, data("walg-x25519-history.bin")).unwrap()
            == b"1\t0/3000028\tno recovery target specified\n"
    );
}

#[test]
fn key_material_errors() {
    let e = PgpKeys::parse(b"not a key", "WALG_PGP_KEY", None).unwrap_err();
    assert!(e.contains("not an ASCII-armored"), "{e}");
    let e = PgpKeys::parse(&[0x99, 1, 2, 3], "WALG_PGP_KEY", None).unwrap_err();
    assert!(e.contains("binary"), "{e}");
}
