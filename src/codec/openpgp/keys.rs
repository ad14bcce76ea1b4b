//! The key material, parsed once per process: the recipients a message is encrypted to,
//! chosen among each key's subkeys as go-crypto (WAL-G's library) chooses them, the cipher
//! their preferences allow, and the secret keys that may open what is read.

use ::pgp::composed::{PlainSessionKey, PublicOrSecret, SignedPublicKey, SignedSecretKey};
use ::pgp::crypto::sym::SymmetricKeyAlgorithm;
use ::pgp::packet::{self as pkt, PublicKeyEncryptedSessionKey, Signature, SignatureType};
use ::pgp::types::{DecryptionKey, EskType, KeyDetails, KeyId, Password, PkeskBytes};
use std::sync::OnceLock;

use super::{DECRYPT_STATE_BYTES, ENCRYPT_STATE_BYTES, hex_id};

/// The keys, parsed: whom to encrypt for, and what can decrypt.
pub struct PgpKeys {
    /// The setting the keys came from, for messages.
    pub(super) setting: &'static str,
    /// Encryption keys, one per key in the material; or why some key has none (an error
    /// only when encrypting, as with WAL-G).
    pub(super) recipients: Result<Vec<Recipient>, String>,
    /// The cipher for messages written.
    pub(super) cipher: SymmetricKeyAlgorithm,
    /// Every secret key packet in the material (primary keys and subkeys).
    pub(super) secrets: Vec<SecretEntry>,
    /// `WALG_PGP_KEY_PASSPHRASE`.
    pub(super) passphrase: Option<Password>,
    /// Bytes of the key material, for the memory plan.
    material_bytes: u64,
}

impl std::fmt::Debug for PgpKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgpKeys")
            .field("setting", &self.setting)
            .field("recipients", &self.recipients.as_ref().map(Vec::len))
            .field("cipher", &self.cipher)
            .field("secrets", &self.secrets.len())
            .finish_non_exhaustive()
    }
}

/// One recipient's encryption key.
#[derive(Clone, Debug)]
pub(super) enum Recipient {
    Primary(pkt::PublicKey),
    Sub(pkt::PublicSubkey),
}

/// A secret key packet, and the same unlocked with the passphrase once needed.
pub(super) struct SecretEntry {
    pub(super) key: SecretPacket,
    pub(super) unlocked: OnceLock<Result<SecretPacket, String>>,
}

#[derive(Clone)]
pub(super) enum SecretPacket {
    Primary(pkt::SecretKey),
    Sub(pkt::SecretSubkey),
}

impl SecretPacket {
    pub(super) fn key_id(&self) -> KeyId {
        match self {
            SecretPacket::Primary(k) => k.public_key().legacy_key_id(),
            SecretPacket::Sub(k) => k.public_key().legacy_key_id(),
        }
    }

    pub(super) fn is_locked(&self) -> bool {
        match self {
            SecretPacket::Primary(k) => k.secret_params().is_encrypted(),
            SecretPacket::Sub(k) => k.secret_params().is_encrypted(),
        }
    }

    pub(super) fn matches(&self, esk: &PublicKeyEncryptedSessionKey) -> bool {
        match self {
            SecretPacket::Primary(k) => esk.match_identity(k.public_key()),
            SecretPacket::Sub(k) => esk.match_identity(k.public_key()),
        }
    }

    pub(super) fn unlocked(&self, pw: &Password) -> ::pgp::errors::Result<SecretPacket> {
        let mut k = self.clone();
        match &mut k {
            SecretPacket::Primary(k) => k.remove_password(pw)?,
            SecretPacket::Sub(k) => k.remove_password(pw)?,
        }
        Ok(k)
    }

    pub(super) fn decrypt(
        &self,
        values: &PkeskBytes,
        typ: EskType,
    ) -> ::pgp::errors::Result<::pgp::errors::Result<PlainSessionKey>> {
        let pw = Password::empty();
        match self {
            SecretPacket::Primary(k) => k.decrypt(&pw, values, typ),
            SecretPacket::Sub(k) => k.decrypt(&pw, values, typ),
        }
    }
}

/// Seconds since the epoch, as OpenPGP counts them.
fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn created(sig: &Signature) -> u64 {
    sig.created().map(|t| u64::from(t.as_secs())).unwrap_or(0)
}

/// Whether `sig` was made by the key `id` (or names no issuer at all).
fn issued_by(sig: &Signature, id: &KeyId, fp: &::pgp::types::Fingerprint) -> bool {
    let ids = sig.issuer_key_id();
    let fps = sig.issuer_fingerprint();
    (ids.is_empty() && fps.is_empty()) || ids.contains(&id) || fps.contains(&fp)
}

/// Whether a key created at `key_created` has expired by `now` under `sig`'s key expiration
/// time (go-crypto's `KeyExpired`: none or 0 means never).
fn key_expired(key_created: u64, sig: &Signature, now: u64) -> bool {
    match sig.key_expiration_time().map(|d| u64::from(d.as_secs())) {
        None | Some(0) => false,
        Some(life) => now > key_created + life,
    }
}

/// Whether `sig` itself has expired (go-crypto's `SigExpired`).
fn sig_expired(sig: &Signature, now: u64) -> bool {
    match sig
        .signature_expiration_time()
        .map(|d| u64::from(d.as_secs()))
    {
        None | Some(0) => false,
        Some(life) => now > created(sig) + life,
    }
}

/// The self-signature go-crypto takes a key's preferences and flags from
/// (`PrimarySelfSignature`): that of the primary user ID (fewest revocations, then marked
/// primary, then newest), or for a key without user IDs its newest direct-key signature.
pub(super) fn primary_self_signature(k: &SignedPublicKey) -> Option<(&Signature, bool)> {
    let id = k.primary_key.legacy_key_id();
    let fp = k.primary_key.fingerprint();
    // (self-signature, revocations, is primary)
    let mut best: Option<(&Signature, usize)> = None;
    for user in &k.details.users {
        let mine = |s: &&Signature| issued_by(s, &id, &fp);
        let Some(sig) = user
            .signatures
            .iter()
            .filter(mine)
            .filter(|s| s.is_certification())
            .max_by_key(|s| created(s))
        else {
            continue;
        };
        let revocations = user
            .signatures
            .iter()
            .filter(mine)
            .filter(|s| s.typ() == Some(SignatureType::CertRevocation))
            .count();
        let better = match best {
            None => true,
            Some((old, old_revs)) => {
                if old_revs != revocations {
                    revocations < old_revs
                } else if old.is_primary() != sig.is_primary() {
                    sig.is_primary()
                } else {
                    created(sig) > created(old)
                }
            }
        };
        if better {
            best = Some((sig, revocations));
        }
    }
    if let Some((sig, revocations)) = best {
        return Some((sig, revocations > 0));
    }
    k.details
        .direct_signatures
        .iter()
        .filter(|s| issued_by(s, &id, &fp))
        .max_by_key(|s| created(s))
        .map(|s| (s, false))
}

/// The key go-crypto encrypts to for `k` (`Entity.EncryptionKey`): the newest valid subkey
/// flagged for encrypting communications, else the primary key if it is so flagged; with
/// the primary self-signature's symmetric preferences.
fn encryption_key(
    k: &SignedPublicKey,
    now: u64,
) -> Result<(Recipient, Vec<SymmetricKeyAlgorithm>), String> {
    let name = hex_id(&k.primary_key.legacy_key_id());
    let Some((primary_sig, identity_revoked)) = primary_self_signature(k) else {
        return Err(format!("key {name} has no self-signature"));
    };
    let primary_created = u64::from(k.primary_key.created_at().as_secs());
    if key_expired(primary_created, primary_sig, now)
        || sig_expired(primary_sig, now)
        || !k.details.revocation_signatures.is_empty()
        || identity_revoked
    {
        return Err(format!("key {name} has expired or is revoked"));
    }
    let prefs = primary_sig.preferred_symmetric_algs().to_vec();
    let id = k.primary_key.legacy_key_id();
    let fp = k.primary_key.fingerprint();
    let mut chosen: Option<(&pkt::PublicSubkey, u64)> = None;
    for sub in &k.public_subkeys {
        let Some(binding) = sub
            .signatures
            .iter()
            .filter(|s| s.typ() == Some(SignatureType::SubkeyBinding) && issued_by(s, &id, &fp))
            .max_by_key(|s| created(s))
        else {
            continue;
        };
        let revoked = sub
            .signatures
            .iter()
            .any(|s| s.typ() == Some(SignatureType::SubkeyRevocation) && issued_by(s, &id, &fp));
        let sub_created = u64::from(sub.key.created_at().as_secs());
        if binding.key_flags().encrypt_comms()
            && sub.key.algorithm().can_encrypt()
            && !key_expired(sub_created, binding, now)
            && !sig_expired(binding, now)
            && !revoked
            && chosen.is_none_or(|(_, t)| created(binding) > t)
        {
            chosen = Some((&sub.key, created(binding)));
        }
    }
    if let Some((sub, _)) = chosen {
        return Ok((Recipient::Sub(sub.clone()), prefs));
    }
    if primary_sig.key_flags().encrypt_comms() && k.primary_key.algorithm().can_encrypt() {
        return Ok((Recipient::Primary(k.primary_key.clone()), prefs));
    }
    Err(format!(
        "key {name} has no valid encryption key (a subkey or primary key flagged for \
         encrypting communications, neither expired nor revoked)"
    ))
}

/// go-crypto's choice of cipher: AES-256 and AES-128, in that order, kept where every key
/// lists them; AES-128 (its default) when it survives or nothing does, else AES-256.
pub(super) fn choose_cipher(prefs: &[Vec<SymmetricKeyAlgorithm>]) -> SymmetricKeyAlgorithm {
    let mut candidates = vec![SymmetricKeyAlgorithm::AES256, SymmetricKeyAlgorithm::AES128];
    for p in prefs {
        candidates.retain(|c| p.contains(c));
    }
    if candidates.is_empty() || candidates.contains(&SymmetricKeyAlgorithm::AES128) {
        SymmetricKeyAlgorithm::AES128
    } else {
        candidates[0]
    }
}

impl PgpKeys {
    /// Parses the ASCII-armored key material `text` (one armor block of public and/or secret
    /// keys, as WAL-G reads it); `setting` names where it came from. The error says what is
    /// wrong without repeating the key.
    pub fn parse(
        text: &[u8],
        setting: &'static str,
        passphrase: Option<String>,
    ) -> Result<PgpKeys, String> {
        if text.first().is_some_and(|b| b & 0x80 != 0) {
            return Err(
                "is a binary OpenPGP key; WAL-G reads ASCII-armored keys only \
                        (export it with gpg --armor)"
                    .into(),
            );
        }
        let (keys, _) = PublicOrSecret::from_armor_many(text)
            .map_err(|e| format!("is not an ASCII-armored OpenPGP key: {e}"))?;
        let mut publics = Vec::new();
        let mut secrets = Vec::new();
        for key in keys {
            match key.map_err(|e| format!("holds a key that does not parse: {e}"))? {
                PublicOrSecret::Public(k) => publics.push(k),
                PublicOrSecret::Secret(k) => {
                    secret_entries(&k, &mut secrets);
                    publics.push(k.to_public_key());
                }
            }
        }
        if publics.is_empty() {
            return Err("holds no OpenPGP key".into());
        }
        let now = now_secs();
        let mut recipients = Ok(Vec::new());
        let mut prefs = Vec::new();
        for k in &publics {
            match (encryption_key(k, now), &mut recipients) {
                (Ok((r, p)), Ok(list)) => {
                    list.push(r);
                    prefs.push(p);
                }
                (Err(e), Ok(_)) => recipients = Err(e),
                (_, Err(_)) => {}
            }
        }
        Ok(PgpKeys {
            setting,
            recipients,
            cipher: choose_cipher(&prefs),
            secrets,
            passphrase: passphrase.map(|p| Password::from(p.as_str())),
            material_bytes: text.len() as u64,
        })
    }

    /// Whether the material holds a secret key (so objects can be decrypted).
    pub fn has_secret(&self) -> bool {
        !self.secrets.is_empty()
    }

    /// The cipher messages are written with.
    pub fn cipher(&self) -> SymmetricKeyAlgorithm {
        self.cipher
    }

    /// Heap one encrypting or decrypting stream holds, with the key material (once per
    /// process, counted with each stream to stay on the safe side).
    pub fn state_bytes(&self) -> u64 {
        let recipients = self.recipients.as_ref().map_or(1, Vec::len) as u64;
        ENCRYPT_STATE_BYTES.max(DECRYPT_STATE_BYTES)
            + recipients * 1024
            + 4 * self.material_bytes
            + 8 * 1024
    }
}

/// Every secret key packet of `k`.
fn secret_entries(k: &SignedSecretKey, out: &mut Vec<SecretEntry>) {
    let entry = |key| SecretEntry {
        key,
        unlocked: OnceLock::new(),
    };
    out.push(entry(SecretPacket::Primary(k.primary_key.clone())));
    for sub in &k.secret_subkeys {
        out.push(entry(SecretPacket::Sub(sub.key.clone())));
    }
}
