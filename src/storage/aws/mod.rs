//! AWS credentials as the AWS SDKs find them, without an SDK: static keys, a web-identity
//! token exchanged at STS, the shared credentials and config files, the ECS container
//! endpoint, EC2 instance metadata, and a role assumed on top of any of them.
//!
//! `config` decides from the settings which [`Source`] applies (plain values: paths, URLs,
//! ARNs); this module fetches from it over the same blocking HTTP as S3 and keeps the result
//! in a [`CredentialProvider`], which every signed request asks for the credentials of the
//! moment, so temporary credentials are replaced before they expire, in a long backup too.

pub mod ecs;
pub mod imds;
pub mod profile;
pub mod provider;
pub mod source;
pub mod sts;

pub use crate::storage::s3::sign::Credentials;
pub use provider::CredentialProvider;
pub use source::{AssumeRole, Http, Source, Sts, WebIdentity};

use crate::time::UtcTime;

/// Credentials with the instant they stop working (`None`: they do not expire).
#[derive(Clone, Debug)]
pub struct Expiring {
    /// The credentials.
    pub credentials: Credentials,
    /// When they expire.
    pub expires: Option<UtcTime>,
}
