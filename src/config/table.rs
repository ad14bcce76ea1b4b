//! Every setting WAL-G v3.0.8 reads for PostgreSQL, and what wal-rus does with it.
//!
//! The list is WAL-G's own (`internal/config/config.go`: the common and PostgreSQL lists,
//! and each storage back-end's `SettingList`), plus the `PG*` variables its PostgreSQL driver
//! reads from the environment and the settings wal-rus adds (`WALRUS_*`). Each row is
//!
//! - **honoured**: wal-rus implements it;
//! - **refused**: with the value given, WAL-G would store something else, protect it
//!   differently or pick other data than wal-rus would: a command it applies to exits 1
//!   naming it, before touching storage;
//! - **warned**: it changes how WAL-G runs, not what it stores: one warning line names it
//!   and says it has no effect in wal-rus.
//!
//! A row applies where WAL-G acts on it: `commands` lists the wal-rus commands (a setting of
//! a command wal-rus lacks, such as wal-receive, is reported by every command, so it is
//! never silent), `scope` the storage it belongs to (WAL-G reads the settings of the storage
//! in use only, so another storage's settings change nothing in either tool and pass
//! quietly; a second storage prefix gets a warning), and `inert` the values with which
//! WAL-G behaves as wal-rus does (`WALG_USE_REVERSE_UNPACK=false`).
//!
//! Borderline calls, and why:
//! - `WALG_USE_WAL_DELTA` and `WALG_FORCE_WAL_DELTA` are warned: wal-rus finds a delta's
//!   changed pages by scanning them, WAL-G's fallback when it has no WAL-delta map; the
//!   delta stored is the same.
//! - `WALG_USE_REVERSE_UNPACK` and `WALG_SKIP_REDUNDANT_TARS` are warned: wal-rus applies a
//!   delta chain base first, WAL-G's default order; the restored directory is the same.
//! - The settings that only tune a
//!   refused one are warned: WAL-G ignores them unless their primary setting is set, and then
//!   that one is refused.
//! - Every encryption setting but libsodium's and `WALG_PGP_KEY`'s is refused, companions
//!   included (a KMS region, the envelope's KMS key): any of them says the archive is meant
//!   to be encrypted, and plaintext where WAL-G would encrypt cannot be taken back.
//! - The AWS SDK's own variables (`AWS_PROFILE`, `AWS_WEB_IDENTITY_TOKEN_FILE`, the
//!   container and instance-metadata ones) are listed although WAL-G reads them through its
//!   SDK only: wal-rus reads them itself, in the SDK's order.
//! - `S3_REQUEST_ADDITIONAL_HEADERS` is refused: the headers may set ACLs, tags or locks.
//! - `PGSSLCERT`/`PGSSLKEY` are warned: a server that requires a client certificate refuses
//!   wal-rus's connection, loudly. `PGSERVICE` is refused: ignoring it connects elsewhere.
//! - `NOTIFY_SOCKET` is read by the daemon only (WAL-G's too): systemd sets it, not the DBA.

/// What wal-rus does with a setting.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Status {
    /// Implemented.
    Honoured,
    /// Stops the command, naming the setting.
    Refused,
    /// One warning line: no effect in wal-rus.
    Warned,
}

/// Storage back-ends in WAL-G's order of precedence (the first configured one is used).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Kind {
    /// Alibaba OSS.
    Oss,
    /// S3 and compatible.
    S3,
    /// A directory.
    File,
    /// Google Cloud Storage.
    Gs,
    /// Azure Blob Storage.
    Az,
    /// OpenStack Swift.
    Swift,
    /// SFTP.
    Ssh,
}

impl Kind {
    /// WAL-G's order of storage back-ends.
    pub const ORDER: [Kind; 7] = [
        Kind::Oss,
        Kind::S3,
        Kind::File,
        Kind::Gs,
        Kind::Az,
        Kind::Swift,
        Kind::Ssh,
    ];

    /// The prefix setting without `WALG_`/`WALE_` (`S3_PREFIX`).
    pub fn prefix(self) -> &'static str {
        match self {
            Kind::Oss => "OSS_PREFIX",
            Kind::S3 => "S3_PREFIX",
            Kind::File => "FILE_PREFIX",
            Kind::Gs => "GS_PREFIX",
            Kind::Az => "AZ_PREFIX",
            Kind::Swift => "SWIFT_PREFIX",
            Kind::Ssh => "SSH_PREFIX",
        }
    }

    /// Its bit in [`Row::scope`].
    pub const fn bit(self) -> u8 {
        1 << self as u8
    }

    /// A name for people.
    pub fn label(self) -> &'static str {
        match self {
            Kind::Oss => "OSS",
            Kind::S3 => "S3",
            Kind::File => "file",
            Kind::Gs => "GCS",
            Kind::Az => "Azure",
            Kind::Swift => "Swift",
            Kind::Ssh => "SSH",
        }
    }
}

/// How WAL-G spells a setting.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Spell {
    /// Exactly this name.
    Exact(&'static str),
    /// `WALG_<name>`, then `WALE_<name>` (storage prefixes, the GPG key id).
    Prefixed(&'static str),
    /// `<name>`, then `WALG_<name>`, then `WALE_<name>` (a storage back-end's settings).
    Storage(&'static str),
}

impl Spell {
    /// Every spelling, in WAL-G's order of lookup.
    pub fn names(self) -> Vec<String> {
        match self {
            Spell::Exact(n) => vec![n.to_string()],
            Spell::Prefixed(n) => vec![format!("WALG_{n}"), format!("WALE_{n}")],
            Spell::Storage(n) => vec![n.to_string(), format!("WALG_{n}"), format!("WALE_{n}")],
        }
    }
}

/// Values with which WAL-G behaves as wal-rus does: set so, the setting is accepted quietly.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Inert {
    /// None.
    Never,
    /// Any spelling of false (Go's `strconv.ParseBool`).
    False,
    /// Any spelling of true.
    True,
    /// These values (trimmed).
    Values(&'static [&'static str]),
}

impl Inert {
    /// Whether `value` is one of them.
    pub fn matches(self, value: &str) -> bool {
        let v = value.trim();
        match self {
            Inert::Never => false,
            Inert::False => matches!(v, "0" | "f" | "F" | "FALSE" | "false" | "False"),
            Inert::True => matches!(v, "1" | "t" | "T" | "TRUE" | "true" | "True"),
            Inert::Values(vals) => vals.contains(&v),
        }
    }
}

/// Command bits: the commands a row applies to.
pub mod cmd {
    /// `wal-push`.
    pub const WAL_PUSH: u16 = 1;
    /// `wal-fetch`.
    pub const WAL_FETCH: u16 = 1 << 1;
    /// `wal-prefetch`.
    pub const WAL_PREFETCH: u16 = 1 << 2;
    /// `backup-push` without `--full`.
    pub const BACKUP_PUSH: u16 = 1 << 3;
    /// `backup-push --full`.
    pub const BACKUP_PUSH_FULL: u16 = 1 << 4;
    /// `backup-fetch`.
    pub const BACKUP_FETCH: u16 = 1 << 5;
    /// `backup-list`.
    pub const BACKUP_LIST: u16 = 1 << 6;
    /// `backup-mark`.
    pub const BACKUP_MARK: u16 = 1 << 7;
    /// `delete`.
    pub const DELETE: u16 = 1 << 8;
    /// `memory-plan`.
    pub const MEMORY_PLAN: u16 = 1 << 9;
    /// `wal-verify`.
    pub const WAL_VERIFY: u16 = 1 << 10;
    /// `wal-show`.
    pub const WAL_SHOW: u16 = 1 << 11;
    /// `daemon`.
    pub const DAEMON: u16 = 1 << 12;
    /// `wal-restore`.
    pub const WAL_RESTORE: u16 = 1 << 13;
    /// `wal-receive`.
    pub const WAL_RECEIVE: u16 = 1 << 14;
    /// Every command.
    pub const ALL: u16 = (1 << 15) - 1;
    /// `backup-push`, with or without `--full`.
    pub const PUSH: u16 = BACKUP_PUSH | BACKUP_PUSH_FULL;
    /// The commands that upload objects.
    pub const UPLOADS: u16 = WAL_PUSH | PUSH | BACKUP_MARK | DAEMON | WAL_RECEIVE;
    /// The commands that connect to PostgreSQL.
    pub const CONNECTS: u16 = PUSH | WAL_VERIFY | WAL_RECEIVE;
}

/// One setting.
#[derive(Clone, Copy, Debug)]
pub struct Row {
    /// Its spellings.
    pub spell: Spell,
    /// What wal-rus does with it.
    pub status: Status,
    /// The storage back-ends it belongs to, one bit each ([`Kind::bit`]; 0: any).
    pub scope: u8,
    /// The commands it applies to ([`cmd`] bits).
    pub commands: u16,
    /// Values that change nothing.
    pub inert: Inert,
    /// WAL-G's default ("" for none).
    pub default: &'static str,
    /// What it does, and for refused and warned rows why wal-rus stops or ignores it.
    pub note: &'static str,
}

impl Row {
    const fn new(status: Status, spell: Spell, note: &'static str) -> Row {
        Row {
            spell,
            status,
            scope: 0,
            commands: cmd::ALL,
            inert: Inert::Never,
            default: "",
            note,
        }
    }
    const fn on(mut self, kind: Kind) -> Row {
        self.scope = kind.bit();
        self
    }
    /// Belongs to `kind` too.
    const fn also(mut self, kind: Kind) -> Row {
        self.scope |= kind.bit();
        self
    }
    /// Whether it belongs to `kind` (a row of no storage belongs to all).
    pub fn applies_to(&self, kind: Kind) -> bool {
        self.scope == 0 || self.scope & kind.bit() != 0
    }
    const fn only(mut self, commands: u16) -> Row {
        self.commands = commands;
        self
    }
    const fn inert(mut self, inert: Inert) -> Row {
        self.inert = inert;
        self
    }
    const fn def(mut self, default: &'static str) -> Row {
        self.default = default;
        self
    }
    /// Whether this is a storage back-end's prefix setting.
    pub fn is_prefix(&self) -> bool {
        matches!(self.spell, Spell::Prefixed(n) if n.ends_with("_PREFIX"))
    }
}

/// A group of rows, for the README.
pub struct Section {
    /// Heading.
    pub title: &'static str,
    /// Its rows.
    pub rows: &'static [Row],
}

const LIBSODIUM: &str = "libsodium encryption after compression (`crypto_secretstream_xchacha20poly1305`, WAL-G's framing; `none`, `hex`, `base64` transforms)";

use Spell::{Exact as E, Prefixed as P, Storage as S};
use Status::{Honoured as H, Refused as R, Warned as W};
use cmd::{
    BACKUP_FETCH, BACKUP_MARK, CONNECTS, DAEMON, DELETE, PUSH, UPLOADS, WAL_PUSH, WAL_VERIFY,
};

const fn h(s: Spell, note: &'static str) -> Row {
    Row::new(H, s, note)
}
const fn r(s: Spell, note: &'static str) -> Row {
    Row::new(R, s, note)
}
const fn w(s: Spell, note: &'static str) -> Row {
    Row::new(W, s, note)
}

const NO_ENCRYPTION: &str = "this encryption is not implemented (wal-rus has libsodium and WALG_PGP_KEY's OpenPGP): wal-rus would store plaintext where WAL-G encrypts, or misread an encrypted archive";
const NO_FAILOVER: &str = "only used with WALG_FAILOVER_STORAGES (refused)";
const SCAN_DELTA: &str = "WAL-delta maps; wal-rus finds a delta's changed pages by scanning them (WAL-G's fallback), the delta stored is the same";
const FORWARD_CHAIN: &str = "wal-rus applies a delta chain base first (WAL-G's default order); the restored directory is the same";
const NO_CLIENT_CERT: &str = "client certificates are not sent by wal-rus (a server that requires one refuses the connection)";
const OSS_ONLY: &str = "Alibaba OSS storage; read only with WALG_OSS_PREFIX, which wal-rus refuses";
const SWIFT_ONLY: &str = "Swift storage; read only with WALG_SWIFT_PREFIX, which wal-rus refuses";
const SSH_ONLY: &str = "SSH storage; read only with WALG_SSH_PREFIX, which wal-rus refuses";
const PG_CONN: &str = "the connection of backup-push, wal-verify and wal-receive (trust, md5, SCRAM-SHA-256; TLS via rustls)";

/// The table.
#[rustfmt::skip]
pub static TABLE: &[Section] = &[
    Section { title: "Storage", rows: &[
        h(P("S3_PREFIX"), "`s3://bucket/path`").on(Kind::S3),
        h(P("FILE_PREFIX"), "a directory (`file://localhost` stripped); writes are atomic (temp name, fsync, rename, fsync dir)").on(Kind::File),
        r(P("OSS_PREFIX"), "Alibaba OSS storage is not supported by wal-rus (S3, GCS, Azure and file only)").on(Kind::Oss),
        h(P("GS_PREFIX"), "`gs://bucket/path`: Google Cloud Storage through its JSON API, with WAL-G's object names").on(Kind::Gs),
        h(P("AZ_PREFIX"), "`azure://container/path`, the blob names WAL-G makes (the same keys as on S3)").on(Kind::Az),
        r(P("SWIFT_PREFIX"), "Swift storage is not supported by wal-rus (S3, GCS, Azure and file only)").on(Kind::Swift),
        r(P("SSH_PREFIX"), "SSH storage is not supported by wal-rus (S3, GCS, Azure and file only)").on(Kind::Ssh),
        h(E("WALG_STORAGE_PREFIX"), "extra folder below the root"),
        r(E("WALG_FAILOVER_STORAGES"), "failover storages are not supported: wal-rus would use the primary storage only"),
        w(E("WALG_FAILOVER_STORAGES_CHECK"), NO_FAILOVER),
        w(E("WALG_FAILOVER_STORAGES_CHECK_TIMEOUT"), NO_FAILOVER).def("30s"),
        w(E("WALG_FAILOVER_STORAGES_CHECK_SIZE"), NO_FAILOVER).def("1mb"),
        w(E("WALG_FAILOVER_STORAGES_CACHE_LIFETIME"), NO_FAILOVER).def("15m"),
        w(E("WALG_FAILOVER_STORAGES_CACHE_EMA_ALIVE_LIMIT"), NO_FAILOVER),
        w(E("WALG_FAILOVER_STORAGES_CACHE_EMA_DEAD_LIMIT"), NO_FAILOVER),
        w(E("WALG_FAILOVER_STORAGES_CACHE_EMA_ALPHA_ALIVE_MAX"), NO_FAILOVER),
        w(E("WALG_FAILOVER_STORAGES_CACHE_EMA_ALPHA_ALIVE_MIN"), NO_FAILOVER),
        w(E("WALG_FAILOVER_STORAGES_CACHE_EMA_ALPHA_DEAD_MAX"), NO_FAILOVER),
        w(E("WALG_FAILOVER_STORAGES_CACHE_EMA_ALPHA_DEAD_MIN"), NO_FAILOVER),
        r(E("WALG_TARGET_STORAGE"), "selecting a failover storage is not supported (wal-rus has only the primary, `default`)").inert(Inert::Values(&["default"])),
    ]},
    Section { title: "S3", rows: &[
        h(S("AWS_ENDPOINT"), "S3-compatible endpoint URL (`http://` or `https://`)").on(Kind::S3).def("AWS"),
        h(S("AWS_REGION"), "signing region; else the profile's `region`, `us-east-1` with `AWS_ENDPOINT`, else the instance's (IMDS); WAL-G would ask S3").on(Kind::S3),
        h(S("AWS_S3_FORCE_PATH_STYLE"), "path-style addressing").on(Kind::S3).def("false"),
        h(S("AWS_ACCESS_KEY_ID"), "static credentials (whitespace trimmed), first in the credential chain").on(Kind::S3),
        h(S("AWS_ACCESS_KEY"), "same as `AWS_ACCESS_KEY_ID`").on(Kind::S3),
        h(S("AWS_SECRET_ACCESS_KEY"), "static credentials (whitespace trimmed)").on(Kind::S3),
        h(S("AWS_SECRET_KEY"), "same as `AWS_SECRET_ACCESS_KEY`").on(Kind::S3),
        h(S("AWS_SESSION_TOKEN"), "session token of the static credentials").on(Kind::S3),
        h(S("AWS_ROLE_ARN"), "STS AssumeRole with the credentials the chain found, refreshed before they expire; with AWS_WEB_IDENTITY_TOKEN_FILE the web identity's role (IRSA), not assumed again").on(Kind::S3),
        h(S("AWS_ROLE_SESSION_NAME"), "session name of an assumed role").on(Kind::S3).def("wal-rus-<time>"),
        h(E("AWS_WEB_IDENTITY_TOKEN_FILE"), "with AWS_ROLE_ARN: STS AssumeRoleWithWebIdentity (EKS/IRSA), the token re-read at every refresh").on(Kind::S3),
        h(E("AWS_PROFILE"), "profile of the shared files (keys, `role_arn` with `source_profile` or `credential_source`, `web_identity_token_file`, `region`)").on(Kind::S3).def("default"),
        h(E("AWS_DEFAULT_PROFILE"), "the profile when AWS_PROFILE is unset").on(Kind::S3),
        h(E("AWS_SHARED_CREDENTIALS_FILE"), "the shared credentials file").on(Kind::S3).def("~/.aws/credentials"),
        h(E("AWS_CONFIG_FILE"), "the shared config file").on(Kind::S3).def("~/.aws/config"),
        h(E("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI"), "ECS task role: credentials from `http://169.254.170.2` + this").on(Kind::S3),
        h(E("AWS_CONTAINER_CREDENTIALS_FULL_URI"), "container credentials from this URL (HTTPS, or HTTP to loopback or the ECS/EKS link-local address)").on(Kind::S3),
        h(E("AWS_CONTAINER_AUTHORIZATION_TOKEN"), "`Authorization` header for the container endpoint").on(Kind::S3),
        h(E("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE"), "the same from a file, re-read at every refresh (EKS Pod Identity)").on(Kind::S3),
        h(E("AWS_EC2_METADATA_DISABLED"), "`true`: never ask EC2 instance metadata (IMDSv2, then v1) for credentials or the region").on(Kind::S3).def("false"),
        h(E("AWS_EC2_METADATA_SERVICE_ENDPOINT"), "instance metadata endpoint").on(Kind::S3).def("http://169.254.169.254"),
        h(E("AWS_ENDPOINT_URL_STS"), "STS endpoint for AssumeRole and AssumeRoleWithWebIdentity").on(Kind::S3).def("https://sts.<region>.amazonaws.com"),
        h(E("AWS_CA_BUNDLE"), "CA bundle when `WALG_S3_CA_CERT_FILE` is unset (the AWS SDK's variable)").on(Kind::S3),
        w(E("AWS_DEFAULT_REGION"), "the AWS CLI's region; WAL-G takes the region from AWS_REGION or the bucket").on(Kind::S3),
        w(E("AWS_DEFAULT_OUTPUT"), "the AWS CLI's output format").on(Kind::S3),
        w(S("AWS_DUAL_STACK"), "dual-stack (IPv6) AWS endpoints; wal-rus uses AWS_ENDPOINT or the regional endpoint").on(Kind::S3).inert(Inert::False).def("false"),
        h(S("S3_CA_CERT_FILE"), "extra CA bundle beside the system roots (HTTPS via rustls)").on(Kind::S3),
        h(S("S3_STORAGE_CLASS"), "sent with uploads").on(Kind::S3).def("STANDARD"),
        h(S("S3_SSE"), "`AES256` or `aws:kms`, sent with uploads").on(Kind::S3),
        h(S("S3_SSE_KMS_ID"), "KMS key id; required with `aws:kms`, refused without").on(Kind::S3),
        h(S("S3_SSE_C"), "SSE-C: a 32-byte customer key sent (base64, with its MD5) on every upload, part, read and HEAD, as WAL-G sends it; needs `S3_SSE=AES256` (WAL-G would ignore it without, wal-rus stops)").on(Kind::S3),
        h(S("S3_MAX_PART_SIZE"), "multipart part size").on(Kind::S3).def("20971520"),
        h(S("S3_MAX_RETRIES"), "retries of 5xx, throttling, resets, timeouts; other 4xx fail at once").on(Kind::S3).def("15"),
        h(S("S3_MIN_THROTTLING_RETRY_DELAY"), "back-off when throttled, ms").on(Kind::S3).def("500"),
        h(S("S3_MAX_THROTTLING_RETRY_DELAY"), "back-off when throttled, ms").on(Kind::S3).def("300000"),
        h(S("S3_DELETE_BATCH_SIZE"), "keys per DeleteObjects").on(Kind::S3).def("1000"),
        h(S("S3_RETENTION_PERIOD"), "Object Lock: every upload locked this many seconds (`x-amz-object-lock-retain-until-date`, with `Content-MD5` on single PUTs); -1 off").on(Kind::S3).only(UPLOADS).def("-1"),
        h(S("S3_RETENTION_MODE"), "Object Lock mode with S3_RETENTION_PERIOD: `GOVERNANCE` or `COMPLIANCE`").on(Kind::S3).only(UPLOADS).def("GOVERNANCE"),
        r(S("S3_REQUEST_ADDITIONAL_HEADERS"), "extra request headers (which may set ACLs, tags or locks) are not sent by wal-rus").on(Kind::S3),
        r(S("S3_USE_YC_SESSION_TOKEN"), "Yandex Cloud metadata credentials are not implemented (static keys only)").on(Kind::S3).inert(Inert::False),
        w(S("S3_ENABLE_VERSIONING"), "WAL-G's delete removes every version of an object; wal-rus removes the current one (older versions stay until the bucket's lifecycle rules remove them)").on(Kind::S3).only(DELETE).inert(Inert::Values(&["disabled"])),
        w(S("S3_SKIP_VALIDATION"), "a credentials check at start; wal-rus's first request checks them anyway").on(Kind::S3).inert(Inert::True).def("true"),
        w(S("S3_USE_LIST_OBJECTS_V1"), "wal-rus lists with ListObjectsV2").on(Kind::S3).inert(Inert::False).def("false"),
        w(S("S3_RANGE_BATCH_ENABLED"), "resuming downloads with ranged GETs; wal-rus retries whole requests").on(Kind::S3).inert(Inert::False).def("false"),
        w(S("S3_RANGE_MAX_RETRIES"), "only used with S3_RANGE_BATCH_ENABLED").on(Kind::S3).def("10"),
        w(S("S3_DISABLE_100_CONTINUE"), "wal-rus never sends `Expect: 100-continue`").on(Kind::S3).inert(Inert::True).def("false"),
        w(S("S3_ENDPOINT_SOURCE"), "a URL naming a node to bypass a load balancer; wal-rus talks to AWS_ENDPOINT").on(Kind::S3),
        w(S("S3_ENDPOINT_PORT"), "only used with S3_ENDPOINT_SOURCE").on(Kind::S3).def("443"),
        w(S("S3_LOG_LEVEL"), "AWS SDK request logging").on(Kind::S3),
        w(E("UPLOAD_CONCURRENCY"), "S3 multipart parallelism spelled without `WALG_`; wal-rus reads WALG_UPLOAD_CONCURRENCY").on(Kind::S3),
        w(E("WALE_UPLOAD_CONCURRENCY"), "S3 multipart parallelism in WAL-E's spelling; wal-rus reads WALG_UPLOAD_CONCURRENCY").on(Kind::S3),
    ]},
    Section { title: "Azure", rows: &[
        h(S("AZURE_STORAGE_ACCOUNT"), "the storage account (required)").on(Kind::Az),
        h(S("AZURE_STORAGE_ACCESS_KEY"), "Shared Key authorization with the account key; wins over the SAS token, as in WAL-G").on(Kind::Az),
        h(S("AZURE_STORAGE_SAS_TOKEN"), "a SAS token (with or without `?`) appended to every request's query; never logged").on(Kind::Az),
        h(S("AZURE_ENVIRONMENT_NAME"), "`AzureUSGovernmentCloud`, `AzureChinaCloud`, `AzureGermanCloud` pick their endpoint suffix, any other name the public cloud's").on(Kind::Az).def("AzurePublicCloud"),
        h(S("AZURE_ENDPOINT_SUFFIX"), "endpoint `https://ACCOUNT.blob.SUFFIX`; wins over AZURE_ENVIRONMENT_NAME").on(Kind::Az).def("core.windows.net"),
        h(S("AZURE_BUFFER_SIZE"), "block size (at least 1024): a body of one block is one Put Blob, a larger one staged blocks; streamed backups stage blocks of 5–8 MiB (the memory plan's part size)").on(Kind::Az).def("8388608"),
        h(S("AZURE_MAX_BUFFERS"), "blocks a streamed upload stages at once, at most 2 (the memory plan's part uploaders)").on(Kind::Az).def("4"),
        h(S("AZURE_TRY_TIMEOUT"), "minutes one try of a request may take (0: only the I/O timeouts); a broken download resumes instead").on(Kind::Az).def("5"),
        h(E("AZURE_STORAGE_CONNECTION_STRING"), "the Azure SDKs' connection string (`AccountName`, `AccountKey` or `SharedAccessSignature`, `BlobEndpoint`, `DefaultEndpointsProtocol`, `EndpointSuffix`) for an emulator or a private endpoint; WAL-G does not read it, so the settings above, where set, must agree with it").on(Kind::Az),
        h(E("AZURE_TENANT_ID"), "without a key or a SAS: the service principal's or workload identity's tenant (Microsoft Entra ID tokens)").on(Kind::Az),
        h(E("AZURE_CLIENT_ID"), "without a key or a SAS: the service principal's or workload identity's application, or a user-assigned managed identity").on(Kind::Az),
        h(E("AZURE_CLIENT_SECRET"), "without a key or a SAS: the service principal's secret, exchanged for tokens refreshed before they expire; never logged").on(Kind::Az),
        h(E("AZURE_FEDERATED_TOKEN_FILE"), "without a key, SAS or client secret: workload identity (AKS), the file re-read at every refresh").on(Kind::Az),
        h(E("AZURE_AUTHORITY_HOST"), "Microsoft Entra ID's authority for the two above").on(Kind::Az).def("https://login.microsoftonline.com/"),
        h(E("IDENTITY_ENDPOINT"), "with IDENTITY_HEADER: App Service's managed identity; without either, the VM's (IMDS at 169.254.169.254)").on(Kind::Az),
        h(E("IDENTITY_HEADER"), "App Service's managed-identity header; never logged").on(Kind::Az),
        r(E("AZURE_CLIENT_CERTIFICATE_PATH"), "a service principal's certificate: wal-rus exits 1 rather than authenticate otherwise than asked").on(Kind::Az),
    ]},
    Section { title: "Google Cloud Storage", rows: &[
        h(E("GOOGLE_APPLICATION_CREDENTIALS"), "a service-account key file: its key signs the OAuth2 token requests (RS256 JWT to its `token_uri`); without it, the GCE/GKE metadata server's tokens (other key-file types are refused)").on(Kind::Gs),
        h(E("STORAGE_EMULATOR_HOST"), "an emulator (`host:port` means plain HTTP), as Google's libraries read it; no credentials are sent unless a key file is set").on(Kind::Gs),
        h(E("GCE_METADATA_HOST"), "the metadata server's `host[:port]`, as Google's libraries read it").on(Kind::Gs).def("metadata.google.internal"),
        h(S("GCS_NORMALIZE_PREFIX"), "`true`: the prefix's path loses its outer slashes (the same names as on S3); `false`: only one leading slash goes (WAL-E archives)").on(Kind::Gs).def("true"),
        h(S("GCS_ENCRYPTION_KEY"), "customer-supplied AES-256 key (base64 of 32 bytes), sent with every upload and read as WAL-G sends it").on(Kind::Gs),
        h(S("GCS_MAX_CHUNK_SIZE"), "chunk size of resumable uploads (rounded down to 256 KiB; streamed backups cap it at 8 MiB, as S3's part size) and the largest body sent in one request").on(Kind::Gs).def("52428800"),
        h(S("GCS_MAX_RETRIES"), "retries of 5xx, 408, 429, resets, timeouts; other 4xx fail at once").on(Kind::Gs).def("16"),
        h(S("GCS_CONTEXT_TIMEOUT"), "seconds one request may take with all its retries").on(Kind::Gs).def("3600"),
    ]},
    Section { title: "Compression and encryption", rows: &[
        h(E("WALG_COMPRESSION_METHOD"), "`lz4`, `zstd`, `lzma`, `brotli`, `none`; reading also accepts `.gz`").def("lz4"),
        h(E("WALG_ZSTD_LEVEL"), "`fastest`, `default`, `better`, `best` (WAL-G master's setting; v3.0.8 ignores it)").def("default"),
        h(E("WALG_LIBSODIUM_KEY"), LIBSODIUM),
        h(E("WALG_LIBSODIUM_KEY_PATH"), LIBSODIUM),
        h(E("WALG_LIBSODIUM_KEY_TRANSFORM"), LIBSODIUM).def("none"),
        h(E("WALG_PGP_KEY"), "OpenPGP encryption after compression, as WAL-G writes it: an armored key, public (encrypts) or secret (also decrypts); `\\n` in it stands for a newline; wins over WALG_PGP_KEY_PATH and libsodium, as in WAL-G"),
        h(E("WALG_PGP_KEY_PATH"), "the same from an armored key file"),
        h(E("WALG_PGP_KEY_PASSPHRASE"), "unlocks a passphrase-protected secret key of WALG_PGP_KEY or WALG_PGP_KEY_PATH"),
        r(P("GPG_KEY_ID"), NO_ENCRYPTION),
        r(E("GPG_KEY_ID"), NO_ENCRYPTION),
        r(E("WALG_CSE_KMS_ID"), NO_ENCRYPTION),
        r(E("WALG_CSE_KMS_REGION"), NO_ENCRYPTION),
        r(E("YC_CSE_KMS_KEY_ID"), NO_ENCRYPTION),
        r(E("YC_SERVICE_ACCOUNT_KEY_FILE"), NO_ENCRYPTION),
        r(E("WALG_ENVELOPE_PGP_KEY"), NO_ENCRYPTION),
        r(E("WALG_ENVELOPE_PGP_KEY_PATH"), NO_ENCRYPTION),
        r(E("WALG_ENVELOPE_PGP_YC_CSE_KMS_KEY_ID"), NO_ENCRYPTION),
        r(E("WALG_ENVELOPE_PGP_YC_SERVICE_ACCOUNT_KEY_FILE"), NO_ENCRYPTION),
        r(E("WALG_ENVELOPE_PGP_YC_ENDPOINT"), NO_ENCRYPTION),
        r(E("WALG_ENVELOPE_CACHE_EXPIRATION"), NO_ENCRYPTION).def("0"),
    ]},
    Section { title: "Concurrency, sizes and limits", rows: &[
        h(E("WALG_UPLOAD_CONCURRENCY"), "wal-push background workers = this − 1; wal-receive upload threads = this, at most 2; wal-verify integrity reports this many missing segments after the delayed ones as `MISSING_UPLOADING`").def("16"),
        h(E("TOTAL_BG_UPLOADED_LIMIT"), "background uploads per wal-push = this − 1").def("32"),
        h(E("WALG_DOWNLOAD_CONCURRENCY"), "segments prefetched (1 disables prefetch); backup-fetch workers").def("10"),
        h(E("WALG_TAR_SIZE_THRESHOLD"), "tar partition payload size").def("1073741823"),
        w(E("WALG_UPLOAD_DISK_CONCURRENCY"), "files read in parallel by backup-push; wal-rus sizes its readers from its memory plan").only(PUSH).def("1"),
        w(E("WALG_UPLOAD_QUEUE"), "partitions uploading at once in backup-push; wal-rus sizes this from its memory plan").only(PUSH).def("2"),
        w(E("WALG_DOWNLOAD_FILE_RETRIES"), "retry rounds of backup-fetch; wal-rus retries each request (WALG_S3_MAX_RETRIES)").only(BACKUP_FETCH).def("15"),
        h(E("WALG_DISK_RATE_LIMIT"), "bytes/s read from the data directory by backup-push (token bucket, burst = rate + 64 KiB; `--turbo` lifts it)"),
        h(E("WALG_NETWORK_RATE_LIMIT"), "bytes/s to or from storage in backup-push and backup-fetch (token bucket; `--turbo` lifts it)"),
        w(E("WALG_DIRECT_IO"), "O_DIRECT reads in backup-push; wal-rus reads through the page cache").only(PUSH).inert(Inert::False).def("false"),
        w(E("GOMAXPROCS"), "the Go runtime's CPU limit; wal-rus's threads follow the WALG_* concurrency settings"),
        w(E("GODEBUG"), "the Go runtime's debug switches"),
    ]},
    Section { title: "PostgreSQL", rows: &[
        h(E("PGHOST"), PG_CONN).def("libpq's"),
        h(E("PGPORT"), PG_CONN).def("5432"),
        h(E("PGUSER"), PG_CONN),
        h(E("PGPASSWORD"), PG_CONN),
        h(E("PGPASSFILE"), PG_CONN).def("~/.pgpass"),
        h(E("PGDATABASE"), PG_CONN),
        h(E("PGSSLMODE"), PG_CONN).def("prefer"),
        h(E("PGSSLROOTCERT"), PG_CONN),
        h(E("PGCONNECT_TIMEOUT"), PG_CONN),
        h(E("PGAPPNAME"), "`application_name` (wal-rus's default is `wal-rus`)").def("wal-g"),
        h(E("USER"), "libpq's default user (not a WAL-G setting)"),
        h(E("HOME"), "where libpq's `~/.pgpass` is (not a WAL-G setting)"),
        w(E("PGSSLCERT"), NO_CLIENT_CERT).only(CONNECTS),
        w(E("PGSSLKEY"), NO_CLIENT_CERT).only(CONNECTS),
        w(E("PGSSLPASSWORD"), NO_CLIENT_CERT).only(CONNECTS),
        w(E("PGSSLSNI"), "wal-rus always sends the host name (SNI) on TLS").only(CONNECTS).inert(Inert::Values(&["1"])),
        w(E("PGSSLNEGOTIATION"), "wal-rus negotiates TLS the classic way (SSLRequest)").only(CONNECTS).inert(Inert::Values(&["postgres"])),
        w(E("PGTARGETSESSIONATTRS"), "wal-rus connects to the one PGHOST").only(CONNECTS),
        w(E("PGTZ"), "session time zone; wal-rus reads no times from the server").only(CONNECTS),
        w(E("PGOPTIONS"), "server options at connection; wal-rus sends none").only(CONNECTS),
        r(E("PGSERVICE"), "connection service files are not read: wal-rus would connect with PGHOST/PGPORT/... instead").only(CONNECTS),
        w(E("PGSERVICEFILE"), "only used with PGSERVICE (refused)").only(CONNECTS),
        h(E("PGDATA"), "the data directory (backup-push; wal-push's `walg_data` markers; the daemon's `pg_wal`, required)"),
        h(E("WALG_PG_WAL_SIZE"), "WAL segment size in MiB").def("16"),
        w(E("WALG_PG_BLOCK_SIZE"), "page size of delta increments and page checks; wal-rus assumes 8192").inert(Inert::Values(&["8192"])).def("8192"),
        w(E("WALG_PG_WAL_PAGE_SIZE"), "WAL page size of WAL-delta maps and wal-verify; wal-rus assumes 8192").inert(Inert::Values(&["8192"])).def("8192"),
        h(E("WALG_ALIVE_CHECK_INTERVAL"), "backup-push checks this often, on a second session, that the server and the backup's session are still there, and fails at once when not (`0`: never)").def("1m"),
        h(E("WALG_STOP_BACKUP_TIMEOUT"), "bound on the backup's stop: the server's statement_timeout, and a client-side limit for a server that no longer answers (default: none)"),
        w(E("WALG_DISABLE_PARTIAL_RESTORE"), "wal-rus never collects the database names partial restore needs").only(PUSH).inert(Inert::True).def("false"),
        w(E("WALG_DAEMON_WAL_UPLOAD_TIMEOUT"), "the daemon's uploads are bounded by the storage client's own timeouts and retries (WALRUS_IO_TIMEOUT, the retry settings), not cut short; walg-daemon-client gives up after its `--timeout` (60 s) and PostgreSQL asks again").only(DAEMON).def("60s"),
        h(E("WALG_SLOTNAME"), "wal-receive's physical replication slot, created when missing (lower-case letters, digits, `_`; at most 63)").def("walg"),
        w(E("PGBACKREST_STANZA"), "WAL-G's pgbackrest commands, which wal-rus does not have").def("main"),
    ]},
    Section { title: "Backups", rows: &[
        h(E("WALG_DELTA_MAX_STEPS"), "deltas in a chain: backup-push stores a delta of the chosen base until its chain has this many (0: always full)").def("0"),
        h(E("WALG_DELTA_ORIGIN"), "base of a delta: `LATEST` chains deltas, `LATEST_FULL` bases each on the full backup").def("LATEST"),
        h(E("WALG_DELTA_FROM_NAME"), "base of a delta by name (as `--delta-from-name`)"),
        h(E("WALG_DELTA_FROM_USER_DATA"), "base of a delta by its user data (as `--delta-from-user-data`)"),
        w(E("WALG_USE_WAL_DELTA"), SCAN_DELTA).only(WAL_PUSH | PUSH | DAEMON).inert(Inert::False).def("false"),
        w(E("WALG_FORCE_WAL_DELTA"), SCAN_DELTA).only(PUSH).inert(Inert::False).def("false"),
        h(E("WALG_SENTINEL_USER_DATA"), "user data JSON for backup-push"),
        h(E("WALG_VERIFY_PAGE_CHECKSUMS"), "verify page checksums while reading").def("false"),
        h(E("WALG_STORE_ALL_CORRUPT_BLOCKS"), "record every corrupt block found, not the first 10").def("false"),
        w(E("WALG_USE_RATING_COMPOSER"), "another order of files in partitions; wal-rus's backups restore the same").only(PUSH).inert(Inert::False).def("false"),
        w(E("WALG_USE_COPY_COMPOSER"), "copies unchanged partitions of the last backup; wal-rus uploads them anew").only(PUSH).inert(Inert::False).def("false"),
        w(E("WALG_USE_DATABASE_COMPOSER"), "partitions per database; wal-rus's backups restore the same").only(PUSH).inert(Inert::False).def("false"),
        w(E("WALG_WITHOUT_FILES_METADATA"), "wal-rus always writes `files_metadata.json`").only(PUSH).inert(Inert::False).def("false"),
        w(E("WALG_SERIALIZER_TYPE"), "`json_streamed` writes the same documents another way").only(PUSH | BACKUP_MARK).inert(Inert::Values(&["json_default"])).def("json_default"),
        r(E("WALG_FETCH_TARGET_USER_DATA"), "choosing the backup by its user data is not implemented: wal-rus would restore another backup").only(BACKUP_FETCH),
        w(E("WALG_USE_REVERSE_UNPACK"), FORWARD_CHAIN).only(BACKUP_FETCH).inert(Inert::False).def("false"),
        w(E("WALG_SKIP_REDUNDANT_TARS"), FORWARD_CHAIN).only(BACKUP_FETCH).inert(Inert::False).def("false"),
        h(E("WALG_TAR_DISABLE_FSYNC"), "backup-fetch without fsync per file").def("false"),
        w(E("WALG_STREAM_CREATE_COMMAND"), "used by WAL-G for other databases, not PostgreSQL"),
        w(E("WALG_STREAM_RESTORE_COMMAND"), "used by WAL-G for other databases, not PostgreSQL"),
    ]},
    Section { title: "WAL", rows: &[
        h(E("WALG_PREVENT_WAL_OVERWRITE"), "compare before overwriting; always on for `.history`").def("false"),
        h(E("WALG_PREFETCH_DIR"), "parent of `.wal-g/prefetch` (default: beside the destination)"),
        h(E("PG_READY_RENAME"), "rename `.ready` to `.done` after a background upload").def("false"),
        h(E("WALG_UPLOAD_WAL_METADATA"), "`NOMETADATA`, `INDIVIDUAL` (`wal_005/<name>.json`), `BULK` (one object per 16 segments), as WAL-G writes them").def("NOMETADATA"),
        h(E("WALG_INTEGRITY_MAX_DELAYED_WALS"), "wal-verify integrity: missing segments newer than the newest stored one reported as `MISSING_DELAYED`").only(WAL_VERIFY).def("0"),
    ]},
    Section { title: "Logging, monitoring and miscellaneous", rows: &[
        h(E("WALG_LOG_LEVEL"), "`NORMAL`, `DEVEL`, `ERROR`").def("NORMAL"),
        w(E("WALG_LOG_DESTINATION"), "a log file; wal-rus logs to stderr").inert(Inert::Values(&["stderr"])).def("stderr"),
        w(E("WALG_STATSD_ADDRESS"), "StatsD metrics; wal-rus sends none"),
        w(E("WALG_STATSD_EXTRA_TAGS"), "StatsD metrics; wal-rus sends none"),
        w(E("PROFILE_SAMPLING_RATIO"), "Go profiling"),
        w(E("PROFILE_MODE"), "Go profiling").def("cpu"),
        w(E("PROFILE_PATH"), "Go profiling"),
        w(E("HTTP_LISTEN"), "WAL-G's debug web server"),
        w(E("HTTP_EXPOSE_PPROF"), "WAL-G's debug web server"),
        w(E("HTTP_EXPOSE_EXPVAR"), "WAL-G's debug web server"),
        h(E("NOTIFY_SOCKET"), "systemd's notification socket: the daemon sends `WATCHDOG=1` to it every 30 s, as WAL-G's does (set by systemd, not by hand)"),
        w(E("WALG_CONFIG_PATH"), "WAL-G master's; v3.0.8 ignores it too (use --config)"),
    ]},
    Section { title: "Settings of storage back-ends wal-rus does not have", rows: &[
        w(S("OSS_ACCESS_KEY_ID"), OSS_ONLY).on(Kind::Oss),
        w(S("OSS_ACCESS_KEY_SECRET"), OSS_ONLY).on(Kind::Oss),
        w(S("OSS_SESSION_TOKEN"), OSS_ONLY).on(Kind::Oss),
        w(S("OSS_ENDPOINT"), OSS_ONLY).on(Kind::Oss),
        w(S("OSS_REGION"), OSS_ONLY).on(Kind::Oss),
        w(S("OSS_ROLE_ARN"), OSS_ONLY).on(Kind::Oss),
        w(S("OSS_ROLE_SESSION_NAME"), OSS_ONLY).on(Kind::Oss),
        w(S("OSS_SKIP_VALIDATION"), OSS_ONLY).on(Kind::Oss),
        w(S("OSS_MAX_RETRIES"), OSS_ONLY).on(Kind::Oss),
        w(S("OSS_CONNECT_TIMEOUT"), OSS_ONLY).on(Kind::Oss),
        w(S("OSS_UPLOAD_PART_SIZE"), OSS_ONLY).on(Kind::Oss),
        w(S("OSS_COPY_PART_SIZE"), OSS_ONLY).on(Kind::Oss),
        w(S("OS_USERNAME"), SWIFT_ONLY).on(Kind::Swift),
        w(S("OS_PASSWORD"), SWIFT_ONLY).on(Kind::Swift),
        w(S("OS_AUTH_URL"), SWIFT_ONLY).on(Kind::Swift),
        w(S("OS_TENANT_NAME"), SWIFT_ONLY).on(Kind::Swift),
        w(S("OS_REGION_NAME"), SWIFT_ONLY).on(Kind::Swift),
        w(S("SSH_PORT"), SSH_ONLY).on(Kind::Ssh),
        w(S("SSH_PASSWORD"), SSH_ONLY).on(Kind::Ssh),
        w(S("SSH_USERNAME"), SSH_ONLY).on(Kind::Ssh),
        w(S("SSH_PRIVATE_KEY_PATH"), SSH_ONLY).on(Kind::Ssh),
    ]},
    Section { title: "Added by wal-rus", rows: &[
        h(E("WALRUS_CONNECT_TIMEOUT"), "seconds to connect to S3, GCS or Azure; no request can hang").on(Kind::S3).also(Kind::Gs).also(Kind::Az).def("10"),
        h(E("WALRUS_IO_TIMEOUT"), "seconds a read or write to S3, GCS or Azure may stall").on(Kind::S3).also(Kind::Gs).also(Kind::Az).def("60"),
    ]},
];

/// Every row, in table order.
pub fn rows() -> impl Iterator<Item = &'static Row> {
    TABLE.iter().flat_map(|s| s.rows.iter())
}

/// The row that has `name` among its spellings.
pub fn find(name: &str) -> Option<&'static Row> {
    rows().find(|r| r.spell.names().iter().any(|n| n == name))
}
