use super::databases::glob_match;
use super::frames::*;
use super::locks::*;
use super::*;

#[test]
fn reads_proc_locks() {
    let text = "1: POSIX  ADVISORY  READ 4242 fd:01:99 123 123\n\
                2: POSIX  ADVISORY  READ 4242 fd:01:77 128 128\n\
                3: POSIX  ADVISORY  WRITE 17 fd:01:55 124 124\n\
                4: FLOCK  ADVISORY  WRITE 4242 fd:01:11 0 EOF\n\
                5: POSIX  ADVISORY  READ 4242 08:02:1234 120 EOF\n\
                6: -> POSIX  ADVISORY  WRITE 4242 fd:01:33 123 123\n\
                7: POSIX  ADVISORY  READ 42420 fd:01:44 123 123\n\
                8: POSIX  ADVISORY  READ 4242 fd:01\n";
    let got = parse_locks(text, 4242);
    let id = |major, minor, inode| FileId {
        major,
        minor,
        inode,
    };
    assert!(got.contains(&id(0xfd, 1, 99)));
    assert!(got.contains(&id(8, 2, 1234)), "a range covering 123-127");
    assert!(
        !got.contains(&id(0xfd, 1, 77)),
        "byte 128 is not a read lock"
    );
    assert!(!got.contains(&id(0xfd, 1, 55)), "another pid");
    assert!(!got.contains(&id(0xfd, 1, 11)), "flock");
    assert!(!got.contains(&id(0xfd, 1, 33)), "a waiter");
    assert!(
        !got.contains(&id(0xfd, 1, 44)),
        "a pid that only starts like ours"
    );
    assert_eq!(got.len(), 2);
}

#[test]
fn sees_a_wal_restart_litestream_did_not_see() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("a.db");
    std::fs::write(&db, b"").unwrap();
    let state = dir.path().join(".a.db-litestream");
    let l0 = state.join("ltx").join("0");
    std::fs::create_dir_all(&l0).unwrap();
    let ltx = |txid: u64, offset: u64, size: u64, salts: [u8; 8]| {
        let mut h = vec![0u8; 100];
        h[0..4].copy_from_slice(b"LTX1");
        h[48..56].copy_from_slice(&offset.to_be_bytes());
        h[56..64].copy_from_slice(&size.to_be_bytes());
        h[64..72].copy_from_slice(&salts);
        std::fs::write(l0.join(format!("{txid:016x}-{txid:016x}.ltx")), h).unwrap();
    };
    // A WAL of 4 frames of 4096-byte pages: its header's salts, and those of the 4th frame.
    let wal = |salts: [u8; 8], last_frame: [u8; 8]| {
        let mut w = vec![0u8; 32 + 4120 * 4];
        w[8..12].copy_from_slice(&4096u32.to_be_bytes());
        w[16..24].copy_from_slice(&salts);
        let f = 32 + 4120 * 3;
        w[f + 8..f + 16].copy_from_slice(&last_frame);
        std::fs::write(dir.path().join("a.db-wal"), w).unwrap();
    };
    assert!(!restarted_since_litestream(&db, &state), "no state, no WAL");
    ltx(1, 32, 4120 * 3, [1; 8]);
    ltx(2, 32 + 4120 * 3, 4120, [2; 8]); // the newest one counts
    wal([2; 8], [2; 8]);
    assert!(!restarted_since_litestream(&db, &state), "same salts");
    wal([3; 8], [2; 8]);
    assert!(
        restarted_since_litestream(&db, &state),
        "other salts, litestream's last frame intact: it would go on without a snapshot"
    );
    wal([3; 8], [3; 8]);
    assert!(
        !restarted_since_litestream(&db, &state),
        "its last frame overwritten: litestream snapshots by itself"
    );
    std::fs::write(dir.path().join("a.db-wal"), b"").unwrap();
    assert!(
        !restarted_since_litestream(&db, &state),
        "an empty WAL: litestream snapshots by itself"
    );
}

#[test]
fn sees_a_wal_checkpointed_past_litestream_with_real_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("a.db");
    // SQLite's defaults: ten inserts stay far below the automatic checkpoint's 1000 frames.
    let app = Connection::open(&db).unwrap();
    app.execute_batch("PRAGMA journal_mode=wal; CREATE TABLE t(x);")
        .unwrap();
    for i in 0..10 {
        app.execute("INSERT INTO t VALUES (?)", [i]).unwrap();
    }
    let state = dir.path().join(".a.db-litestream");
    let l0 = state.join("ltx").join("0");
    std::fs::create_dir_all(&l0).unwrap();
    let wal_header = read_bytes(&dir.path().join("a.db-wal"), 32).unwrap();
    let index = wal_index(&db).expect("a WAL index");
    assert_eq!(
        index.salts[..],
        wal_header[16..24],
        "salts as in the WAL header"
    );
    assert_eq!(index.frame_size, 4096 + 24);
    assert!(index.mx_frame >= 11 && index.n_backfill == 0, "{index:?}");
    let wal_end = 32 + u64::from(index.mx_frame) * index.frame_size;
    let ltx = |end: u64| {
        let mut h = vec![0u8; 100];
        h[0..4].copy_from_slice(b"LTX1");
        h[48..56].copy_from_slice(&32u64.to_be_bytes());
        h[56..64].copy_from_slice(&(end - 32).to_be_bytes());
        h[64..72].copy_from_slice(&wal_header[16..24]);
        std::fs::write(l0.join("0000000000000001-0000000000000001.ltx"), h).unwrap();
    };
    ltx(wal_end - 2 * index.frame_size); // litestream copied all but the last two frames
    assert!(
        !checkpointed_past_litestream(&db, &state),
        "not checkpointed yet: a reader would keep the frames"
    );
    let (_, _, done): (i64, i64, i64) = app
        .query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        })
        .unwrap();
    assert_eq!(i64::from(index.mx_frame), done);
    assert!(
        checkpointed_past_litestream(&db, &state),
        "all checkpointed, two frames litestream never copied: the next write restarts the WAL"
    );
    assert_eq!(
        frames_at_risk(&db, &state),
        Some("the WAL was checkpointed past litestream's last copy and can be restarted by the next write")
    );
    ltx(wal_end); // litestream had copied every frame: a restart loses nothing
    assert!(!checkpointed_past_litestream(&db, &state));
    assert_eq!(frames_at_risk(&db, &state), None);
}

#[test]
fn matches_patterns_like_go() {
    assert!(glob_match("*.db", "a.db"));
    assert!(!glob_match("*.db", "a.db-wal"));
    assert!(glob_match("t?.db", "t1.db"));
    assert!(glob_match("[a-c]*.db", "b.db"));
    assert!(!glob_match("[^a-c]*.db", "b.db"));
    assert!(glob_match("*", ".hidden"));
}

#[test]
fn looking_at_the_wal_index_keeps_the_guards_lock() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("g.db");
    let app = Connection::open(&db).unwrap();
    app.execute_batch("PRAGMA journal_mode=WAL; CREATE TABLE t(x); INSERT INTO t VALUES (1);")
        .unwrap();
    let guard = WalGuard::default();
    assert_eq!(guard.engage_blocking(std::slice::from_ref(&db)), 1);
    let held = || holds_read_lock(read_locks(std::process::id()).as_ref(), &db);
    assert_eq!(held(), Some(true));
    for _ in 0..3 {
        assert!(wal_index(&db).is_some());
    }
    assert_eq!(
        held(),
        Some(true),
        "reading the WAL index dropped the guard's lock"
    );
    // The hazard avoided: any descriptor of the -shm opened and closed in this process drops
    // every POSIX lock the process holds on it, while SQLite believes it still holds them.
    drop(std::fs::File::open(shm_path(&db)).unwrap());
    assert_eq!(held(), Some(false));
    drop(app);
}

#[test]
fn guard_holds_a_read_lock_and_never_writes() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("g.db");
    let app = Connection::open(&db).unwrap();
    app.execute_batch("PRAGMA journal_mode=WAL; CREATE TABLE t(x); INSERT INTO t VALUES (1);")
        .unwrap();
    let guard = WalGuard::default();
    assert_eq!(guard.engage_blocking(std::slice::from_ref(&db)), 1);
    // Our own pid holds the lock now.
    let locks = read_locks(std::process::id()).unwrap();
    assert_eq!(holds_read_lock(Some(&locks), &db), Some(true));
    // While held, a checkpoint cannot restart the WAL: frames stay.
    for i in 0..50 {
        app.execute("INSERT INTO t VALUES (?)", [i]).unwrap();
    }
    app.query_row("PRAGMA wal_checkpoint(RESTART)", [], |r| r.get::<_, i64>(0))
        .map(|busy| assert_eq!(busy, 1, "restart must be blocked"))
        .unwrap();
    assert!(guard.release(&db));
    assert!(guard.held().is_empty());
    // Its connection stays idle, for the next engagement.
    assert_eq!(guard.engage_blocking(&[]), 1);
    guard.release_all();
    assert!(guard.held().is_empty());
    drop(app);
    // A rollback-journal database is left alone.
    let plain = dir.path().join("plain.db");
    Connection::open(&plain)
        .unwrap()
        .execute_batch("CREATE TABLE t(x)")
        .unwrap();
    assert_eq!(
        guard.engage_blocking(&[plain, dir.path().join("missing.db")]),
        0
    );
    assert!(!dir.path().join("missing.db").exists());
}
