//! Which AWS credential source applies, decided from the settings in the AWS SDKs' order:
//! static keys; a web-identity token (EKS/IRSA); the shared files' profile; the ECS
//! container endpoint; EC2 instance metadata. `AWS_ROLE_ARN` then assumes a role with what
//! was found, as WAL-G does (except under IRSA, where the token already is that role's).
//! The region comes from `AWS_REGION`, the profile, or instance metadata.

use super::sources::{Sources, parse_bool};
use super::{ConfigError, bad};
use crate::storage::aws::ecs::{self, Container};
use crate::storage::aws::imds::Imds;
use crate::storage::aws::profile::{self, Profile, ProfileCreds};
use crate::storage::aws::source::default_session_name;
use crate::storage::aws::{AssumeRole, Credentials, Http, Source, Sts, WebIdentity};
use crate::storage::net::{AgentSettings, RetryPolicy};
use std::path::PathBuf;
use std::time::Duration;

/// Where the instance metadata service is unless `AWS_EC2_METADATA_SERVICE_ENDPOINT` says.
const IMDS_DEFAULT: &str = "http://169.254.169.254";

/// What the chain needs besides the settings: how the S3 client connects (the credential
/// services are reached with the same timeouts and trust) and the S3 endpoint, if any.
pub(super) struct Net<'a> {
    pub agent: &'a AgentSettings,
    pub endpoint: Option<&'a str>,
}

/// The value of a storage setting under any of its spellings.
fn value(src: &Sources, bare: &str) -> Option<String> {
    src.storage_setting(bare).map(|(_, v)| v.trim().to_string())
}

/// The credential source and the region.
pub(super) fn resolve(src: &Sources, net: &Net) -> Result<(Source, String), ConfigError> {
    let profile = load_profile(src)?;
    let region = region(src, net, profile.as_ref())?;
    let ctx = Ctx {
        src,
        net,
        region: &region,
    };
    let base = ctx.base(profile)?;
    let role = value(src, "AWS_ROLE_ARN").filter(|r| !r.is_empty());
    let irsa =
        src.get("AWS_WEB_IDENTITY_TOKEN_FILE").is_some() && src.get("AWS_ROLE_ARN").is_some();
    let source = match role {
        Some(role_arn) if !irsa => Source::AssumeRole(Box::new(AssumeRole {
            base,
            role_arn,
            session_name: ctx.session_name(None),
            external_id: None,
            duration_seconds: None,
            sts: ctx.sts(),
        })),
        _ => base,
    };
    Ok((source, region))
}

/// The profile named by `AWS_PROFILE` (else `AWS_DEFAULT_PROFILE`, else `default`) in the
/// shared files; an explicitly named profile that is in neither file is an error.
fn load_profile(src: &Sources) -> Result<Option<Profile>, ConfigError> {
    let named = src
        .get("AWS_PROFILE")
        .map(|p| ("AWS_PROFILE", p))
        .or_else(|| {
            src.get("AWS_DEFAULT_PROFILE")
                .map(|p| ("AWS_DEFAULT_PROFILE", p))
        });
    let home = src.get("HOME").map(PathBuf::from);
    let file = |setting: &str, name: &str| {
        src.get(setting)
            .map(PathBuf::from)
            .or_else(|| home.as_ref().map(|h| h.join(".aws").join(name)))
    };
    let creds_file = file("AWS_SHARED_CREDENTIALS_FILE", "credentials");
    let config_file = file("AWS_CONFIG_FILE", "config");
    let name = named.as_ref().map_or("default", |(_, p)| p.as_str());
    let setting = named.as_ref().map_or("AWS_PROFILE", |(s, _)| s);
    let found = profile::load(name, creds_file.as_deref(), config_file.as_deref())
        .map_err(|e| bad(setting, e.0))?;
    if found.is_none() && named.is_some() {
        let shown = |p: &Option<PathBuf>| {
            p.as_ref()
                .map_or("(none)".into(), |p| p.display().to_string())
        };
        return Err(bad(
            setting,
            format!(
                "profile {name} is in neither {} nor {}",
                shown(&creds_file),
                shown(&config_file)
            ),
        ));
    }
    Ok(found)
}

fn imds_disabled(src: &Sources) -> Result<bool, ConfigError> {
    match src.get("AWS_EC2_METADATA_DISABLED") {
        Some(v) => parse_bool("AWS_EC2_METADATA_DISABLED", v.trim()),
        None => Ok(false),
    }
}

/// The instance metadata service, with short timeouts: off EC2 nothing answers there.
fn imds(src: &Sources, net: &Net) -> Imds {
    Imds {
        endpoint: src
            .get("AWS_EC2_METADATA_SERVICE_ENDPOINT")
            .map(|e| e.trim().trim_end_matches('/').to_string())
            .unwrap_or_else(|| IMDS_DEFAULT.to_string()),
        http: Http::new(
            AgentSettings {
                connect_timeout: Duration::from_secs(1),
                io_timeout: Duration::from_secs(5),
                ..net.agent.clone()
            },
            RetryPolicy {
                max_retries: 2,
                ..RetryPolicy::default()
            },
        ),
    }
}

/// `AWS_REGION`; the profile's; us-east-1 for an S3-compatible endpoint; the instance's.
fn region(src: &Sources, net: &Net, profile: Option<&Profile>) -> Result<String, ConfigError> {
    if let Some(r) = value(src, "AWS_REGION").filter(|r| !r.is_empty()) {
        return Ok(r);
    }
    if let Some(r) = profile.and_then(|p| p.region.clone()) {
        return Ok(r);
    }
    if net.endpoint.is_some() {
        return Ok("us-east-1".to_string());
    }
    if imds_disabled(src)? {
        return Err(bad(
            "AWS_REGION",
            "not set, and no region in the AWS profile (required when AWS_ENDPOINT is not set)",
        ));
    }
    imds(src, net).region().map_err(|e| {
        bad(
            "AWS_REGION",
            format!("not set, no region in the AWS profile, and instance metadata gave none: {e}"),
        )
    })
}

struct Ctx<'a> {
    src: &'a Sources,
    net: &'a Net<'a>,
    region: &'a str,
}

impl Ctx<'_> {
    fn http(&self) -> Http {
        Http::new(
            self.net.agent.clone(),
            RetryPolicy {
                max_retries: 3,
                ..RetryPolicy::default()
            },
        )
    }

    fn sts(&self) -> Sts {
        Sts {
            url: self
                .src
                .get("AWS_ENDPOINT_URL_STS")
                .map(|u| u.trim().trim_end_matches('/').to_string())
                .unwrap_or_else(|| format!("https://sts.{}.amazonaws.com", self.region)),
            region: self.region.to_string(),
            http: self.http(),
        }
    }

    fn session_name(&self, profile: Option<String>) -> String {
        value(self.src, "AWS_ROLE_SESSION_NAME")
            .filter(|s| !s.is_empty())
            .or(profile)
            .unwrap_or_else(default_session_name)
    }

    /// Keys in the settings, or `None`; one of the pair without the other is an error.
    fn static_keys(&self) -> Result<Option<Credentials>, ConfigError> {
        let id = value(self.src, "AWS_ACCESS_KEY_ID").or_else(|| value(self.src, "AWS_ACCESS_KEY"));
        let secret =
            value(self.src, "AWS_SECRET_ACCESS_KEY").or_else(|| value(self.src, "AWS_SECRET_KEY"));
        match (id, secret) {
            (Some(access_key_id), Some(secret_access_key)) => Ok(Some(Credentials {
                access_key_id,
                secret_access_key,
                session_token: value(self.src, "AWS_SESSION_TOKEN").filter(|t| !t.is_empty()),
            })),
            (Some(_), None) => Err(bad(
                "AWS_SECRET_ACCESS_KEY",
                "not set, but AWS_ACCESS_KEY_ID is",
            )),
            (None, Some(_)) => Err(bad(
                "AWS_ACCESS_KEY_ID",
                "not set, but AWS_SECRET_ACCESS_KEY is",
            )),
            (None, None) => Ok(None),
        }
    }

    fn container(&self) -> Result<Option<Container>, ConfigError> {
        let url = if let Some(rel) = self.src.get("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI") {
            format!("{}{}", ecs::ECS_HOST, rel.trim())
        } else if let Some(full) = self.src.get("AWS_CONTAINER_CREDENTIALS_FULL_URI") {
            let full = full.trim().to_string();
            if !ecs::full_uri_allowed(&full) {
                return Err(bad(
                    "AWS_CONTAINER_CREDENTIALS_FULL_URI",
                    format!(
                        "{full} must be https, or http to a loopback or the ECS/EKS link-local address"
                    ),
                ));
            }
            full
        } else {
            return Ok(None);
        };
        Ok(Some(Container {
            url,
            token_file: self
                .src
                .get("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE")
                .map(PathBuf::from),
            token: self.src.get("AWS_CONTAINER_AUTHORIZATION_TOKEN"),
            http: self.http(),
        }))
    }

    /// The credentials before any `AWS_ROLE_ARN`, in the SDKs' order.
    fn base(&self, profile: Option<Profile>) -> Result<Source, ConfigError> {
        if let Some(keys) = self.static_keys()? {
            return Ok(Source::Static(keys));
        }
        if let (Some(token_file), Some(role_arn)) = (
            self.src.get("AWS_WEB_IDENTITY_TOKEN_FILE"),
            self.src.get("AWS_ROLE_ARN"),
        ) {
            return Ok(Source::WebIdentity(Box::new(WebIdentity {
                token_file: PathBuf::from(token_file.trim()),
                role_arn: role_arn.trim().to_string(),
                session_name: self.session_name(None),
                sts: self.sts(),
            })));
        }
        if let Some(creds) = profile.and_then(|p| p.creds) {
            return self.source_of_profile(creds);
        }
        if let Some(c) = self.container()? {
            return Ok(Source::Container(c));
        }
        if !imds_disabled(self.src)? {
            return Ok(Source::InstanceMetadata(imds(self.src, self.net)));
        }
        Err(bad(
            "AWS_ACCESS_KEY_ID",
            "no AWS credentials: no keys (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY), no web identity \
             (AWS_WEB_IDENTITY_TOKEN_FILE, AWS_ROLE_ARN), no profile with credentials (AWS_PROFILE), \
             no container endpoint (AWS_CONTAINER_CREDENTIALS_RELATIVE_URI), and instance metadata \
             is disabled (AWS_EC2_METADATA_DISABLED)",
        ))
    }

    fn source_of_profile(&self, creds: ProfileCreds) -> Result<Source, ConfigError> {
        Ok(match creds {
            ProfileCreds::Static {
                access_key_id,
                secret_access_key,
                session_token,
            } => Source::Static(Credentials {
                access_key_id,
                secret_access_key,
                session_token,
            }),
            ProfileCreds::WebIdentity {
                token_file,
                role_arn,
                session_name,
            } => Source::WebIdentity(Box::new(WebIdentity {
                token_file: PathBuf::from(token_file),
                role_arn,
                session_name: self.session_name(session_name),
                sts: self.sts(),
            })),
            ProfileCreds::AssumeRole {
                base,
                role_arn,
                session_name,
                external_id,
                duration_seconds,
            } => Source::AssumeRole(Box::new(AssumeRole {
                base: self.source_of_profile(*base)?,
                role_arn,
                session_name: self.session_name(session_name),
                external_id,
                duration_seconds,
                sts: self.sts(),
            })),
            ProfileCreds::CredentialSource(kind) => match kind.as_str() {
                "Ec2InstanceMetadata" => Source::InstanceMetadata(imds(self.src, self.net)),
                "EcsContainer" => Source::Container(self.container()?.ok_or_else(|| {
                    bad(
                        "AWS_PROFILE",
                        "credential_source EcsContainer, but AWS_CONTAINER_CREDENTIALS_RELATIVE_URI and _FULL_URI are unset",
                    )
                })?),
                _ => {
                    return Err(bad(
                        "AWS_PROFILE",
                        "credential_source Environment, but AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY are unset",
                    ));
                }
            },
        })
    }
}
