//! The encryption settings: which crypter WAL-G would use for the keys that are set, and
//! the key material read and checked once, before any object is written or read.

use super::{ConfigError, Sources, bad};
use crate::codec::Crypter;
use crate::codec::openpgp::PgpKeys;
use crate::codec::sodium::{Key, Transform};

/// The crypter WAL-G would pick (walg-compat §5.2; KMS and envelope OpenPGP are refused by
/// the table): OpenPGP when `WALG_PGP_KEY` or `WALG_PGP_KEY_PATH` is set, whatever else is;
/// else libsodium when `WALG_LIBSODIUM_KEY` or `WALG_LIBSODIUM_KEY_PATH` is set.
pub(super) fn crypter(src: &Sources) -> Result<Crypter, ConfigError> {
    if let Some(keys) = pgp_keys(src)? {
        if let Some(name) = ["WALG_LIBSODIUM_KEY", "WALG_LIBSODIUM_KEY_PATH"]
            .into_iter()
            .find(|n| src.get(n).is_some())
        {
            crate::warn!("{name} is ignored: OpenPGP (WALG_PGP_KEY) is used, as WAL-G does");
        }
        return Ok(Crypter::Pgp(std::sync::Arc::new(keys)));
    }
    let transform_name = "WALG_LIBSODIUM_KEY_TRANSFORM";
    let transform = match src.get(transform_name) {
        None => Transform::None,
        Some(t) => Transform::from_setting(t.trim())
            .ok_or_else(|| bad(transform_name, format!("{t:?} is not none, hex or base64")))?,
    };
    let (name, text) = match (
        src.get("WALG_LIBSODIUM_KEY"),
        src.get("WALG_LIBSODIUM_KEY_PATH"),
    ) {
        (Some(k), _) => ("WALG_LIBSODIUM_KEY", k),
        (None, Some(path)) => {
            let name = "WALG_LIBSODIUM_KEY_PATH";
            let text = String::from_utf8(key_file(name, &path)?)
                .map_err(|_| bad(name, format!("{} is not text", path.trim())))?;
            (name, text.trim().to_string())
        }
        (None, None) => {
            if src.get(transform_name).is_some() {
                crate::warn!(
                    "{transform_name} is set without WALG_LIBSODIUM_KEY; nothing is encrypted"
                );
            }
            return Ok(Crypter::None);
        }
    };
    let key = Key::from_setting(&text, transform).map_err(|why| bad(name, why))?;
    Ok(Crypter::Sodium(key))
}

/// The contents of the key file `path` named by `setting`.
fn key_file(setting: &str, path: &str) -> Result<Vec<u8>, ConfigError> {
    std::fs::read(path.trim())
        .map_err(|e| bad(setting, format!("cannot read {}: {e}", path.trim())))
}

/// The OpenPGP key material, as WAL-G reads it: `WALG_PGP_KEY` (armored text in which the
/// two characters `\n` stand for a newline) before `WALG_PGP_KEY_PATH` (an armored key file,
/// read as it is), with `WALG_PGP_KEY_PASSPHRASE` for protected secret keys.
fn pgp_keys(src: &Sources) -> Result<Option<PgpKeys>, ConfigError> {
    let passphrase = src.get("WALG_PGP_KEY_PASSPHRASE");
    let (name, text) = match (src.get("WALG_PGP_KEY"), src.get("WALG_PGP_KEY_PATH")) {
        (Some(k), _) => ("WALG_PGP_KEY", k.replace("\\n", "\n").into_bytes()),
        (None, Some(path)) => ("WALG_PGP_KEY_PATH", key_file("WALG_PGP_KEY_PATH", &path)?),
        (None, None) => {
            if passphrase.is_some() {
                crate::warn!(
                    "WALG_PGP_KEY_PASSPHRASE is set without WALG_PGP_KEY or WALG_PGP_KEY_PATH; \
                     it is not used"
                );
            }
            return Ok(None);
        }
    };
    PgpKeys::parse(&text, name, passphrase)
        .map(Some)
        .map_err(|why| bad(name, why))
}
