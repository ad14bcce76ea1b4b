//! UTC instants and their textual forms, without a date-time crate.
//!
//! SigV4 needs `YYYYMMDDTHHMMSSZ`, S3 listings carry ISO 8601 `LastModified`, and logs want a
//! readable stamp; all three are simple functions of seconds since the epoch.

use std::time::{SystemTime, UNIX_EPOCH};

/// Go's zero `time.Time` as JSON text, written for a time that was never set.
pub const GO_ZERO_TIME: &str = "0001-01-01T00:00:00Z";

/// A duration as Go prints one, roughly: `500ms`, `5s`, `1.5s`, `2m0s`, `1h30m0s`.
pub fn duration_text(d: std::time::Duration) -> String {
    let ms = d.as_millis();
    if ms < 1000 {
        return format!("{ms}ms");
    }
    let secs = d.as_secs();
    let frac = if ms.is_multiple_of(1000) {
        String::new()
    } else {
        format!(".{:03}", ms % 1000)
            .trim_end_matches('0')
            .to_string()
    };
    let (h, m, s) = (secs / 3600, secs / 60 % 60, secs % 60);
    match (h, m) {
        (0, 0) => format!("{s}{frac}s"),
        (0, _) => format!("{m}m{s}{frac}s"),
        _ => format!("{h}h{m}m{s}{frac}s"),
    }
}

/// A UTC instant in whole seconds since the Unix epoch.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct UtcTime(pub i64);

/// Days since 1970-01-01 to (year, month, day), Howard Hinnant's civil-from-days algorithm.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// (year, month, day) to days since 1970-01-01; the inverse of `civil_from_days`.
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let m = i64::from(month);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

impl UtcTime {
    /// The current time from the system clock.
    pub fn now() -> UtcTime {
        let secs = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0);
        UtcTime(secs)
    }

    /// From a `SystemTime` (file modification times).
    pub fn from_system(t: SystemTime) -> UtcTime {
        match t.duration_since(UNIX_EPOCH) {
            Ok(d) => UtcTime(d.as_secs() as i64),
            Err(e) => UtcTime(-(e.duration().as_secs() as i64)),
        }
    }

    fn parts(&self) -> (i64, u32, u32, u32, u32, u32) {
        let days = self.0.div_euclid(86_400);
        let secs = self.0.rem_euclid(86_400);
        let (y, mo, d) = civil_from_days(days);
        (
            y,
            mo,
            d,
            (secs / 3600) as u32,
            (secs / 60 % 60) as u32,
            (secs % 60) as u32,
        )
    }

    /// `YYYYMMDDTHHMMSSZ`, the SigV4 `x-amz-date` form.
    pub fn amz_date(&self) -> String {
        let (y, mo, d, h, mi, s) = self.parts();
        format!("{y:04}{mo:02}{d:02}T{h:02}{mi:02}{s:02}Z")
    }

    /// `YYYYMMDD`, the SigV4 credential-scope date.
    pub fn date(&self) -> String {
        let (y, mo, d, ..) = self.parts();
        format!("{y:04}{mo:02}{d:02}")
    }

    /// `YYYY-MM-DDTHH:MM:SSZ` (RFC 3339).
    pub fn rfc3339(&self) -> String {
        let (y, mo, d, h, mi, s) = self.parts();
        format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}Z")
    }

    /// RFC 1123 (`Fri, 04 Dec 2026 03:25:05 GMT`), the form of HTTP dates and Azure's
    /// `x-ms-date`.
    pub fn http_date(&self) -> String {
        const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
        const MONTHS: [&str; 12] = [
            "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
        ];
        let (y, mo, d, h, mi, s) = self.parts();
        // 1970-01-01 was a Thursday.
        let weekday = DAYS[self.0.div_euclid(86_400).rem_euclid(7) as usize];
        let month = MONTHS[mo as usize - 1];
        format!("{weekday}, {d:02} {month} {y:04} {h:02}:{mi:02}:{s:02} GMT")
    }

    /// `YYYY/MM/DD HH:MM:SS`, the stamp WAL-G puts before its log lines.
    pub fn log_stamp(&self) -> String {
        let (y, mo, d, h, mi, s) = self.parts();
        format!("{y:04}/{mo:02}/{d:02} {h:02}:{mi:02}:{s:02}")
    }

    /// Parses `YYYY-MM-DDTHH:MM:SS[.fff][Z|+HH:MM]` (S3 `LastModified`); fractions are dropped.
    pub fn parse_rfc3339(s: &str) -> Option<UtcTime> {
        let b = s.as_bytes();
        if b.len() < 19 || b[4] != b'-' || b[7] != b'-' || (b[10] != b'T' && b[10] != b' ') {
            return None;
        }
        let num = |r: std::ops::Range<usize>| -> Option<i64> { s.get(r)?.parse().ok() };
        let (y, mo, d) = (num(0..4)?, num(5..7)? as u32, num(8..10)? as u32);
        let (h, mi, sec) = (num(11..13)?, num(14..16)?, num(17..19)?);
        if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || sec > 60 {
            return None;
        }
        let mut rest = &s[19..];
        if let Some(frac) = rest.strip_prefix('.') {
            let digits = frac.bytes().take_while(u8::is_ascii_digit).count();
            rest = &frac[digits..];
        }
        let offset = match rest {
            "" | "Z" | "z" => 0,
            _ if rest.len() == 6 && (rest.starts_with('+') || rest.starts_with('-')) => {
                let oh: i64 = rest[1..3].parse().ok()?;
                let om: i64 = rest[4..6].parse().ok()?;
                let off = oh * 3600 + om * 60;
                if rest.starts_with('-') { -off } else { off }
            }
            _ => return None,
        };
        Some(UtcTime(
            days_from_civil(y, mo, d) * 86_400 + h * 3600 + mi * 60 + sec - offset,
        ))
    }
}

/// An instant with nanosecond precision, as Go's `time.Time` JSON text carries it.
///
/// Ordering is chronological, so parsed backup times sort correctly whatever zone offset
/// their text carried.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PreciseTime {
    /// Seconds since the Unix epoch (negative before 1970).
    pub secs: i64,
    /// Nanoseconds within the second, `0..1_000_000_000`.
    pub nanos: u32,
}

impl PreciseTime {
    /// 1970-01-01T00:00:00Z, for a time the storage did not give.
    pub const EPOCH: PreciseTime = PreciseTime { secs: 0, nanos: 0 };

    /// From a `SystemTime`, keeping nanoseconds.
    pub fn from_system(t: SystemTime) -> PreciseTime {
        match t.duration_since(UNIX_EPOCH) {
            Ok(d) => PreciseTime {
                secs: d.as_secs() as i64,
                nanos: d.subsec_nanos(),
            },
            Err(e) => {
                let d = e.duration();
                let (secs, nanos) = (d.as_secs() as i64, d.subsec_nanos());
                if nanos == 0 {
                    PreciseTime {
                        secs: -secs,
                        nanos: 0,
                    }
                } else {
                    PreciseTime {
                        secs: -secs - 1,
                        nanos: 1_000_000_000 - nanos,
                    }
                }
            }
        }
    }

    /// A whole second.
    pub fn from_utc(t: UtcTime) -> PreciseTime {
        PreciseTime {
            secs: t.0,
            nanos: 0,
        }
    }

    /// The whole second this instant falls in.
    pub fn utc_seconds(&self) -> UtcTime {
        UtcTime(self.secs)
    }

    /// Rounded up to a whole microsecond, as WAL-G stores backup start and finish times.
    pub fn ceil_micros(self) -> PreciseTime {
        let rem = self.nanos % 1000;
        if rem == 0 {
            return self;
        }
        let nanos = self.nanos - rem + 1000;
        if nanos >= 1_000_000_000 {
            PreciseTime {
                secs: self.secs + 1,
                nanos: nanos - 1_000_000_000,
            }
        } else {
            PreciseTime {
                secs: self.secs,
                nanos,
            }
        }
    }

    /// Go's `time.Time` JSON text in UTC (`RFC3339Nano`): the fraction loses trailing zeros and
    /// disappears when zero.
    pub fn to_rfc3339_utc(&self) -> String {
        let base = UtcTime(self.secs).rfc3339();
        let stem = base.strip_suffix('Z').unwrap_or(&base);
        if self.nanos == 0 {
            return format!("{stem}Z");
        }
        let frac = format!("{:09}", self.nanos);
        format!("{stem}.{}Z", frac.trim_end_matches('0'))
    }

    /// Parses RFC 3339 text as Go's `time.Time` JSON decoding accepts it: `T` separator,
    /// optional fraction of up to nine digits, zone `Z` or `±hh:mm`. `None` for anything else.
    pub fn parse(s: &str) -> Option<PreciseTime> {
        let b = s.as_bytes();
        // ASCII only, so the byte offsets below are character boundaries.
        if !s.is_ascii() || b.len() < 20 || b[10] != b'T' {
            return None;
        }
        let mut nanos = 0u32;
        let mut rest = &s[19..];
        if let Some(frac) = rest.strip_prefix('.') {
            let digits = frac.bytes().take_while(u8::is_ascii_digit).count();
            if digits == 0 || digits > 9 {
                return None;
            }
            let text = format!("{:0<9}", &frac[..digits]);
            nanos = text.parse().ok()?;
            rest = &frac[digits..];
        }
        if !(rest == "Z"
            || (rest.len() == 6
                && (rest.starts_with('+') || rest.starts_with('-'))
                && rest.as_bytes()[3] == b':'))
        {
            return None;
        }
        // Whole seconds (with the offset applied) come from the shared parser.
        let whole = UtcTime::parse_rfc3339(&format!("{}{}", &s[..19], rest))?;
        Some(PreciseTime {
            secs: whole.0,
            nanos,
        })
    }

    /// Whether this is Go's zero time (what WAL-G reads for a missing time).
    pub fn is_go_zero(&self) -> bool {
        Some(*self) == PreciseTime::parse(GO_ZERO_TIME)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_instants() {
        assert_eq!(UtcTime(0).amz_date(), "19700101T000000Z");
        assert_eq!(UtcTime(0).http_date(), "Thu, 01 Jan 1970 00:00:00 GMT");
        // The date of Microsoft's Shared Key example.
        assert_eq!(
            UtcTime(1_435_361_952).http_date(),
            "Fri, 26 Jun 2015 23:39:12 GMT"
        );
        assert_eq!(UtcTime(1_440_938_160).amz_date(), "20150830T123600Z");
        assert_eq!(UtcTime(1_369_353_600).date(), "20130524");
        assert_eq!(UtcTime(951_868_800).rfc3339(), "2000-03-01T00:00:00Z");
        assert_eq!(UtcTime(951_782_400).rfc3339(), "2000-02-29T00:00:00Z");
    }

    #[test]
    fn durations_as_go_prints_them() {
        use std::time::Duration;
        assert_eq!(duration_text(Duration::from_millis(500)), "500ms");
        assert_eq!(duration_text(Duration::from_secs(5)), "5s");
        assert_eq!(duration_text(Duration::from_millis(1500)), "1.5s");
        assert_eq!(duration_text(Duration::from_secs(120)), "2m0s");
        assert_eq!(duration_text(Duration::from_secs(5400)), "1h30m0s");
    }

    #[test]
    fn parse_round_trip() {
        for secs in [
            0i64,
            951_782_400,
            1_440_938_160,
            1_795_000_000,
            4_102_444_800,
        ] {
            let t = UtcTime(secs);
            assert_eq!(UtcTime::parse_rfc3339(&t.rfc3339()), Some(t));
        }
        assert_eq!(
            UtcTime::parse_rfc3339("2015-08-30T12:36:00.000Z"),
            Some(UtcTime(1_440_938_160))
        );
        assert_eq!(
            UtcTime::parse_rfc3339("2015-08-30T14:36:00+02:00"),
            Some(UtcTime(1_440_938_160))
        );
        assert_eq!(UtcTime::parse_rfc3339("2015-13-30T12:36:00Z"), None);
        assert_eq!(UtcTime::parse_rfc3339("yesterday"), None);
    }
}
