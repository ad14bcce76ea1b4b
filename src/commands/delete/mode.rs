//! The `delete` command line, read into a [`Mode`] and checked as WAL-G's argument
//! validators check it, before anything touches storage.

use crate::error::Error;
use crate::format::go_json::PreciseTime;
pub use crate::repo::retention::{Modifier, Point};

/// Which folders `garbage` cleans.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GarbageScope {
    /// `wal_005/` and `basebackups_005/`.
    Both,
    /// `ARCHIVES`: `wal_005/` only.
    Archives,
    /// `BACKUPS`: `basebackups_005/` only.
    Backups,
}

/// A parsed `delete` command line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Mode {
    /// `retain [FULL|FIND_FULL] N [--after X]`.
    Retain {
        /// Counting rule.
        modifier: Modifier,
        /// N.
        count: usize,
        /// `--after`.
        after: Option<Point>,
    },
    /// `before [FIND_FULL] X`.
    Before {
        /// `FIND_FULL` given.
        find_full: bool,
        /// X.
        point: Point,
    },
    /// `everything [FORCE]`.
    Everything {
        /// `FORCE` given.
        force: bool,
    },
    /// `target [FIND_FULL] NAME`.
    Target {
        /// `FIND_FULL` given.
        find_full: bool,
        /// NAME.
        name: String,
    },
    /// `garbage [ARCHIVES|BACKUPS]`.
    Garbage(GarbageScope),
}

const USAGE: &str = "usage: delete retain [FULL|FIND_FULL] N [--after NAME|TIME] | before [FIND_FULL] NAME|TIME | \
                     everything [FORCE] | target [FIND_FULL] NAME | garbage [ARCHIVES|BACKUPS]";

fn usage(msg: impl Into<String>) -> Error {
    Error::Usage(format!("{}; {USAGE}", msg.into()))
}

/// `NAME|TIME`: RFC 3339 text is a time (which must not lie in the future), anything else a
/// name prefix.
fn parse_point(text: &str, now: PreciseTime, future_msg: &str) -> Result<Point, Error> {
    match PreciseTime::parse(text) {
        Some(t) if t > now => Err(Error::Usage(future_msg.into())),
        Some(t) => Ok(Point::Time(t)),
        None => Ok(Point::Name(text.to_string())),
    }
}

/// Parses the mode words, checking them as WAL-G's argument validators do, before anything
/// touches storage.
pub fn parse_mode(args: &[String], after: Option<&str>, now: PreciseTime) -> Result<Mode, Error> {
    let Some((mode, rest)) = args.split_first() else {
        return Err(usage("no mode given"));
    };
    let rest: Vec<&str> = rest.iter().map(String::as_str).collect();
    if after.is_some() && mode != "retain" {
        return Err(usage("--after is only valid with retain"));
    }
    match mode.as_str() {
        "retain" => parse_retain(&rest, after, now),
        "before" => parse_before(&rest, now),
        "everything" => match rest.as_slice() {
            [] => Ok(Mode::Everything { force: false }),
            ["FORCE"] => Ok(Mode::Everything { force: true }),
            _ => Err(usage("everything takes no argument or FORCE")),
        },
        "target" => match rest.as_slice() {
            [name] if *name != "FIND_FULL" => Ok(Mode::Target {
                find_full: false,
                name: name.to_string(),
            }),
            ["FIND_FULL", name] => Ok(Mode::Target {
                find_full: true,
                name: name.to_string(),
            }),
            _ => Err(usage(
                "target takes a backup name, optionally after FIND_FULL",
            )),
        },
        "garbage" => match rest.as_slice() {
            [] => Ok(Mode::Garbage(GarbageScope::Both)),
            ["ARCHIVES"] => Ok(Mode::Garbage(GarbageScope::Archives)),
            ["BACKUPS"] => Ok(Mode::Garbage(GarbageScope::Backups)),
            _ => Err(usage("garbage takes no argument, ARCHIVES or BACKUPS")),
        },
        other => Err(usage(format!("unknown mode '{other}'"))),
    }
}

/// `retain [FULL|FIND_FULL] N [--after X]`, the words after `retain`.
fn parse_retain(rest: &[&str], after: Option<&str>, now: PreciseTime) -> Result<Mode, Error> {
    let (modifier, n) = match rest {
        [n] => (Modifier::None, *n),
        ["FULL", n] => (Modifier::Full, *n),
        ["FIND_FULL", n] => (Modifier::FindFull, *n),
        [_, _] => {
            return Err(usage(
                "expected to get one of modifiers: [FULL FIND_FULL] as first argument",
            ));
        }
        _ => return Err(usage("retain takes one or two arguments")),
    };
    let count: i64 = n.parse().map_err(|_| {
        usage(format!(
            "expected to get a number as retention count, but got: '{n}'"
        ))
    })?;
    if count <= 0 {
        return Err(Error::Usage(
            "cannot retain less than one backup. Check out delete everything".into(),
        ));
    }
    let after = after
        .map(|a| parse_point(a, now, "cannot delete retain future date"))
        .transpose()?;
    Ok(Mode::Retain {
        modifier,
        count: count as usize,
        after,
    })
}

/// `before [FIND_FULL] X`, the words after `before`.
fn parse_before(rest: &[&str], now: PreciseTime) -> Result<Mode, Error> {
    let (find_full, x) = match rest {
        [x] => (false, *x),
        ["FIND_FULL", x] => (true, *x),
        ["FULL", _] => {
            return Err(Error::Usage(
                "unsupported modifier for delete before command".into(),
            ));
        }
        [_, _] => {
            return Err(usage(
                "expected to get one of modifiers: [FIND_FULL] as first argument",
            ));
        }
        _ => return Err(usage("before takes one or two arguments")),
    };
    Ok(Mode::Before {
        find_full,
        point: parse_point(x, now, "cannot delete before future date")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> PreciseTime {
        PreciseTime::parse("2030-01-01T00:00:00Z").unwrap()
    }

    fn args(s: &str) -> Vec<String> {
        s.split_whitespace().map(String::from).collect()
    }

    #[test]
    fn modes_parse_like_walg_validators() {
        assert_eq!(
            parse_mode(&args("retain 3"), None, now()).unwrap(),
            Mode::Retain {
                modifier: Modifier::None,
                count: 3,
                after: None
            }
        );
        assert_eq!(
            parse_mode(&args("retain FIND_FULL 2"), Some("base_0000"), now()).unwrap(),
            Mode::Retain {
                modifier: Modifier::FindFull,
                count: 2,
                after: Some(Point::Name("base_0000".into()))
            }
        );
        assert!(matches!(
            parse_mode(&args("retain FULL 1"), Some("2024-01-01T00:00:00Z"), now()).unwrap(),
            Mode::Retain {
                after: Some(Point::Time(_)),
                ..
            }
        ));
        assert_eq!(
            parse_mode(&args("before FIND_FULL base_1"), None, now()).unwrap(),
            Mode::Before {
                find_full: true,
                point: Point::Name("base_1".into())
            }
        );
        assert_eq!(
            parse_mode(&args("everything FORCE"), None, now()).unwrap(),
            Mode::Everything { force: true }
        );
        assert_eq!(
            parse_mode(&args("target FIND_FULL b"), None, now()).unwrap(),
            Mode::Target {
                find_full: true,
                name: "b".into()
            }
        );
        assert_eq!(
            parse_mode(&args("garbage ARCHIVES"), None, now()).unwrap(),
            Mode::Garbage(GarbageScope::Archives)
        );
        for (bad, why) in [
            ("", "no mode"),
            ("retain 0", "less than one"),
            ("retain x", "number"),
            ("retain FOO 2", "modifiers"),
            ("before FULL b", "unsupported modifier"),
            ("before 2031-01-01T00:00:00Z", "future"),
            ("everything NOW", "FORCE"),
            ("target", "target takes"),
            ("garbage ALL", "garbage takes"),
            ("purge", "unknown mode"),
        ] {
            let err = parse_mode(&args(bad), None, now()).unwrap_err().to_string();
            assert!(err.contains(why), "{bad}: {err}");
        }
        assert!(parse_mode(&args("before b"), Some("x"), now()).is_err());
        assert!(
            parse_mode(&args("retain 1"), Some("2031-01-01T00:00:00Z"), now())
                .unwrap_err()
                .to_string()
                .contains("future")
        );
    }
}
