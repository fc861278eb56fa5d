//! Snapshots for SST and log compaction. The copy carries `_quorate_meta`
//! and `_quorate_cert`, so a node installing it certifies exactly like the
//! donor from that position on.

use std::fs::File;
use std::path::Path;

use rusqlite::backup::NO_PROGRESS;

use super::{meta, open_connection, sqlite_err, StoreError, Writer};
use crate::writeset::{Position, Seqno};

/// `VACUUM INTO` runs in one read transaction on a connection of its own:
/// a consistent copy at one position, while the writer goes on.
pub(crate) fn snapshot_into(db: &Path, dest: &Path) -> Result<Position, StoreError> {
    let io = |source| StoreError::Io { path: dest.to_path_buf(), source };
    match std::fs::remove_file(dest) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io(e)),
    }
    let conn = open_connection(db).map_err(sqlite_err(db))?;
    let dest_str = dest
        .to_str()
        .ok_or_else(|| StoreError::Refused(format!("snapshot path {} is not valid UTF-8", dest.display())))?;
    conn.execute("VACUUM INTO ?1", [dest_str]).map_err(sqlite_err(db))?;
    drop(conn);
    File::open(dest).and_then(|f| f.sync_all()).map_err(io)?;
    if let Some(dir) = dest.parent().filter(|d| !d.as_os_str().is_empty()) {
        File::open(dir).and_then(|d| d.sync_all()).map_err(|source| StoreError::Io { path: dir.to_path_buf(), source })?;
    }
    let (position, _) = meta::inspect(dest)?;
    Ok(position)
}

/// Replace the database content with `src`'s. Checked first, so a file that
/// is not a quorate database leaves the current one untouched.
pub(crate) fn install(w: &mut Writer, db: &Path, src: &Path) -> Result<(Position, Seqno), StoreError> {
    meta::inspect(src)?;
    w.apply.restore("main", src, NO_PROGRESS).map_err(sqlite_err(db))?;
    w.schema_changed();
    let (position, last_ddl) = meta::read_meta(&w.apply).map_err(sqlite_err(db))?;
    Ok((position, last_ddl))
}
