//! `wal-verify <integrity|timeline>... [--json] [--timeline TLI --lsn X/Y] [--backup-name B]`
//! (walg-compat §10.3): is the archive's WAL enough to recover the cluster to where it is
//! now, and is the archive following the cluster's timeline?
//!
//! Monitoring built for WAL-G reads this report, so its JSON is WAL-G's byte for byte (the
//! checks as members in name order, no newline after it) and the plain form is WAL-G's
//! lines and go-pretty table (WAL-G prints the checks in random order; here they come in the
//! order asked for). The cluster's position comes from PostgreSQL, as WAL-G asks for it,
//! unless `--timeline` and `--lsn` give it. Exit 0 whenever the checks ran, whatever they
//! found; 1 when they could not run.

pub mod integrity;

use super::report::box_table;
use crate::config::Settings;
use crate::error::Error;
use crate::format::go_json::ObjectWriter;
use crate::format::lsn::Lsn;
use crate::format::wal_name::Segment;
use crate::repo::wal_inventory;
use crate::storage::Storage;
use integrity::{Plan, Report, Status, StopAt};

/// What `wal-verify` is asked to do, as given on the command line.
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// The checks, by name (`integrity`, `timeline`; repeats count once).
    pub checks: Vec<String>,
    /// JSON instead of the plain report.
    pub json: bool,
    /// The cluster's timeline, instead of asking PostgreSQL (with `lsn`).
    pub timeline: Option<u32>,
    /// The cluster's current LSN, instead of asking PostgreSQL (with `timeline`).
    pub lsn: Option<String>,
    /// Scan back to this backup instead of the earliest usable one.
    pub backup_name: Option<String>,
}

/// A check `wal-verify` runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Check {
    /// Every segment from the cluster's position back to a backup is stored.
    Integrity,
    /// The cluster's timeline is the archive's highest.
    Timeline,
}

impl Check {
    /// Its name on the command line and in the report.
    pub fn word(self) -> &'static str {
        match self {
            Check::Integrity => "integrity",
            Check::Timeline => "timeline",
        }
    }
}

/// What a check found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The integrity check's report.
    Integrity(Report),
    /// The timeline check's two timelines (0: nothing stored names one).
    Timeline {
        /// The cluster's timeline.
        current: u32,
        /// The highest timeline in the archive.
        highest: u32,
    },
}

impl Outcome {
    /// The check's verdict.
    pub fn status(&self) -> Status {
        match self {
            Outcome::Integrity(r) => r.status,
            Outcome::Timeline { highest: 0, .. } => Status::Warning,
            Outcome::Timeline { current, highest } if current == highest => Status::Ok,
            Outcome::Timeline { .. } => Status::Failure,
        }
    }
}

/// The checks asked for, each once, in the order given.
fn checks(names: &[String]) -> Result<Vec<Check>, Error> {
    if names.is_empty() {
        return Err(Error::Usage(
            "name a check to run: integrity, timeline (or both)".into(),
        ));
    }
    let mut out = Vec::new();
    for name in names {
        let check = match name.as_str() {
            "integrity" => Check::Integrity,
            "timeline" => Check::Timeline,
            other => {
                return Err(Error::Usage(format!(
                    "'{other}' is not a check (integrity, timeline)"
                )));
            }
        };
        if !out.contains(&check) {
            out.push(check);
        }
    }
    Ok(out)
}

/// The position `--timeline` and `--lsn` give: the segment holding the byte before the LSN.
fn given_position(args: &Options, segment_size: u64) -> Result<Option<Segment>, Error> {
    match (args.timeline, &args.lsn) {
        (None, None) => Ok(None),
        (None, Some(_)) => Err(Error::Usage("--lsn needs --timeline too".into())),
        (Some(_), None) => Err(Error::Usage("--timeline needs --lsn too".into())),
        (Some(timeline), Some(text)) => {
            let lsn = Lsn::parse_go_scan(text)
                .ok_or_else(|| Error::Usage(format!("--lsn '{text}' is not an LSN (X/Y)")))?;
            Ok(Some(position(timeline, lsn, segment_size)))
        }
    }
}

/// The segment holding the byte before `lsn` (WAL-G's arithmetic, wrapping at 0).
fn position(timeline: u32, lsn: Lsn, segment_size: u64) -> Segment {
    Segment {
        timeline,
        segno: lsn.0.wrapping_sub(1) / segment_size,
    }
}

/// The cluster's current position, asked as WAL-G asks: the last LSN received on a standby,
/// the current write LSN on a primary, and the timeline of the last checkpoint.
fn query_position(settings: &Settings) -> Result<Segment, Error> {
    let mut conn = super::connect_pg(settings)?;
    let version = conn.server_version_num();
    let sql = if version >= 100_000 {
        "SELECT CASE WHEN pg_is_in_recovery() THEN pg_last_wal_receive_lsn() ELSE pg_current_wal_lsn() END"
    } else {
        "SELECT CASE WHEN pg_is_in_recovery() THEN pg_last_xlog_receive_location() ELSE pg_current_xlog_location() END"
    };
    let row = conn
        .query_one(sql)
        .map_err(|e| Error::pg("getting the current LSN of the cluster", e))?;
    let text = row.first().cloned().flatten().ok_or_else(|| {
        Error::Precondition("the cluster has no current LSN (a standby receiving no WAL)".into())
    })?;
    let lsn = Lsn::parse_go_scan(&text)
        .ok_or_else(|| Error::Precondition(format!("the server's LSN {text:?} does not parse")))?;
    let timeline = if version >= 90_600 {
        let row = conn
            .query_one("select timeline_id, bytes_per_wal_segment from pg_control_checkpoint(), pg_control_init()")
            .map_err(|e| Error::pg("getting the current timeline", e))?;
        let field = |i: usize| row.get(i).cloned().flatten().and_then(|v| v.parse::<u64>().ok());
        if field(1) != Some(settings.wal_segment_size) {
            return Err(Error::Precondition(format!(
                "the server's WAL segments are not of WALG_PG_WAL_SIZE's {} MiB",
                settings.wal_segment_size >> 20
            )));
        }
        field(0).and_then(|t| u32::try_from(t).ok())
    } else {
        let row = conn
            .query_one("SELECT SUBSTR(pg_xlogfile_name(pg_current_xlog_insert_location()), 1, 8) AS timeline")
            .map_err(|e| Error::pg("getting the current timeline", e))?;
        row.first().cloned().flatten().and_then(|t| u32::from_str_radix(&t, 16).ok())
    }
    .ok_or_else(|| Error::Precondition("the server reported no timeline".into()))?;
    conn.close();
    let at = position(timeline, lsn, settings.wal_segment_size);
    crate::info!(
        "Current WAL segment: {}",
        at.name(settings.wal_segment_size)
    );
    Ok(at)
}

/// Runs the command.
pub fn run(settings: &Settings, args: &Options) -> Result<(), Error> {
    let checks = checks(&args.checks)?;
    let at = match given_position(args, settings.wal_segment_size)? {
        Some(at) => at,
        None => query_position(settings)?,
    };
    let storage = settings.open_storage()?;
    let names = wal_inventory::list_names(storage.as_ref())?;
    let mut results = Vec::with_capacity(checks.len());
    for check in checks {
        crate::info!("running the {} check", check.word());
        let outcome = match check {
            Check::Integrity => Outcome::Integrity(integrity_check(
                settings,
                storage.as_ref(),
                &names,
                at,
                args.backup_name.as_deref(),
            )?),
            Check::Timeline => Outcome::Timeline {
                current: at.timeline,
                highest: highest_timeline(&names, settings.wal_segment_size),
            },
        };
        results.push((check, outcome));
    }
    let text = if args.json {
        render_json(&results, settings.wal_segment_size)
    } else {
        render_plain(&results, settings.wal_segment_size)
    };
    super::write_stdout(&text).map_err(|e| Error::io("writing the report to stdout", e))
}

/// The integrity check from position `at`.
pub fn integrity_check(
    settings: &Settings,
    storage: &dyn Storage,
    names: &[String],
    at: Segment,
    backup_name: Option<&str>,
) -> Result<Report, Error> {
    let size = settings.wal_segment_size;
    let method = settings.encode.method;
    let history = wal_inventory::read_history(storage, &settings.crypter, method, at.timeline)?;
    let switches = integrity::switch_map(&history.unwrap_or_default(), size);
    let stop_at = backup_name.map_or(StopAt::Earliest, StopAt::Named);
    let stop = integrity::stop_segment(storage, &switches, at.timeline, stop_at, size)?;
    let present = wal_inventory::present_segments(names, size);
    Ok(integrity::scan(&Plan {
        current: at,
        stop: stop.unwrap_or(1),
        no_backups: stop.is_none(),
        present: &present,
        switches: &switches,
        delayed_window: settings.integrity_max_delayed_wals,
        uploading_window: settings.upload_concurrency as u64,
    }))
}

/// The highest timeline the archive's object names show, 0 for none.
pub fn highest_timeline(names: &[String], segment_size: u64) -> u32 {
    let mut highest = 0;
    for name in names {
        match wal_inventory::timeline_of(name, segment_size) {
            Some(t) => highest = highest.max(t),
            None => crate::warn!("{name} names no timeline; passed over"),
        }
    }
    highest
}

/// The JSON report: one member per check, in name order (Go sorts map keys).
pub fn render_json(results: &[(Check, Outcome)], segment_size: u64) -> String {
    let mut sorted: Vec<&(Check, Outcome)> = results.iter().collect();
    sorted.sort_by_key(|(c, _)| c.word());
    let mut o = ObjectWriter::new();
    for (check, outcome) in sorted {
        let mut r = ObjectWriter::new();
        r.str("status", outcome.status().word());
        match outcome {
            Outcome::Integrity(report) if report.sequences.is_empty() => {
                r.raw("details", "null");
            }
            Outcome::Integrity(report) => {
                let items: Vec<String> = report
                    .sequences
                    .iter()
                    .map(|s| {
                        let mut i = ObjectWriter::new();
                        i.u64("timeline_id", u64::from(s.timeline))
                            .str("start_segment", &name(s.timeline, s.first, segment_size))
                            .str("end_segment", &name(s.timeline, s.last, segment_size))
                            .u64("segments_count", s.last - s.first + 1)
                            .str("status", s.status.word());
                        i.finish()
                    })
                    .collect();
                r.raw("details", &format!("[{}]", items.join(",")));
            }
            Outcome::Timeline { current, highest } => {
                let mut d = ObjectWriter::new();
                d.u64("current_timeline_id", u64::from(*current))
                    .u64("highest_storage_timeline_id", u64::from(*highest));
                r.raw("details", &d.finish());
            }
        }
        o.raw(check.word(), &r.finish());
    }
    o.finish()
}

fn name(timeline: u32, segno: u64, segment_size: u64) -> String {
    Segment { timeline, segno }.name(segment_size)
}

/// The plain report: per check a status line, a details line and the details.
pub fn render_plain(results: &[(Check, Outcome)], segment_size: u64) -> String {
    let mut out = String::new();
    for (check, outcome) in results {
        let word = check.word();
        out.push_str(&format!(
            "[wal-verify] {word} check status: {}\n[wal-verify] {word} check details:\n",
            outcome.status().word()
        ));
        match outcome {
            Outcome::Integrity(report) => {
                let rows: Vec<Vec<String>> = report
                    .sequences
                    .iter()
                    .map(|s| {
                        vec![
                            s.timeline.to_string(),
                            name(s.timeline, s.first, segment_size),
                            name(s.timeline, s.last, segment_size),
                            (s.last - s.first + 1).to_string(),
                            s.status.word().to_string(),
                        ]
                    })
                    .collect();
                // The timeline, the count and the status (an enum) are numbers to go-pretty.
                let header = ["TLI", "Start", "End", "Segments count", "Status"];
                out.push_str(&box_table(&header, &rows, &[0, 3, 4]));
            }
            Outcome::Timeline { current, highest } => out.push_str(&format!(
                "Highest timeline found in storage: {highest}\nCurrent cluster timeline: {current}\n"
            )),
        }
    }
    out
}
