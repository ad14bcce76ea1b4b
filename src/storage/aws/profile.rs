//! The AWS shared files (`~/.aws/credentials` and `~/.aws/config`), read as the AWS CLI and
//! SDKs read them: a profile's keys, or the role it assumes and with what.
//!
//! Only the files are read here; which profile, which files and what a `credential_source`
//! turns into are decided by `config`.

use std::collections::HashMap;
use std::path::Path;

/// How a profile gets its credentials.
#[derive(Clone, Debug, PartialEq)]
pub enum ProfileCreds {
    /// `aws_access_key_id`, `aws_secret_access_key` (and `aws_session_token`).
    Static {
        /// Access key id.
        access_key_id: String,
        /// Secret key.
        secret_access_key: String,
        /// Session token.
        session_token: Option<String>,
    },
    /// `role_arn` with `web_identity_token_file`.
    WebIdentity {
        /// Token file.
        token_file: String,
        /// Role.
        role_arn: String,
        /// `role_session_name`.
        session_name: Option<String>,
    },
    /// `role_arn` with `source_profile` or `credential_source`.
    AssumeRole {
        /// What assumes the role.
        base: Box<ProfileCreds>,
        /// Role.
        role_arn: String,
        /// `role_session_name`.
        session_name: Option<String>,
        /// `external_id`.
        external_id: Option<String>,
        /// `duration_seconds`.
        duration_seconds: Option<u32>,
    },
    /// `credential_source`: `Environment`, `Ec2InstanceMetadata` or `EcsContainer`.
    CredentialSource(String),
}

/// One profile as found in the files.
#[derive(Clone, Debug, PartialEq)]
pub struct Profile {
    /// Its credentials, when it has any.
    pub creds: Option<ProfileCreds>,
    /// Its `region`.
    pub region: Option<String>,
}

type Sections = HashMap<String, HashMap<String, String>>;

/// Parses INI text. In the config file a section is `[profile NAME]` (or `[default]`); in the
/// credentials file it is `[NAME]`. Comments start with `#` or `;`; indented lines continue
/// a nested value and are skipped (wal-rus reads no nested settings).
fn parse_ini(text: &str, config_file: bool) -> Sections {
    let mut out: Sections = HashMap::new();
    let mut current: Option<String> = None;
    for line in text.lines() {
        if line.starts_with(' ') || line.starts_with('\t') {
            continue;
        }
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            let name = name.trim();
            current = if config_file {
                match name.strip_prefix("profile ") {
                    Some(p) => Some(p.trim().to_string()),
                    None if name == "default" => Some(name.to_string()),
                    // `[sso-session x]`, `[services x]`: not profiles.
                    None => None,
                }
            } else {
                Some(name.to_string())
            };
            if let Some(c) = &current {
                out.entry(c.clone()).or_default();
            }
            continue;
        }
        if let (Some(section), Some((k, v))) = (&current, line.split_once('=')) {
            out.entry(section.clone())
                .or_default()
                .insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
        }
    }
    out
}

/// What went wrong reading the profiles.
#[derive(Debug, PartialEq)]
pub struct ProfileError(pub String);

fn read(path: Option<&Path>, config_file: bool) -> Result<Sections, ProfileError> {
    let Some(path) = path else {
        return Ok(Sections::new());
    };
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(parse_ini(&text, config_file)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Sections::new()),
        Err(e) => Err(ProfileError(format!("reading {}: {e}", path.display()))),
    }
}

/// Profile `name` from the two files, or `None` when neither has it.
pub fn load(
    name: &str,
    credentials_file: Option<&Path>,
    config_file: Option<&Path>,
) -> Result<Option<Profile>, ProfileError> {
    let creds = read(credentials_file, false)?;
    let config = read(config_file, true)?;
    if !creds.contains_key(name) && !config.contains_key(name) {
        return Ok(None);
    }
    let region = config.get(name).and_then(|s| s.get("region")).cloned();
    let creds = resolve(name, &creds, &config, 0)?;
    Ok(Some(Profile { creds, region }))
}

/// A profile's settings, the credentials file's winning over the config file's.
fn merged(name: &str, creds: &Sections, config: &Sections) -> HashMap<String, String> {
    let mut m = config.get(name).cloned().unwrap_or_default();
    if let Some(c) = creds.get(name) {
        m.extend(c.clone());
    }
    m
}

fn resolve(
    name: &str,
    creds: &Sections,
    config: &Sections,
    depth: u32,
) -> Result<Option<ProfileCreds>, ProfileError> {
    if depth > 5 {
        return Err(ProfileError(format!(
            "profile {name}: source_profile chain longer than 5 (a loop?)"
        )));
    }
    let p = merged(name, creds, config);
    let get = |k: &str| p.get(k).filter(|v| !v.is_empty()).cloned();
    let keys = match (get("aws_access_key_id"), get("aws_secret_access_key")) {
        (Some(id), Some(secret)) => Some(ProfileCreds::Static {
            access_key_id: id,
            secret_access_key: secret,
            session_token: get("aws_session_token"),
        }),
        _ => None,
    };
    let Some(role_arn) = get("role_arn") else {
        if keys.is_none() {
            for unsupported in ["credential_process", "sso_start_url", "sso_session"] {
                if get(unsupported).is_some() {
                    return Err(ProfileError(format!(
                        "profile {name}: {unsupported} is not supported by wal-rus (use keys, role_arn, web_identity_token_file, or the instance or container role)"
                    )));
                }
            }
        }
        return Ok(keys);
    };
    let session_name = get("role_session_name");
    if let Some(token_file) = get("web_identity_token_file") {
        return Ok(Some(ProfileCreds::WebIdentity {
            token_file,
            role_arn,
            session_name,
        }));
    }
    let base = role_base(name, &p, keys, creds, config, depth)?;
    let duration_seconds = match get("duration_seconds") {
        Some(d) => Some(d.parse().map_err(|_| {
            ProfileError(format!(
                "profile {name}: duration_seconds {d:?} is not a number"
            ))
        })?),
        None => None,
    };
    Ok(Some(ProfileCreds::AssumeRole {
        base: Box::new(base),
        role_arn,
        session_name,
        external_id: get("external_id"),
        duration_seconds,
    }))
}

/// What assumes a profile's role: its `source_profile` (itself: its own keys) or its
/// `credential_source`.
fn role_base(
    name: &str,
    p: &HashMap<String, String>,
    keys: Option<ProfileCreds>,
    creds: &Sections,
    config: &Sections,
    depth: u32,
) -> Result<ProfileCreds, ProfileError> {
    let get = |k: &str| p.get(k).filter(|v| !v.is_empty()).cloned();
    Ok(match (get("source_profile"), get("credential_source")) {
        (Some(_), Some(_)) => {
            return Err(ProfileError(format!(
                "profile {name}: both source_profile and credential_source are set"
            )));
        }
        // A profile that names itself uses its own keys (the AWS CLI's rule).
        (Some(src), None) if src == name => keys.ok_or_else(|| {
            ProfileError(format!(
                "profile {name}: source_profile is itself but it has no keys"
            ))
        })?,
        (Some(src), None) => {
            if !creds.contains_key(&src) && !config.contains_key(&src) {
                return Err(ProfileError(format!(
                    "profile {name}: source_profile {src} does not exist"
                )));
            }
            resolve(&src, creds, config, depth + 1)?.ok_or_else(|| {
                ProfileError(format!(
                    "profile {name}: source_profile {src} has no credentials"
                ))
            })?
        }
        (None, Some(cs)) => match cs.as_str() {
            "Environment" | "Ec2InstanceMetadata" | "EcsContainer" => {
                ProfileCreds::CredentialSource(cs)
            }
            other => {
                return Err(ProfileError(format!(
                    "profile {name}: credential_source {other} is not Environment, Ec2InstanceMetadata or EcsContainer"
                )));
            }
        },
        (None, None) => {
            return Err(ProfileError(format!(
                "profile {name}: role_arn needs source_profile, credential_source or web_identity_token_file"
            )));
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files(
        creds: &str,
        config: &str,
    ) -> (tempfile::TempDir, std::path::PathBuf, std::path::PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let c = dir.path().join("credentials");
        let f = dir.path().join("config");
        std::fs::write(&c, creds).unwrap();
        std::fs::write(&f, config).unwrap();
        (dir, c, f)
    }

    fn keys(id: &str) -> ProfileCreds {
        ProfileCreds::Static {
            access_key_id: id.into(),
            secret_access_key: format!("{id}-secret"),
            session_token: None,
        }
    }

    #[test]
    fn keys_from_credentials_win_and_region_comes_from_config() {
        let (_d, c, f) = files(
            "[default]\naws_access_key_id = A\naws_secret_access_key = A-secret\n# x\n[other]\naws_access_key_id=B\naws_secret_access_key=B-secret\n",
            "[default]\nregion = eu-west-1\naws_access_key_id = IGNORED\n[profile other]\nregion=us-west-2\n",
        );
        let p = load("default", Some(&c), Some(&f)).unwrap().unwrap();
        assert_eq!(p.creds, Some(keys("A")));
        assert_eq!(p.region.as_deref(), Some("eu-west-1"));
        let p = load("other", Some(&c), Some(&f)).unwrap().unwrap();
        assert_eq!(
            (p.creds, p.region.as_deref()),
            (Some(keys("B")), Some("us-west-2"))
        );
        assert_eq!(load("missing", Some(&c), Some(&f)).unwrap(), None);
    }

    #[test]
    fn roles_chain_through_source_profiles() {
        let (_d, c, f) = files(
            "[base]\naws_access_key_id=K\naws_secret_access_key=K-secret\n",
            "[profile mid]\nrole_arn=arn:r1\nsource_profile=base\nexternal_id=x\n[profile top]\nrole_arn=arn:r2\nsource_profile=mid\nrole_session_name=s\nduration_seconds=900\n[profile ec2]\nrole_arn=arn:r3\ncredential_source=Ec2InstanceMetadata\n[profile irsa]\nrole_arn=arn:r4\nweb_identity_token_file=/t\n",
        );
        let top = load("top", Some(&c), Some(&f))
            .unwrap()
            .unwrap()
            .creds
            .unwrap();
        let ProfileCreds::AssumeRole {
            base,
            role_arn,
            session_name,
            duration_seconds,
            ..
        } = top
        else {
            panic!("{top:?}")
        };
        assert_eq!(
            (role_arn.as_str(), session_name.as_deref(), duration_seconds),
            ("arn:r2", Some("s"), Some(900))
        );
        assert!(
            matches!(*base, ProfileCreds::AssumeRole { ref role_arn, ref external_id, ref base, .. }
            if role_arn == "arn:r1" && external_id.as_deref() == Some("x") && **base == keys("K"))
        );
        let ec2 = load("ec2", Some(&c), Some(&f))
            .unwrap()
            .unwrap()
            .creds
            .unwrap();
        assert!(matches!(ec2, ProfileCreds::AssumeRole { ref base, .. }
            if **base == ProfileCreds::CredentialSource("Ec2InstanceMetadata".into())));
        let irsa = load("irsa", Some(&c), Some(&f))
            .unwrap()
            .unwrap()
            .creds
            .unwrap();
        assert!(
            matches!(irsa, ProfileCreds::WebIdentity { ref token_file, .. } if token_file == "/t")
        );
    }

    #[test]
    fn broken_profiles_are_named() {
        let (_d, c, f) = files(
            "",
            "[profile loop]\nrole_arn=a\nsource_profile=loop2\n[profile loop2]\nrole_arn=b\nsource_profile=loop\n[profile proc]\ncredential_process=/bin/x\n[profile dangling]\nrole_arn=a\nsource_profile=nowhere\n",
        );
        for (name, says) in [
            ("loop", "longer than 5"),
            ("proc", "credential_process"),
            ("dangling", "nowhere"),
        ] {
            let e = load(name, Some(&c), Some(&f)).unwrap_err();
            assert!(e.0.contains(says), "{name}: {e:?}");
        }
    }
}
