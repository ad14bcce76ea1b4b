//! AWS STS and the EC2 instance metadata service (IMDS) for the tests: moto 5.2.5's server on
//! a loopback port, plain HTTP. One port serves both.
//!
//! STS (tried by hand): `POST /` with a form body (`Action=AssumeRole&Version=2011-06-15&...`,
//! `Content-Type: application/x-www-form-urlencoded`). moto picks the service from the
//! credential scope of the `Authorization` header (`.../us-east-1/sts/aws4_request`), not
//! from the Host header; unsigned, only AssumeRoleWithWebIdentity and AssumeRoleWithSAML are
//! recognised (and only in a form body, not as a GET query): any other unsigned request, or
//! a GET with the action in the query, lands in moto's S3 (a ListBuckets answer).
//! AssumeRole honours DurationSeconds (Expiration = now + it); any role ARN is accepted.
//! Signatures are NOT checked by default; [`MotoServer::start_checking_signatures`] turns
//! checking on (moto recomputes the SigV4 signature with botocore and needs `X-Amz-Date`).
//!
//! IMDS: every method (GET, PUT, ...) on
//! * `/latest/api/token` answers `fake-imdsv2-token` (no TTL header; the token is never
//!   checked afterwards, so IMDSv1 and v2 both work);
//! * `/latest/meta-data/iam/security-credentials/` answers `default-role`;
//! * `/latest/meta-data/iam/security-credentials/default-role` answers
//!   `{"AccessKeyId": "test-key", "SecretAccessKey": "test-secret-key", "Token":
//!   "test-session-token", "Expiration": <now + 1 day>}`, without the `Code`, `Type` and
//!   `LastUpdated` fields real IMDS sends;
//! * `/latest/meta-data/placement/region` (`us-east-1`), `.../availability-zone`,
//!   `.../instance-id` and a few more.
//!
//! Any other role name, or `.../security-credentials` without the trailing slash, is a 500;
//! `/latest/dynamic/...` (the instance identity document) is not served (moto's S3 answers).

use super::emulator::Emulator;
use super::{Tool, require_or_fail};

/// A moto server. Killed on drop.
pub struct MotoServer {
    /// `http://127.0.0.1:PORT`: the STS endpoint, and the IMDS endpoint (in place of
    /// `http://169.254.169.254`).
    pub endpoint: String,
    pub port: u16,
    emulator: Emulator,
}

/// Long-term credentials of an IAM user moto knows, allowed every action.
#[derive(Clone, Debug)]
pub struct IamKey {
    pub access_key_id: String,
    pub secret_access_key: String,
}

/// The requests moto answers before it starts checking signatures (see below).
const FREE_ACTIONS: &str = "3";

impl MotoServer {
    /// Starts one that checks no signatures; `None` (after a `SKIP:` line) when moto_server is
    /// unavailable and tools are not required, a panic when they are (see `require_or_fail`).
    pub fn start(test: &str) -> Option<MotoServer> {
        Self::launch(test, &[])
    }

    /// Starts one that checks SigV4 signatures against the IAM users it knows, and makes one
    /// user allowed everything. Requests signed with another key get 403
    /// InvalidClientTokenId, with a wrong secret 403 SignatureDoesNotMatch; credentials from
    /// its own AssumeRole work too (with their session token). Unsigned
    /// AssumeRoleWithWebIdentity fails with 500 in this mode (moto looks for the
    /// `Authorization` header all the same): test that against [`MotoServer::start`].
    pub fn start_checking_signatures(test: &str) -> Option<(MotoServer, IamKey)> {
        // moto's switch: the first N actions are free, then every one is authenticated.
        // The free ones make the user.
        let moto = Self::launch(test, &[("INITIAL_NO_AUTH_ACTION_COUNT", FREE_ACTIONS)])?;
        moto.iam("CreateUser", &[]);
        let created = moto.iam("CreateAccessKey", &[]);
        let policy = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"*","Resource":"*"}]}"#;
        moto.iam(
            "PutUserPolicy",
            &[("PolicyName", "all"), ("PolicyDocument", policy)],
        );
        let key = IamKey {
            access_key_id: xml_text(&created, "AccessKeyId"),
            secret_access_key: xml_text(&created, "SecretAccessKey"),
        };
        Some((moto, key))
    }

    fn launch(test: &str, env: &[(&str, &str)]) -> Option<MotoServer> {
        let bin = require_or_fail(Tool::Moto, test)?;
        let emulator = Emulator::start("moto_server", &bin, env, |port, _data| {
            ["-H", "127.0.0.1", "-p", &port.to_string()]
                .map(String::from)
                .to_vec()
        });
        Some(MotoServer {
            endpoint: format!("http://127.0.0.1:{}", emulator.port),
            port: emulator.port,
            emulator,
        })
    }

    /// One IAM call on user `walrus` while actions are still free: its `Authorization` only
    /// has to name the service (moto routes by the credential scope) and is not verified.
    fn iam(&self, action: &str, params: &[(&str, &str)]) -> String {
        let mut form = vec![
            ("Action", action),
            ("Version", "2010-05-08"),
            ("UserName", "walrus"),
        ];
        form.extend_from_slice(params);
        let auth = "AWS4-HMAC-SHA256 Credential=AKIDSETUP/20260101/us-east-1/iam/aws4_request, \
                    SignedHeaders=host, Signature=0";
        match ureq::post(&format!("{}/", self.endpoint))
            .set("Authorization", auth)
            .send_form(&form)
        {
            Ok(resp) => resp.into_string().expect("moto IAM answer"),
            Err(e) => panic!("moto IAM {action}: {e}\n{}", self.log()),
        }
    }

    /// The server's log so far, one access-log line per request (for failure messages).
    pub fn log(&self) -> String {
        self.emulator.log()
    }
}

/// The text of the first `<tag>` element of `xml` (moto's answers have no attributes there).
pub fn xml_text(xml: &str, tag: &str) -> String {
    let open = format!("<{tag}>");
    let start = xml
        .find(&open)
        .unwrap_or_else(|| panic!("no <{tag}> in {xml}"))
        + open.len();
    let end = xml[start..]
        .find(&format!("</{tag}>"))
        .unwrap_or_else(|| panic!("no </{tag}> in {xml}"));
    xml[start..start + end].to_string()
}
