//! Reading: any OpenPGP message for a configured secret key, opened at the first read (the
//! session key found among the message's session-key packets) and then streamed by rPGP;
//! what goes wrong is said in words that name the setting to change.

use ::pgp::composed::{DecryptionOptions, Esk, Message, PlainSessionKey, TheRing};
use ::pgp::types::{EskType, PkeskVersion, Seipdv1ReadMode};
use std::io::{self, BufReader, Read};
use std::sync::Arc;

use super::keys::{PgpKeys, SecretEntry, SecretPacket};
use super::{DecryptError, RPGP_BUFFER, bad, hex_id};

impl PgpKeys {
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
