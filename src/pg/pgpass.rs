//! The `~/.pgpass` password file, matched exactly as libpq does.
//!
//! Operators already keep backup credentials there for psql and WAL-G; reading it the same
//! way (first matching line wins, `*` wildcards, `\:` and `\\` escapes, the default socket
//! directory counting as `localhost`, group/world-readable files ignored) means no second
//! copy of the password in wal-rus settings.

use super::error::PgError;
use std::path::Path;

/// The socket directory libpq on Debian was built with; it matches `localhost` in .pgpass.
pub const DEFAULT_SOCKET_DIR: &str = "/var/run/postgresql";

/// One field of a .pgpass line: its de-escaped text and whether it was a bare `*`.
struct Field {
    text: String,
    wildcard: bool,
}

impl Field {
    fn matches(&self, value: &str) -> bool {
        self.wildcard || self.text == value
    }
}

/// Splits off one `:`-terminated field from `rest`, de-escaping `\x` to `x`.
/// Returns `None` when the line ends before the field's closing colon.
fn take_field(rest: &mut std::str::Chars<'_>) -> Option<Field> {
    let mut text = String::new();
    let mut escaped_any = false;
    loop {
        match rest.next()? {
            '\\' => {
                escaped_any = true;
                // A trailing backslash stands for itself, as in libpq.
                text.push(rest.next().unwrap_or('\\'));
            }
            ':' => break,
            c => text.push(c),
        }
    }
    let wildcard = !escaped_any && text == "*";
    Some(Field { text, wildcard })
}

/// The password field: everything up to the next unescaped colon (libpq ignores the rest).
fn take_password(rest: &mut std::str::Chars<'_>) -> String {
    let mut text = String::new();
    while let Some(c) = rest.next() {
        match c {
            '\\' => text.push(rest.next().unwrap_or('\\')),
            ':' => break,
            c => text.push(c),
        }
    }
    text
}

/// The host name a connection is matched under: libpq treats its default socket directory
/// (and an empty host) as `localhost`; other socket directories match literally.
pub fn match_host(host: &str) -> &str {
    if host.is_empty() || host.trim_end_matches('/') == DEFAULT_SOCKET_DIR {
        "localhost"
    } else {
        host
    }
}

/// The password of the first line of `contents` that matches host, port, database and user.
///
/// `host` is matched as given (callers use [`match_host`] first); an empty password on the
/// matching line counts as none, as in libpq.
pub fn find_password(
    contents: &str,
    host: &str,
    port: &str,
    database: &str,
    user: &str,
) -> Option<String> {
    for line in contents.lines() {
        let line = line.trim_end_matches('\r');
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let mut rest = line.chars();
        let wanted = [host, port, database, user];
        let mut matched = true;
        for value in wanted {
            match take_field(&mut rest) {
                Some(field) if field.matches(value) => {}
                _ => {
                    matched = false;
                    break;
                }
            }
        }
        if matched {
            let password = take_password(&mut rest);
            return (!password.is_empty()).then_some(password);
        }
    }
    None
}

/// Reads the password file at `path` and looks the connection up in it.
///
/// A missing file is no error (it is optional). Like libpq, a file that is not a plain file
/// or that group or others may access is ignored with a warning, because a readable
/// password file is a leak the operator should fix rather than a source to trust.
pub fn password_from_file(
    path: &Path,
    host: &str,
    port: u16,
    database: &str,
    user: &str,
) -> Result<Option<String>, PgError> {
    use std::os::unix::fs::PermissionsExt;
    let meta = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(PgError::config(
                "PGPASSFILE",
                format!(
                    "cannot read {}: {}",
                    path.display(),
                    super::error::io_text(&e)
                ),
            ));
        }
    };
    if !meta.is_file() {
        crate::warn!(
            "password file {} is not a plain file; ignoring it",
            path.display()
        );
        return Ok(None);
    }
    if meta.permissions().mode() & 0o077 != 0 {
        crate::warn!(
            "password file {} has group or world access; permissions should be u=rw (0600) or less; ignoring it",
            path.display()
        );
        return Ok(None);
    }
    let bytes = std::fs::read(path).map_err(|e| {
        PgError::config(
            "PGPASSFILE",
            format!(
                "cannot read {}: {}",
                path.display(),
                super::error::io_text(&e)
            ),
        )
    })?;
    // Never quote the file's content: it is full of passwords.
    let contents = String::from_utf8_lossy(&bytes);
    Ok(find_password(
        &contents,
        match_host(host),
        &port.to_string(),
        database,
        user,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_match_wins() {
        let file = "\
# comment line:*:*:*:nope
db1.example:5432:app:alice:first
*:*:*:alice:second
*:*:*:*:fallback
";
        assert_eq!(
            find_password(file, "db1.example", "5432", "app", "alice").as_deref(),
            Some("first")
        );
        assert_eq!(
            find_password(file, "db2.example", "5432", "app", "alice").as_deref(),
            Some("second")
        );
        assert_eq!(
            find_password(file, "db1.example", "5433", "app", "alice").as_deref(),
            Some("second")
        );
        assert_eq!(
            find_password(file, "db1.example", "5432", "app", "bob").as_deref(),
            Some("fallback")
        );
    }

    #[test]
    fn wildcards_are_whole_fields_only() {
        let file = "local*:*:*:*:prefix\n\\*:*:*:*:literal-star\n";
        assert_eq!(find_password(file, "localhost", "5432", "d", "u"), None);
        assert_eq!(
            find_password(file, "local*", "5432", "d", "u").as_deref(),
            Some("prefix")
        );
        assert_eq!(
            find_password(file, "*", "5432", "d", "u").as_deref(),
            Some("literal-star")
        );
        assert_eq!(find_password(file, "x", "5432", "d", "u"), None);
    }

    #[test]
    fn escapes_in_fields_and_password() {
        let file = "h:5432:my\\:db:us\\\\er:pa\\:ss\\\\word:ignored\n";
        assert_eq!(
            find_password(file, "h", "5432", "my:db", "us\\er").as_deref(),
            Some("pa:ss\\word")
        );
        assert_eq!(find_password(file, "h", "5432", "my", "us\\er"), None);
    }

    #[test]
    fn short_lines_blank_lines_crlf_and_empty_passwords() {
        let file = "\r\nh:5432:d\nh:5432:d:u:\nh:*:d:u:crlf\r\n";
        // The empty password line matches first and means "no password", like libpq.
        assert_eq!(find_password(file, "h", "5432", "d", "u"), None);
        let file = "h:*:d:u:crlf\r\n";
        assert_eq!(
            find_password(file, "h", "1", "d", "u").as_deref(),
            Some("crlf")
        );
    }

    #[test]
    fn default_socket_dir_matches_localhost() {
        assert_eq!(match_host("/var/run/postgresql"), "localhost");
        assert_eq!(match_host("/var/run/postgresql/"), "localhost");
        assert_eq!(match_host(""), "localhost");
        assert_eq!(match_host("/tmp"), "/tmp");
        assert_eq!(match_host("db.example"), "db.example");
    }

    #[test]
    fn file_permissions_are_checked() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pgpass");
        std::fs::write(&path, "*:*:*:*:secret\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(
            password_from_file(&path, "h", 5432, "d", "u")
                .unwrap()
                .as_deref(),
            Some("secret")
        );
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert_eq!(
            password_from_file(&path, "h", 5432, "d", "u").unwrap(),
            None
        );
        assert_eq!(
            password_from_file(&dir.path().join("missing"), "h", 5432, "d", "u").unwrap(),
            None
        );
    }
}
