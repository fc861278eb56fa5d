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
    let io = |source| StoreError::Io {
        path: dest.to_path_buf(),
        source,
    };
    match std::fs::remove_file(dest) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io(e)),
    }
    let conn = open_connection(db).map_err(sqlite_err(db))?;
    let dest_str = dest.to_str().ok_or_else(|| {
        StoreError::Refused(format!(
            "snapshot path {} is not valid UTF-8",
            dest.display()
        ))
    })?;
    conn.execute("VACUUM INTO ?1", [dest_str])
        .map_err(sqlite_err(db))?;
    drop(conn);
    File::open(dest).and_then(|f| f.sync_all()).map_err(io)?;
    if let Some(dir) = dest.parent().filter(|d| !d.as_os_str().is_empty()) {
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|source| StoreError::Io {
                path: dir.to_path_buf(),
                source,
            })?;
    }
    let (position, _) = meta::inspect(dest)?;
    Ok(position)
}

/// Replace the database content with `src`'s. Checked first, so a file that
/// is not a quorate database leaves the current one untouched.
pub(crate) fn install(
    w: &mut Writer,
    db: &Path,
    src: &Path,
) -> Result<(Position, Seqno), StoreError> {
    meta::inspect(src)?;
    w.apply
        .restore("main", src, NO_PROGRESS)
        .map_err(sqlite_err(db))?;
    // A donor of an older version may lack what this version adds to the
    // internal tables (the `_quorate_trx` seqno index), as a database
    // opened after an upgrade would.
    meta::create_tables(&w.apply).map_err(sqlite_err(db))?;
    w.schema_changed();
    let (position, last_ddl) = meta::read_meta(&w.apply).map_err(sqlite_err(db))?;
    Ok((position, last_ddl))
}

#[cfg(test)]
mod tests {
    use crate::store::testutil::*;
    use crate::store::{read_position, StoreError};
    use crate::writeset::{FailReason, Verdict};
    use tempfile::TempDir;

    #[test]
    fn removal_records_stay_across_restarts_and_travel_with_a_snapshot() {
        let dir = TempDir::new().unwrap();
        let donor = open(&dir.path().join("donor"));
        donor
            .set_identity(uuid::Uuid::new_v4(), 1, None, b"")
            .unwrap();
        let big_id = u64::MAX - 7; // past i64: kept as text
        donor
            .record_removed(big_id, "{\"name\":\"n5\"}", b"raft-5")
            .unwrap();
        // Applying the same entry again (a replay after a crash) is a no-op.
        donor
            .record_removed(big_id, "{\"name\":\"other\"}", b"raft-5")
            .unwrap();
        assert_eq!(donor.raft_state().unwrap().as_deref(), Some(&b"raft-5"[..]));
        assert_eq!(
            donor.removed_member(big_id).unwrap().as_deref(),
            Some("{\"name\":\"n5\"}")
        );
        assert_eq!(donor.removed_member(3).unwrap(), None);
        drop(donor);
        let donor = open(&dir.path().join("donor"));
        assert!(
            donor.removed_member(big_id).unwrap().is_some(),
            "kept across a restart"
        );

        let file = dir.path().join("snap.db");
        donor.snapshot_into(&file).unwrap();
        let joiner = open(&dir.path().join("joiner"));
        joiner.install_snapshot(&file).unwrap();
        assert_eq!(
            joiner.removed_member(big_id).unwrap().as_deref(),
            Some("{\"name\":\"n5\"}")
        );
    }

    #[test]
    fn snapshot_round_trip_carries_data_position_and_cert_index() {
        let dir = TempDir::new().unwrap();
        let donor = open(&dir.path().join("donor"));
        let uuid = uuid::Uuid::new_v4();
        donor.set_identity(uuid, 1, None, b"").unwrap();
        apply_one(
            &donor,
            &capture_ws(
                &donor,
                &[st("CREATE TABLE t(id INTEGER PRIMARY KEY, v)")],
                1,
            ),
        );
        let stale = capture_ws(&donor, &[st("INSERT INTO t VALUES (1, 'stale')")], 2);
        apply_one(
            &donor,
            &capture_ws(&donor, &[st("INSERT INTO t VALUES (1, 'x'), (2, 'y')")], 3),
        );

        let file = dir.path().join("snap.db");
        std::fs::write(&file, b"old content is replaced").unwrap();
        let pos = donor.snapshot_into(&file).unwrap();
        assert_eq!(pos, donor.position());
        assert_eq!(read_position(&file).unwrap(), Some(pos));
        // As a donor of an older version sends it: without the trx index.
        let index = "SELECT count(*) FROM sqlite_schema WHERE name = '_quorate_trx_by_seqno'";
        rusqlite::Connection::open(&file)
            .unwrap()
            .execute_batch("DROP INDEX _quorate_trx_by_seqno")
            .unwrap();

        let joiner = open(&dir.path().join("joiner"));
        apply_one(
            &joiner,
            &capture_ws(
                &joiner,
                &[st("CREATE TABLE junk(id INTEGER PRIMARY KEY)")],
                1,
            ),
        );
        assert_eq!(joiner.install_snapshot(&file).unwrap(), pos);
        assert_eq!(joiner.position(), pos);
        let indexes: i64 = rusqlite::Connection::open(joiner.path())
            .unwrap()
            .query_row(index, [], |r| r.get(0))
            .unwrap();
        assert_eq!(indexes, 1, "the installed database gets the index");
        assert_eq!(dump(&joiner, "t"), dump(&donor, "t"));
        let r = joiner
            .query(
                &[st("SELECT name FROM sqlite_schema WHERE name = 'junk'")],
                false,
            )
            .unwrap();
        assert!(r[0].rows.is_empty());
        // The certification index came along: the same verdict on both.
        let a = donor
            .apply_batch(std::slice::from_ref(&stale), b"")
            .unwrap();
        let b = joiner
            .apply_batch(std::slice::from_ref(&stale), b"")
            .unwrap();
        assert_eq!(a, b);
        assert!(
            matches!(a[0].verdict, Verdict::Failed(FailReason::Conflict { .. })),
            "{a:?}"
        );
        // And the joiner keeps working on the installed database.
        let ws = capture_ws(&joiner, &[st("INSERT INTO t VALUES (3, 'z')")], 9);
        assert!(matches!(apply_one(&joiner, &ws), Verdict::Committed { .. }));
        assert_eq!(
            read_position(joiner.path()).unwrap().unwrap().seqno,
            pos.seqno + 2
        );
    }

    #[test]
    fn installing_something_else_changes_nothing() {
        let dir = TempDir::new().unwrap();
        let s = open(&dir.path().join("s"));
        apply_one(
            &s,
            &capture_ws(&s, &[st("CREATE TABLE t(id INTEGER PRIMARY KEY)")], 1),
        );
        let before = s.position();

        let plain = dir.path().join("plain.db");
        rusqlite::Connection::open(&plain)
            .unwrap()
            .execute_batch("CREATE TABLE x(a)")
            .unwrap();
        let garbage = dir.path().join("garbage.db");
        std::fs::write(&garbage, vec![7u8; 8192]).unwrap();
        for bad in [plain.clone(), garbage, dir.path().join("missing.db")] {
            assert!(s.install_snapshot(&bad).is_err(), "{bad:?}");
            assert_eq!(s.position(), before);
        }
        assert!(matches!(
            read_position(&plain),
            Err(StoreError::NotQuorate { .. })
        ));
        assert_eq!(read_position(&dir.path().join("nothing.db")).unwrap(), None);
        assert!(!dir.path().join("nothing.db").exists());
        assert!(s.query(&[st("SELECT * FROM t")], false).unwrap()[0]
            .error
            .is_none());
    }
}
