//! OpenPGP encryption as WAL-G does it (walg-compat §5.4): `WALG_PGP_KEY` (armored key text),
//! `WALG_PGP_KEY_PATH` (an armored key file), `WALG_PGP_KEY_PASSPHRASE` (for protected
//! secret keys). Keys, session-key packets and decryption come from rPGP (the `pgp` crate,
//! pure Rust); the message around them is framed here, so that it streams both ways.
//!
//! What is written, for every payload after compression, is what go-crypto's
//! `openpgp.Encrypt` (WAL-G's writer) would write apart from the random bytes: one
//! public-key encrypted session key packet (v3) per key in the key material, each to that
//! key's encryption key chosen as go-crypto chooses it, then one symmetrically encrypted
//! integrity protected data packet (SEIPD v1: OpenPGP CFB with a random prefix, and the MDC,
//! a SHA-1 of the plaintext, at the end) holding one literal data packet, no compression.
//! The cipher is AES-128 unless AES-256 is the only one of the two every key prefers (as
//! go-crypto decides). Both packets use partial body lengths of 8 KiB, so the length of the
//! payload need not be known, and memory is a few chunk buffers whatever its size.
//!
//! An upload reads its body twice (digest, then send) and both reads must give the same
//! bytes: [`PgpKeys::seal`] draws the session key, encrypts it to every recipient and draws
//! a seed for the CFB prefix once per object, so every [`PgpReader`] over the same payload
//! makes the same message.
//!
//! Reading takes any OpenPGP message for a configured secret key (any cipher rPGP knows,
//! compressed or not, signed or not; the signature is not checked, as WAL-G does not), in
//! streaming mode: plaintext comes out before the MDC at the end is checked, so a tampered
//! or truncated object fails at its end, which is before wal-fetch or backup-fetch accept
//! anything they wrote from it.

use ::pgp::composed::{
    DecryptionOptions, Esk, Message, PlainSessionKey, PublicOrSecret, RawSessionKey,
    SignedPublicKey, SignedSecretKey, TheRing,
};
use ::pgp::crypto::sym::{StreamEncryptor, SymmetricKeyAlgorithm};
use ::pgp::packet::{self as pkt, PublicKeyEncryptedSessionKey, Signature, SignatureType};
use ::pgp::ser::Serialize;
use ::pgp::types::{
    DecryptionKey, EskType, KeyDetails, KeyId, Password, PkeskBytes, PkeskVersion, Seipdv1ReadMode,
};
use rand::SeedableRng;
use rand::rngs::StdRng;
use std::io::{self, BufReader, Read};
use std::sync::{Arc, OnceLock};

/// Body bytes of every partial chunk of the packets written (2^13: a partial body length
/// is a power of two, and the first one at least 512).
pub const CHUNK: usize = 1 << 13;
/// Room in front of a chunk for its packet tag and length.
const HEAD: usize = 3;
/// rPGP's read buffers (packet bodies, decryption, literal data, decompression).
const RPGP_BUFFER: u64 = 8 * 1024;

/// Heap held by one encrypting stream: two framers' chunks, rPGP's CFB encryptor buffer, the
/// session-key packets (up to 4096-bit RSA), and the read buffer of an upload's digest pass
/// (`storage::CHUNK_BUFFER`).
const ENCRYPT_STATE_BYTES: u64 = 2 * (CHUNK + HEAD) as u64 + RPGP_BUFFER + 16 * 1024 + 4096;
/// Heap held by one decrypting stream: the read buffer under the parser, rPGP's buffers for
/// the outer packet, the decryptor, the inner packet, the literal data and (for messages
/// other tools made) a compressed packet with its inflate window and state.
const DECRYPT_STATE_BYTES: u64 = 6 * RPGP_BUFFER + 8 * 1024 + 64 * 1024;

/// Resident memory OpenPGP costs a process once, beside its streams: the pages of the
/// executable that rPGP's key parsing, session-key and CFB/MDC code touch (file-backed, but
/// counted in RSS and in a memory cgroup; the kernel faults them in 64 KiB around each page
/// touched, and this code is spread across the binary). Measured on the glibc release build:
/// +1.9 MiB of the binary's text resident after parsing a Curve25519 public key alone
/// (`memory-plan`), +2.0–2.8 MiB peak RSS for wal-push and for wal-fetch of a 16 MiB segment
/// to file storage (RSA-3072 and Curve25519 keys) against the same without a key.
pub const PROCESS_BYTES: u64 = 3 * 1024 * 1024;

/// The keys, parsed: whom to encrypt for, and what can decrypt.
pub struct PgpKeys {
    /// The setting the keys came from, for messages.
    setting: &'static str,
    /// Encryption keys, one per key in the material; or why some key has none (an error
    /// only when encrypting, as with WAL-G).
    recipients: Result<Vec<Recipient>, String>,
    /// The cipher for messages written.
    cipher: SymmetricKeyAlgorithm,
    /// Every secret key packet in the material (primary keys and subkeys).
    secrets: Vec<SecretEntry>,
    /// `WALG_PGP_KEY_PASSPHRASE`.
    passphrase: Option<Password>,
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
enum Recipient {
    Primary(pkt::PublicKey),
    Sub(pkt::PublicSubkey),
}

/// A secret key packet, and the same unlocked with the passphrase once needed.
struct SecretEntry {
    key: SecretPacket,
    unlocked: OnceLock<Result<SecretPacket, String>>,
}

#[derive(Clone)]
enum SecretPacket {
    Primary(pkt::SecretKey),
    Sub(pkt::SecretSubkey),
}

impl SecretPacket {
    fn key_id(&self) -> KeyId {
        match self {
            SecretPacket::Primary(k) => k.public_key().legacy_key_id(),
            SecretPacket::Sub(k) => k.public_key().legacy_key_id(),
        }
    }

    fn is_locked(&self) -> bool {
        match self {
            SecretPacket::Primary(k) => k.secret_params().is_encrypted(),
            SecretPacket::Sub(k) => k.secret_params().is_encrypted(),
        }
    }

    fn matches(&self, esk: &PublicKeyEncryptedSessionKey) -> bool {
        match self {
            SecretPacket::Primary(k) => esk.match_identity(k.public_key()),
            SecretPacket::Sub(k) => esk.match_identity(k.public_key()),
        }
    }

    fn unlocked(&self, pw: &Password) -> ::pgp::errors::Result<SecretPacket> {
        let mut k = self.clone();
        match &mut k {
            SecretPacket::Primary(k) => k.remove_password(pw)?,
            SecretPacket::Sub(k) => k.remove_password(pw)?,
        }
        Ok(k)
    }

    fn decrypt(
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

/// A key id as gpg prints it.
fn hex_id(id: &KeyId) -> String {
    id.as_ref().iter().map(|b| format!("{b:02X}")).collect()
}

/// A message that does not decrypt, or a key that cannot be used: carried in an `io::Error`
/// so callers can tell it from a codec's complaint about what came out of it.
#[derive(Debug)]
pub struct DecryptError(pub String);

impl std::fmt::Display for DecryptError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "OpenPGP: {}", self.0)
    }
}

impl std::error::Error for DecryptError {}

fn bad(msg: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, DecryptError(msg.into()))
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
fn primary_self_signature(k: &SignedPublicKey) -> Option<(&Signature, bool)> {
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
fn choose_cipher(prefs: &[Vec<SymmetricKeyAlgorithm>]) -> SymmetricKeyAlgorithm {
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

    /// One object's encryption: its session key, encrypted to every recipient, and the seed
    /// of its CFB prefix, drawn once so that every pass over the object makes the same bytes.
    pub fn seal(&self) -> io::Result<PgpSeal> {
        let recipients = self.recipients.as_ref().map_err(|why| {
            io::Error::other(format!(
                "{}: cannot encrypt: {why} (WAL-G refuses to encrypt to it as well)",
                self.setting
            ))
        })?;
        let mut seed = [0u8; 32];
        getrandom::fill(&mut seed).map_err(|e| {
            io::Error::other(format!("no random bytes for the OpenPGP session key: {e}"))
        })?;
        let mut rng = StdRng::from_seed(seed);
        let session_key = self.cipher.new_session_key(&mut rng);
        let mut head = Vec::new();
        for r in recipients {
            let esk = match r {
                Recipient::Primary(k) => PublicKeyEncryptedSessionKey::from_session_key_v3(
                    &mut rng,
                    &session_key,
                    self.cipher,
                    k,
                ),
                Recipient::Sub(k) => PublicKeyEncryptedSessionKey::from_session_key_v3(
                    &mut rng,
                    &session_key,
                    self.cipher,
                    k,
                ),
            }
            .map_err(|e| {
                io::Error::other(format!("{}: encrypting the session key: {e}", self.setting))
            })?;
            Esk::PublicKeyEncryptedSessionKey(esk)
                .to_writer(&mut head)
                .map_err(|e| io::Error::other(format!("writing a session key packet: {e}")))?;
        }
        let mut prefix_seed = [0u8; 32];
        rand::RngCore::fill_bytes(&mut rng, &mut prefix_seed);
        Ok(PgpSeal {
            head: Arc::new(head),
            cipher: self.cipher,
            session_key,
            prefix_seed,
        })
    }

    /// The session key of a message, from the first session-key packet a configured
    /// secret key opens; the error says why none did, naming the setting to change.
    fn session_key(&self, esks: &[Esk]) -> io::Result<PlainSessionKey> {
        if self.secrets.is_empty() {
            return Err(bad(format!(
                "{} holds only public keys: wal-rus can encrypt (push) with it but cannot \
                 decrypt (fetch); put the secret key in {}",
                self.setting, self.setting
            )));
        }
        let mut recipients = Vec::new();
        let mut problems = Vec::new();
        for esk in esks {
            let Esk::PublicKeyEncryptedSessionKey(esk) = esk else {
                continue;
            };
            recipients.push(match esk.id() {
                Ok(id) if id.is_wildcard() => "an anonymous recipient".to_string(),
                Ok(id) => hex_id(id),
                Err(_) => "a v6 key".to_string(),
            });
            let typ = match esk.version() {
                PkeskVersion::V3 => EskType::V3_4,
                PkeskVersion::V6 => EskType::V6,
                PkeskVersion::Other(_) => continue,
            };
            let Ok(values) = esk.values() else {
                continue;
            };
            for entry in self.secrets.iter().filter(|e| e.key.matches(esk)) {
                let key = match self.usable(entry) {
                    Ok(k) => k,
                    Err(why) => {
                        problems.push(why);
                        continue;
                    }
                };
                match key.decrypt(values, typ) {
                    Ok(Ok(sk)) => return Ok(sk),
                    Ok(Err(e)) | Err(e) => problems.push(format!(
                        "secret key {} does not open the session key ({e})",
                        hex_id(&key.key_id())
                    )),
                }
            }
        }
        if recipients.is_empty() {
            return Err(bad(
                "the message has no public-key encrypted session key (not encrypted with an \
                 OpenPGP key)",
            ));
        }
        problems.dedup();
        if problems.is_empty() {
            return Err(bad(format!(
                "the object is encrypted for key {}, and {} has no secret key for it \
                 (a different key?)",
                recipients.join(", "),
                self.setting
            )));
        }
        Err(bad(problems.join("; ")))
    }

    /// `entry`, unlocked with the passphrase if it is protected (once per process).
    fn usable<'k>(&self, entry: &'k SecretEntry) -> Result<&'k SecretPacket, String> {
        if !entry.key.is_locked() {
            return Ok(&entry.key);
        }
        let id = hex_id(&entry.key.key_id());
        let Some(pw) = &self.passphrase else {
            return Err(format!(
                "the secret key {id} in {} is protected by a passphrase; set \
                 WALG_PGP_KEY_PASSPHRASE",
                self.setting
            ));
        };
        entry
            .unlocked
            .get_or_init(|| {
                entry.key.unlocked(pw).map_err(|e| {
                    format!("WALG_PGP_KEY_PASSPHRASE does not unlock the secret key {id} ({e})")
                })
            })
            .as_ref()
            .map_err(Clone::clone)
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

/// One object's encryption (see [`PgpKeys::seal`]).
#[derive(Clone, Debug)]
pub struct PgpSeal {
    head: Arc<Vec<u8>>,
    cipher: SymmetricKeyAlgorithm,
    session_key: RawSessionKey,
    prefix_seed: [u8; 32],
}

impl PgpSeal {
    /// The object's stored bytes, read from its plaintext.
    pub fn reader<R: Read>(&self, plain: R) -> io::Result<PgpReader<R>> {
        let literal = PacketFramer::new(plain, LITERAL_TAG, &LITERAL_LEAD);
        let encrypted = StreamEncryptor::new(
            StdRng::from_seed(self.prefix_seed),
            self.cipher,
            self.session_key.as_ref(),
            literal,
        )
        .map_err(|e| io::Error::other(format!("starting OpenPGP encryption: {e}")))?;
        Ok(PgpReader {
            head: self.head.clone(),
            head_pos: 0,
            body: Box::new(PacketFramer::new(encrypted, SEIPD_TAG, &SEIPD_LEAD)),
        })
    }
}

/// Literal data packet: tag 11; its body starts with format `b` (binary), an empty file
/// name and a zero date.
const LITERAL_TAG: u8 = 11;
const LITERAL_LEAD: [u8; 6] = [b'b', 0, 0, 0, 0, 0];
/// Symmetrically encrypted integrity protected data packet: tag 18, version 1.
const SEIPD_TAG: u8 = 18;
const SEIPD_LEAD: [u8; 1] = [1];

/// A packet of `tag` whose body is `lead` and then everything `inner` yields, cut into
/// partial bodies of [`CHUNK`] bytes and a last one of a fixed length (0..CHUNK bytes).
struct PacketFramer<R: Read> {
    inner: R,
    tag: u8,
    lead: &'static [u8],
    buf: Box<[u8; HEAD + CHUNK]>,
    start: usize,
    end: usize,
    first: bool,
    done: bool,
}

impl<R: Read> PacketFramer<R> {
    fn new(inner: R, tag: u8, lead: &'static [u8]) -> Self {
        PacketFramer {
            inner,
            tag,
            lead,
            buf: Box::new([0u8; HEAD + CHUNK]),
            start: 0,
            end: 0,
            first: true,
            done: false,
        }
    }

    fn refill(&mut self) -> io::Result<()> {
        let body = &mut self.buf[HEAD..];
        let mut n = 0;
        if self.first {
            body[..self.lead.len()].copy_from_slice(self.lead);
            n = self.lead.len();
        }
        n += crate::readers::read_full(&mut self.inner, &mut body[n..])?;
        let mut head = [0u8; HEAD];
        let mut len = 0;
        if self.first {
            // New packet format: 0b11 then the tag.
            head[0] = 0xC0 | self.tag;
            len = 1;
        }
        if n == CHUNK {
            // A partial body length: 0xE0 + log2 of the chunk. A full last chunk is followed
            // by an empty fixed-length one.
            head[len] = 0xE0 | CHUNK.trailing_zeros() as u8;
            len += 1;
        } else {
            if n < 192 {
                head[len] = n as u8;
                len += 1;
            } else {
                let m = n - 192;
                head[len] = (m >> 8) as u8 + 192;
                head[len + 1] = m as u8;
                len += 2;
            }
            self.done = true;
        }
        self.first = false;
        self.start = HEAD - len;
        self.buf[self.start..HEAD].copy_from_slice(&head[..len]);
        self.end = HEAD + n;
        Ok(())
    }
}

impl<R: Read> Read for PacketFramer<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.start == self.end {
            if self.done {
                return Ok(0);
            }
            self.refill()?;
        }
        let n = buf.len().min(self.end - self.start);
        buf[..n].copy_from_slice(&self.buf[self.start..self.start + n]);
        self.start += n;
        Ok(n)
    }
}

/// Encrypts what it reads from its plaintext: the session-key packets, then the SEIPD packet.
pub struct PgpReader<R: Read> {
    head: Arc<Vec<u8>>,
    head_pos: usize,
    body: Box<PacketFramer<StreamEncryptor<PacketFramer<R>>>>,
}

impl<R: Read> Read for PgpReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.head_pos < self.head.len() {
            let n = buf.len().min(self.head.len() - self.head_pos);
            buf[..n].copy_from_slice(&self.head[self.head_pos..self.head_pos + n]);
            self.head_pos += n;
            return Ok(n);
        }
        self.body.read(buf)
    }
}

/// A stored object for the parser: rPGP wants its source to be `Debug`.
struct Stored<'a>(Box<dyn Read + Send + 'a>);

impl std::fmt::Debug for Stored<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("stored object")
    }
}

impl Read for Stored<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.read(buf)
    }
}

/// Decrypts an OpenPGP message read from a stored object; the message is opened (session
/// key found, decryption set up) at the first read.
pub struct PgpDecryptor<'a> {
    state: DecryptState<'a>,
}

enum DecryptState<'a> {
    Pending(Box<dyn Read + Send + 'a>, Arc<PgpKeys>),
    Open(Box<Message<'a>>),
    Failed(String),
}

impl<'a> PgpDecryptor<'a> {
    /// A decrypting stream over `stored` with `keys`.
    pub fn new(stored: Box<dyn Read + Send + 'a>, keys: Arc<PgpKeys>) -> Self {
        PgpDecryptor {
            state: DecryptState::Pending(stored, keys),
        }
    }

    fn open(stored: Box<dyn Read + Send + 'a>, keys: &PgpKeys) -> io::Result<Message<'a>> {
        let source = BufReader::with_capacity(RPGP_BUFFER as usize, Stored(stored));
        let msg = Message::from_bytes(source).map_err(|e| {
            bad(format!(
                "the object is not an OpenPGP message ({e}); was it written with another \
                 encryption (WALG_LIBSODIUM_KEY) or none?"
            ))
        })?;
        let session_key = match &msg {
            Message::Encrypted { esk, .. } => keys.session_key(esk)?,
            _ => {
                return Err(bad(
                    "the object is an OpenPGP message but not an encrypted one",
                ));
            }
        };
        let ring = TheRing {
            session_keys: vec![session_key],
            decrypt_options: DecryptionOptions::new()
                .set_seipdv1_read_mode(Seipdv1ReadMode::Streaming),
            ..Default::default()
        };
        let (mut msg, _) = msg
            .decrypt_the_ring(ring, true)
            .map_err(|e| bad(format!("the message does not decrypt: {e}")))?;
        while msg.is_compressed() {
            msg = msg
                .decompress()
                .map_err(|e| bad(format!("the message does not decompress: {e}")))?;
        }
        Ok(msg)
    }
}

impl Read for PgpDecryptor<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            match &mut self.state {
                DecryptState::Open(msg) => {
                    return msg.read(buf).map_err(|e| match e.kind() {
                        io::ErrorKind::InvalidData
                        | io::ErrorKind::Other
                        | io::ErrorKind::UnexpectedEof => {
                            let why = format!(
                                "the message is corrupt or truncated ({e}); nothing read from \
                                 it can be trusted"
                            );
                            self.state = DecryptState::Failed(why.clone());
                            bad(why)
                        }
                        _ => e,
                    });
                }
                DecryptState::Failed(why) => return Err(bad(why.clone())),
                DecryptState::Pending(..) => {
                    let DecryptState::Pending(stored, keys) =
                        std::mem::replace(&mut self.state, DecryptState::Failed(String::new()))
                    else {
                        unreachable!("matched above");
                    };
                    match Self::open(stored, &keys) {
                        Ok(msg) => self.state = DecryptState::Open(Box::new(msg)),
                        Err(e) => {
                            self.state = DecryptState::Failed(
                                e.get_ref()
                                    .and_then(|i| i.downcast_ref::<DecryptError>())
                                    .map_or_else(|| e.to_string(), |d| d.0.clone()),
                            );
                            return Err(e);
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
