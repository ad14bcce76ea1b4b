//! Login: the StartupMessage, authentication (cleartext, md5, SCRAM-SHA-256 with channel
//! binding) and the parameters the server reports before it is ready.
//!
//! Separate from the query path because its failures mean something else (a refused login
//! is an `Auth` error, and the server is hung up on rather than told goodbye).

use super::server_message::ServerMessage;
use super::transport::Transport;
use super::{Connection, Replication, parse_server_version};
use crate::pg::error::PgError;
use crate::pg::params::ConnParams;
use crate::pg::tls;
use fallible_iterator::FallibleIterator;
use postgres_protocol::authentication::{md5_hash, sasl};
use postgres_protocol::message::backend::{self, Message};
use postgres_protocol::message::frontend;

impl Connection {
    /// StartupMessage, authentication, then the server's parameters up to ReadyForQuery.
    pub(super) fn login(
        &mut self,
        p: &ConnParams,
        repl: Option<Replication>,
    ) -> Result<(), PgError> {
        let mut startup = vec![
            ("user", p.user.as_str()),
            ("database", p.database.as_str()),
            ("application_name", p.application_name.as_str()),
            // Rows are returned as Rust strings, so ask for UTF-8 whatever the database uses.
            ("client_encoding", "UTF8"),
        ];
        if let Some(mode) = repl {
            startup.push(("replication", mode.startup_value()));
        }
        frontend::startup_message(startup, &mut self.out).map_err(|_| {
            PgError::config(
                "PGUSER",
                "user, database and application name must not contain NUL bytes",
            )
        })?;
        self.send()?;
        self.authenticate(p)?;
        self.await_ready()?;
        self.server_version_num = self
            .parameter("server_version")
            .and_then(parse_server_version)
            .unwrap_or(0);
        Ok(())
    }

    /// Answers the server's authentication requests up to AuthenticationOk.
    fn authenticate(&mut self, p: &ConnParams) -> Result<(), PgError> {
        let mut scram: Option<sasl::ScramSha256> = None;
        loop {
            match self.recv()? {
                Message::AuthenticationOk => return Ok(()),
                Message::AuthenticationCleartextPassword => {
                    let password = self.password(p, "password")?;
                    self.send_password(password.as_bytes())?;
                }
                Message::AuthenticationMd5Password(body) => {
                    let password = self.password(p, "md5")?;
                    let hash = md5_hash(p.user.as_bytes(), password.as_bytes(), body.salt());
                    self.send_password(hash.as_bytes())?;
                }
                Message::AuthenticationSasl(body) => scram = Some(self.start_scram(p, &body)?),
                Message::AuthenticationSaslContinue(body) => {
                    let state = scram.as_mut().ok_or_else(|| {
                        self.protocol("SASL continuation without a SASL start".into())
                    })?;
                    state
                        .update(body.data())
                        .map_err(|e| self.auth_failure(format!("SCRAM exchange failed: {e}")))?;
                    frontend::sasl_response(state.message(), &mut self.out)
                        .map_err(|e| self.protocol(format!("encoding SASL response: {e}")))?;
                    self.send()?;
                }
                Message::AuthenticationSaslFinal(body) => {
                    let state = scram
                        .as_mut()
                        .ok_or_else(|| self.protocol("SASL final without a SASL start".into()))?;
                    // This is where a server that does not know the password is caught.
                    state.finish(body.data()).map_err(|e| {
                        self.auth_failure(format!("the server's SCRAM signature is invalid ({e}); it may not be the real server"))
                    })?;
                }
                Message::ErrorResponse(body) => return Err(self.login_error(&body)),
                Message::NoticeResponse(_) => {}
                Message::AuthenticationKerberosV5 => {
                    return Err(self.unsupported_auth("Kerberos V5"));
                }
                Message::AuthenticationGss | Message::AuthenticationGssContinue(_) => {
                    return Err(self.unsupported_auth("GSSAPI"));
                }
                Message::AuthenticationSspi => return Err(self.unsupported_auth("SSPI")),
                Message::AuthenticationScmCredential => {
                    return Err(self.unsupported_auth("SCM credential"));
                }
                _ => return Err(self.protocol("unexpected message during authentication".into())),
            }
        }
    }

    /// After AuthenticationOk: the server's parameters and key data up to ReadyForQuery.
    fn await_ready(&mut self) -> Result<(), PgError> {
        loop {
            match self.recv()? {
                Message::ParameterStatus(body) => self.store_parameter(&body)?,
                Message::BackendKeyData(body) => self.backend_pid = body.process_id(),
                Message::NoticeResponse(_) => {}
                Message::ErrorResponse(body) => return Err(self.login_error(&body)),
                Message::ReadyForQuery(body) => {
                    self.transaction_status = body.status();
                    return Ok(());
                }
                _ => return Err(self.protocol("unexpected message after authentication".into())),
            }
        }
    }

    /// A cleartext password or md5 hash, as the server asked.
    fn send_password(&mut self, secret: &[u8]) -> Result<(), PgError> {
        frontend::password_message(secret, &mut self.out).map_err(|_| self.nul_in_password())?;
        self.send()
    }

    /// Picks a SCRAM mechanism from the server's list and sends the first message.
    fn start_scram(
        &mut self,
        p: &ConnParams,
        body: &backend::AuthenticationSaslBody,
    ) -> Result<sasl::ScramSha256, PgError> {
        let mut mechanisms = Vec::new();
        let mut it = body.mechanisms();
        while let Some(m) = it
            .next()
            .map_err(|e| self.protocol(format!("bad SASL mechanism list: {e}")))?
        {
            mechanisms.push(m.to_string());
        }
        let password = self.password(p, "SCRAM-SHA-256")?;
        let (mechanism, binding) = self.choose_scram(&mechanisms)?;
        let state = sasl::ScramSha256::new(password.as_bytes(), binding);
        frontend::sasl_initial_response(mechanism, state.message(), &mut self.out)
            .map_err(|e| self.protocol(format!("encoding SASL response: {e}")))?;
        self.send()?;
        Ok(state)
    }

    /// The server refused the login; the connection is done.
    fn login_error(&mut self, body: &backend::ErrorResponseBody) -> PgError {
        let user = self.user.clone();
        match ServerMessage::parse(body.fields()) {
            Ok(m) => self.mark(m.into_login_error(&user)),
            Err(e) => e,
        }
    }

    /// SCRAM mechanism and channel binding: bind to the TLS certificate when we can, so a
    /// man in the middle (possible under `require`, which checks no certificate) cannot
    /// relay the login.
    fn choose_scram(
        &self,
        offered: &[String],
    ) -> Result<(&'static str, sasl::ChannelBinding), PgError> {
        let cert_hash = match &self.stream {
            Transport::Tls(s) => s
                .conn
                .peer_certificates()
                .and_then(|c| c.first())
                .and_then(|c| tls::end_point_hash(c)),
            _ => None,
        };
        let plus = offered.iter().any(|m| m == sasl::SCRAM_SHA_256_PLUS);
        let plain = offered.iter().any(|m| m == sasl::SCRAM_SHA_256);
        match cert_hash {
            Some(hash) if plus => Ok((
                sasl::SCRAM_SHA_256_PLUS,
                sasl::ChannelBinding::tls_server_end_point(hash),
            )),
            // "y": we could bind but the server did not offer it; it will refuse if it did.
            Some(_) if plain => Ok((sasl::SCRAM_SHA_256, sasl::ChannelBinding::unrequested())),
            None if plain => Ok((sasl::SCRAM_SHA_256, sasl::ChannelBinding::unsupported())),
            _ => Err(self.auth_failure(format!(
                "server offers only SASL mechanisms this client does not support: {}",
                offered.join(", ")
            ))),
        }
    }

    fn password(&self, p: &ConnParams, method: &str) -> Result<String, PgError> {
        match p.password.as_deref() {
            Some(pw) if !pw.is_empty() => Ok(pw.to_string()),
            _ => Err(PgError::Auth {
                user: self.user.clone(),
                code: None,
                message: format!(
                    "server at {} requires {method} authentication for user \"{}\" but no password is set (PGPASSWORD or PGPASSFILE)",
                    self.endpoint, self.user
                ),
            }),
        }
    }

    fn nul_in_password(&self) -> PgError {
        PgError::Auth {
            user: self.user.clone(),
            code: None,
            message: "the password contains a NUL byte".into(),
        }
    }

    fn auth_failure(&self, message: String) -> PgError {
        PgError::Auth {
            user: self.user.clone(),
            code: None,
            message: format!(
                "authenticating as \"{}\" at {}: {message}",
                self.user, self.endpoint
            ),
        }
    }

    fn unsupported_auth(&self, method: &str) -> PgError {
        self.auth_failure(format!(
            "server requested {method} authentication, which this client does not support"
        ))
    }

    pub(super) fn store_parameter(
        &mut self,
        body: &backend::ParameterStatusBody,
    ) -> Result<(), PgError> {
        let name = body
            .name()
            .map_err(|e| self.protocol(format!("bad ParameterStatus: {e}")))?;
        let value = body
            .value()
            .map_err(|e| self.protocol(format!("bad ParameterStatus: {e}")))?;
        self.parameters.insert(name.to_string(), value.to_string());
        Ok(())
    }
}
