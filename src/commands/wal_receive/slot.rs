//! The replication slot (`WALG_SLOTNAME`): read, or created when missing, on every session.

use super::stream::Stream;
use crate::error::Error;
use crate::format::lsn::Lsn;
use crate::pg::replication::{SlotState, parse_slot_row, slot_state_sql};

/// The first version with `READ_REPLICATION_SLOT`.
const READ_SLOT_VERSION: u32 = 150_000;

/// Makes sure the slot exists and is physical; its restart LSN (`None` when it has never
/// reserved WAL). A missing slot is created reserving WAL at once, so nothing the server
/// writes from now on can be recycled before it is stored.
pub(super) fn ensure(stream: &mut Stream<'_>) -> Result<Option<Lsn>, Error> {
    let name = stream.settings.slot_name.clone();
    let state = match read(stream, &name)? {
        Some(state) => state,
        None => {
            crate::info!("creating physical replication slot {name}");
            let conn = stream.conn.as_mut().expect("a session is open");
            match conn.create_slot(&name) {
                Ok(()) => {}
                // Created by someone else since we looked: use it.
                Err(e) if e.sqlstate() == Some("42710") => {}
                Err(e) => {
                    return Err(Error::pg(format!("creating replication slot {name}"), e));
                }
            }
            read(stream, &name)?.ok_or_else(|| {
                Error::Precondition(format!("replication slot {name} vanished after creation"))
            })?
        }
    };
    if state.slot_type != "physical" {
        return Err(Error::Precondition(format!(
            "replication slot {name} is a {} slot; wal-receive needs a physical one \
             (WALG_SLOTNAME names another)",
            state.slot_type
        )));
    }
    Ok(state.restart_lsn)
}

/// The slot's state: `READ_REPLICATION_SLOT` on PostgreSQL 15 and later, else
/// `pg_replication_slots` over an SQL session, as WAL-G reads it.
fn read(stream: &mut Stream<'_>, name: &str) -> Result<Option<SlotState>, Error> {
    let conn = stream.conn.as_mut().expect("a session is open");
    if conn.server_version_num() >= READ_SLOT_VERSION {
        return conn
            .read_slot(name)
            .map_err(|e| Error::pg("READ_REPLICATION_SLOT", e));
    }
    let mut sql = super::super::connect_pg(stream.settings)?;
    let rows = sql
        .query(&slot_state_sql(name))
        .map_err(|e| Error::pg("reading pg_replication_slots", e))?
        .rows;
    match rows.first() {
        None => Ok(None),
        Some(row) => parse_slot_row(row).map_err(|e| Error::pg("reading pg_replication_slots", e)),
    }
}
