//! The fields of the server's ErrorResponse and NoticeResponse, shared by login and queries.

use crate::pg::error::PgError;
use fallible_iterator::FallibleIterator;
use postgres_protocol::message::backend::ErrorFields;

/// The fields of an ErrorResponse or NoticeResponse.
pub(super) struct ServerMessage {
    pub(super) severity: String,
    pub(super) code: String,
    pub(super) message: String,
    detail: Option<String>,
    hint: Option<String>,
}

impl ServerMessage {
    pub(super) fn parse(mut fields: ErrorFields<'_>) -> Result<ServerMessage, PgError> {
        let mut m = ServerMessage {
            severity: String::new(),
            code: String::new(),
            message: String::new(),
            detail: None,
            hint: None,
        };
        let mut localized_severity = String::new();
        while let Some(field) = fields
            .next()
            .map_err(|e| PgError::Protocol(format!("malformed error message from server: {e}")))?
        {
            let value = String::from_utf8_lossy(field.value_bytes()).into_owned();
            match field.type_() {
                b'V' => m.severity = value,
                b'S' => localized_severity = value,
                b'C' => m.code = value,
                b'M' => m.message = value,
                b'D' => m.detail = Some(value),
                b'H' => m.hint = Some(value),
                _ => {}
            }
        }
        if m.severity.is_empty() {
            // Servers before 9.6 send only the localized severity.
            m.severity = localized_severity;
        }
        Ok(m)
    }

    pub(super) fn into_error(self) -> PgError {
        PgError::Server {
            severity: self.severity,
            code: self.code,
            message: self.message,
            detail: self.detail,
            hint: self.hint,
        }
    }

    /// During login, class 28 (invalid authorization) is an authentication failure.
    pub(super) fn into_login_error(self, user: &str) -> PgError {
        if self.code.starts_with("28") {
            let code = self.code.clone();
            PgError::Auth {
                user: user.to_string(),
                code: Some(code),
                message: self.into_error().to_string(),
            }
        } else {
            self.into_error()
        }
    }
}
