//! A thin layer over SQLite's own file layer (its default VFS) for the writer's
//! connection: the writer's WAL writes are gathered in memory and reach the file in
//! one `pwrite` per 124 KiB when SQLite syncs, reads, truncates or writes elsewhere in
//! the file.
//!
//! Why: SQLite writes each WAL frame with two `pwrite`s, its 24-byte header and then
//! the page, and a frame's 4,120 bytes straddle two of the kernel's 4 KiB cache pages,
//! so each frame costs two system calls and three trips through the file system's
//! per-page write path. A group commit of about 25 creates writes about 48 frames.
//! On a 2-core VM that was 27.8% of the writer thread's time (`perf`), and a plain
//! loop of such writes took 1.35 to 1.56 µs of kernel time a frame against 0.42 when
//! the same bytes went in one call (bench/README.md).
//!
//! Why nothing changes for anyone reading the database:
//! - every write SQLite asks for still reaches the file, in the order asked: the layer
//!   only appends a write that continues the previous one, and hands everything
//!   gathered to the file first before it does anything else with it;
//! - other connections (the reader, the checkpointer, another process) find frames only
//!   through the WAL index, and a commit enters it only after SQLite has synced the WAL,
//!   which empties the buffer first. This holds because the writer commits with
//!   `synchronous=FULL`, which syncs the WAL at every commit; `connection::open_writer`
//!   checks it;
//! - a crash loses only what was not yet synced, which SQLite never counted on, as if the
//!   kernel had not written it back yet;
//! - a failed write fails the whole transaction, as the write would have: it is reported
//!   at the next call that hands the buffer over, and from then on every write, read and
//!   sync of the file fails too, until the writer says the transaction is over
//!   (`end_transaction`), so the commit's sync cannot succeed. A read reports it as an
//!   I/O error, never as `SQLITE_FULL`: after `SQLITE_FULL` SQLite may undo only the
//!   statement and let the transaction go on to commit over frames that never reached
//!   the file, after an I/O error it rolls the whole transaction back (`sqlite3VdbeHalt`).
//!   What could not be written is dropped, never written later.
//!
//! Only WAL files are wrapped; the database file and everything else go straight to the
//! default layer. This is the crate's only `unsafe` code: SQLite's VFS is a C interface.
#![expect(unsafe_code, reason = "SQLite's VFS is a C interface of raw pointers and callbacks")]

use std::ffi::{CStr, c_int, c_void};
use std::ptr;
use std::sync::OnceLock;

use rusqlite::ffi;

/// The layer's name, for `Connection::open_with_flags_and_vfs`.
const NAME: &CStr = c"quotask-wal-buffer";

/// Beyond this the buffer is written out before it grows further (a group commit of 256
/// creates writes well under 1 MiB).
const MAX_BUFFER: usize = 1 << 20;
/// The most one write hands to the default layer: the unix layer writes at most
/// 128 KiB - 1 bytes a call (`seekAndWrite` in os_unix.c) and reports a longer write as
/// a full disk.
const MAX_WRITE: usize = 124 << 10;

/// A WAL file of the layer: SQLite's file header first (so SQLite can use it as its own
/// `sqlite3_file`), then the buffer, then the default layer's file at `INNER_OFFSET` in
/// the same allocation (SQLite allocates the VFS's `szOsFile` bytes for each file).
#[repr(C)]
struct WalFile {
    base: ffi::sqlite3_file,
    inner: *mut ffi::sqlite3_file,
    /// Bytes written by SQLite and not yet handed to `inner`, starting at file offset `start`.
    pending: Vec<u8>,
    start: i64,
    /// The first failed hand-over since the writer's last `end_transaction`, or
    /// `SQLITE_OK`: see the module doc.
    failed: c_int,
    #[cfg(test)]
    name: ffi::sqlite3_filename,
    #[cfg(test)]
    fail_flush: bool,
}

const INNER_OFFSET: usize = size_of::<WalFile>().next_multiple_of(16);

/// Registers the layer with SQLite once, and returns its name.
pub fn register() -> anyhow::Result<&'static str> {
    static REGISTERED: OnceLock<Result<(), String>> = OnceLock::new();
    REGISTERED
        .get_or_init(|| {
            // SAFETY: `sqlite3_vfs_find` and `sqlite3_vfs_register` are thread-safe; the
            // registered struct is leaked, so it outlives every connection.
            unsafe {
                let default = ffi::sqlite3_vfs_find(ptr::null());
                if default.is_null() {
                    return Err("SQLite has no default VFS".into());
                }
                // The copy keeps the default layer's other methods. The unix layer's
                // ignore their VFS argument (os_unix.c marks it unused in each), except
                // `xOpen`, which `open` calls with the default layer itself.
                let mut vfs = *default;
                vfs.szOsFile = c_int::try_from(INNER_OFFSET).map_err(|e| e.to_string())? + (*default).szOsFile;
                vfs.pNext = ptr::null_mut();
                vfs.zName = NAME.as_ptr();
                vfs.pAppData = default.cast();
                vfs.xOpen = Some(open);
                match ffi::sqlite3_vfs_register(Box::leak(Box::new(vfs)), 0) {
                    ffi::SQLITE_OK => Ok(()),
                    rc => Err(format!("registering the WAL buffer layer failed with SQLite code {rc}")),
                }
            }
        })
        .clone()
        .map_err(anyhow::Error::msg)?;
    NAME.to_str().map_err(anyhow::Error::from)
}

static METHODS: ffi::sqlite3_io_methods = ffi::sqlite3_io_methods {
    // Version 1: no shared memory or memory mapping, which SQLite uses only on the
    // database file, never on the WAL.
    iVersion: 1,
    xClose: Some(close),
    xRead: Some(read),
    xWrite: Some(write),
    xTruncate: Some(truncate),
    xSync: Some(sync),
    xFileSize: Some(file_size),
    xLock: Some(lock),
    xUnlock: Some(unlock),
    xCheckReservedLock: Some(check_reserved_lock),
    xFileControl: Some(file_control),
    xSectorSize: Some(sector_size),
    xDeviceCharacteristics: Some(device_characteristics),
    xShmMap: None,
    xShmLock: None,
    xShmBarrier: None,
    xShmUnmap: None,
    xFetch: None,
    xUnfetch: None,
};

unsafe extern "C" fn open(
    vfs: *mut ffi::sqlite3_vfs,
    name: ffi::sqlite3_filename,
    file: *mut ffi::sqlite3_file,
    flags: c_int,
    out_flags: *mut c_int,
) -> c_int {
    // SAFETY: SQLite passes our registered VFS, whose `pAppData` is the default layer,
    // and `file` points to `szOsFile` bytes: room for a `WalFile` and the default
    // layer's file after it, or for the default layer's file alone.
    unsafe {
        let default = (*vfs).pAppData.cast::<ffi::sqlite3_vfs>();
        let Some(default_open) = (*default).xOpen else { return ffi::SQLITE_CANTOPEN };
        if flags & ffi::SQLITE_OPEN_WAL == 0 {
            return default_open(default, name, file, flags, out_flags);
        }
        let inner = file.cast::<u8>().add(INNER_OFFSET).cast::<ffi::sqlite3_file>();
        let rc = default_open(default, name, inner, flags, out_flags);
        if rc != ffi::SQLITE_OK {
            // No methods: SQLite then does not close what did not open.
            (*file).pMethods = ptr::null();
            return rc;
        }
        file.cast::<WalFile>().write(WalFile {
            base: ffi::sqlite3_file { pMethods: &METHODS },
            inner,
            pending: Vec::new(),
            start: 0,
            failed: ffi::SQLITE_OK,
            #[cfg(test)]
            name,
            #[cfg(test)]
            fail_flush: false,
        });
        ffi::SQLITE_OK
    }
}

/// The layer's file behind a pointer SQLite passes to one of `METHODS`.
///
/// SAFETY: `file` must be a file `open` made a `WalFile` (only those get `METHODS`), and
/// SQLite uses a file from one thread at a time.
unsafe fn wal_file<'a>(file: *mut ffi::sqlite3_file) -> &'a mut WalFile {
    unsafe { &mut *file.cast::<WalFile>() }
}

/// The default layer's methods for the file inside `f`.
fn inner_methods(f: &WalFile) -> &'static ffi::sqlite3_io_methods {
    // SAFETY: `inner` was opened by the default layer, which set its methods to a
    // static table, and stays open until `close`.
    unsafe { &*(*f.inner).pMethods }
}

/// Hands the buffer to the file. Whatever the outcome, the buffer is empty afterwards:
/// bytes that failed to be written are never written later. After a failure it fails
/// at once, until `end_transaction`.
fn flush(f: &mut WalFile) -> c_int {
    if f.failed != ffi::SQLITE_OK {
        f.pending.clear();
        return f.failed;
    }
    if f.pending.is_empty() {
        return ffi::SQLITE_OK;
    }
    #[cfg(test)]
    if std::mem::take(&mut f.fail_flush) {
        f.pending.clear();
        f.failed = ffi::SQLITE_FULL;
        return f.failed;
    }
    let mut rc = ffi::SQLITE_OK;
    let mut offset = f.start;
    for chunk in f.pending.chunks(MAX_WRITE) {
        rc = match inner_methods(f).xWrite {
            // SAFETY: `inner` is open; the pointer and length describe `chunk`, whose
            // length fits a `c_int` (`MAX_WRITE`).
            Some(write) => unsafe { write(f.inner, chunk.as_ptr().cast(), chunk.len() as c_int, offset) },
            None => ffi::SQLITE_IOERR_WRITE,
        };
        if rc != ffi::SQLITE_OK {
            break;
        }
        offset += chunk.len() as i64;
    }
    f.pending.clear();
    f.failed = rc;
    #[cfg(test)]
    tests::count(|c| c.flushes += 1);
    rc
}

/// Tells the layer that the writer's transaction is over (committed or rolled back):
/// a failed hand-over no longer fails what follows, since SQLite counts on nothing the
/// failed transaction wrote. Does nothing while `conn` is inside a transaction, or when
/// its WAL is not one of the layer's.
pub fn end_transaction(conn: &rusqlite::Connection) {
    if !conn.is_autocommit() {
        return;
    }
    let mut file: *mut ffi::sqlite3_file = ptr::null_mut();
    // SAFETY: `conn` is open and used by this thread only (it is not `Sync`);
    // `SQLITE_FCNTL_JOURNAL_POINTER` writes the main database's journal (in WAL mode its
    // WAL file) or null to `file`, and SQLite answers it itself, without the file's methods.
    let rc = unsafe {
        ffi::sqlite3_file_control(
            conn.handle(),
            c"main".as_ptr(),
            ffi::SQLITE_FCNTL_JOURNAL_POINTER,
            (&raw mut file).cast(),
        )
    };
    if rc == ffi::SQLITE_OK && !file.is_null() {
        // SAFETY: a file SQLite opened stays open while its connection is, and this
        // thread is the one using the connection.
        unsafe { forget_failure(file) };
    }
}

/// See `end_transaction`.
///
/// SAFETY: `file` must be an open file, not in use by another thread.
unsafe fn forget_failure(file: *mut ffi::sqlite3_file) {
    // SAFETY: only files that `open` made a `WalFile` have `METHODS`.
    unsafe {
        if ptr::eq((*file).pMethods, &METHODS) {
            wal_file(file).failed = ffi::SQLITE_OK;
        }
    }
}

/// Flushes, then runs `then` if that succeeded.
fn flushed(f: &mut WalFile, then: impl FnOnce(&mut WalFile) -> c_int) -> c_int {
    match flush(f) {
        ffi::SQLITE_OK => then(f),
        rc => rc,
    }
}

unsafe extern "C" fn write(file: *mut ffi::sqlite3_file, data: *const c_void, amount: c_int, offset: i64) -> c_int {
    let Ok(len @ 1..) = usize::try_from(amount) else {
        return ffi::SQLITE_OK;
    };
    // SAFETY: see `wal_file`; SQLite passes `amount` (here at least 1) readable bytes at
    // `data`.
    let (f, bytes) = unsafe { (wal_file(file), std::slice::from_raw_parts(data.cast::<u8>(), len)) };
    #[cfg(test)]
    tests::count(|c| c.writes += 1);
    if f.failed != ffi::SQLITE_OK {
        return f.failed;
    }
    let continues = offset == f.start + f.pending.len() as i64;
    if f.pending.is_empty() || !continues || f.pending.len() + bytes.len() > MAX_BUFFER {
        let rc = flush(f);
        if rc != ffi::SQLITE_OK {
            return rc;
        }
        f.start = offset;
    }
    f.pending.extend_from_slice(bytes);
    ffi::SQLITE_OK
}

unsafe extern "C" fn close(file: *mut ffi::sqlite3_file) -> c_int {
    // SAFETY: see `wal_file`; SQLite does not use the file after this call, so the
    // buffer is dropped here and the default layer's file closed.
    unsafe {
        let f = wal_file(file);
        let flushed = flush(f);
        let closed = inner_methods(f).xClose.map_or(ffi::SQLITE_OK, |close| close(f.inner));
        ptr::drop_in_place(&mut f.pending);
        if flushed == ffi::SQLITE_OK { closed } else { flushed }
    }
}

unsafe extern "C" fn read(file: *mut ffi::sqlite3_file, out: *mut c_void, amount: c_int, offset: i64) -> c_int {
    // SAFETY: see `wal_file`; the arguments go on to the default layer unchanged.
    let f = unsafe { wal_file(file) };
    #[cfg(test)]
    if !f.pending.is_empty() && tests::fault_fires(f.name) {
        f.fail_flush = true;
    }
    match flush(f) {
        ffi::SQLITE_OK => match inner_methods(f).xRead {
            Some(read) => unsafe { read(f.inner, out, amount, offset) },
            None => ffi::SQLITE_IOERR_READ,
        },
        // An I/O error, never `SQLITE_FULL`: see the module doc.
        rc if rc & 0xff == ffi::SQLITE_IOERR => rc,
        _ => ffi::SQLITE_IOERR_WRITE,
    }
}

unsafe extern "C" fn truncate(file: *mut ffi::sqlite3_file, size: i64) -> c_int {
    // SAFETY: as in `read`.
    flushed(unsafe { wal_file(file) }, |f| match inner_methods(f).xTruncate {
        Some(truncate) => unsafe { truncate(f.inner, size) },
        None => ffi::SQLITE_IOERR_TRUNCATE,
    })
}

unsafe extern "C" fn sync(file: *mut ffi::sqlite3_file, flags: c_int) -> c_int {
    // SAFETY: as in `read`.
    flushed(unsafe { wal_file(file) }, |f| match inner_methods(f).xSync {
        Some(sync) => unsafe { sync(f.inner, flags) },
        None => ffi::SQLITE_IOERR_FSYNC,
    })
}

unsafe extern "C" fn file_size(file: *mut ffi::sqlite3_file, size: *mut i64) -> c_int {
    // SAFETY: as in `read`.
    flushed(unsafe { wal_file(file) }, |f| match inner_methods(f).xFileSize {
        Some(file_size) => unsafe { file_size(f.inner, size) },
        None => ffi::SQLITE_IOERR_FSTAT,
    })
}

unsafe extern "C" fn file_control(file: *mut ffi::sqlite3_file, op: c_int, arg: *mut c_void) -> c_int {
    // SAFETY: as in `read`.
    flushed(unsafe { wal_file(file) }, |f| match inner_methods(f).xFileControl {
        Some(file_control) => unsafe { file_control(f.inner, op, arg) },
        None => ffi::SQLITE_NOTFOUND,
    })
}

unsafe extern "C" fn lock(file: *mut ffi::sqlite3_file, level: c_int) -> c_int {
    // SAFETY: as in `read`.
    let f = unsafe { wal_file(file) };
    inner_methods(f).xLock.map_or(ffi::SQLITE_OK, |lock| unsafe { lock(f.inner, level) })
}

unsafe extern "C" fn unlock(file: *mut ffi::sqlite3_file, level: c_int) -> c_int {
    // SAFETY: as in `read`.
    let f = unsafe { wal_file(file) };
    inner_methods(f).xUnlock.map_or(ffi::SQLITE_OK, |unlock| unsafe { unlock(f.inner, level) })
}

unsafe extern "C" fn check_reserved_lock(file: *mut ffi::sqlite3_file, out: *mut c_int) -> c_int {
    // SAFETY: as in `read`.
    let f = unsafe { wal_file(file) };
    match inner_methods(f).xCheckReservedLock {
        Some(check) => unsafe { check(f.inner, out) },
        None => ffi::SQLITE_IOERR_CHECKRESERVEDLOCK,
    }
}

unsafe extern "C" fn sector_size(file: *mut ffi::sqlite3_file) -> c_int {
    // SAFETY: as in `read`.
    let f = unsafe { wal_file(file) };
    inner_methods(f).xSectorSize.map_or(4096, |sector_size| unsafe { sector_size(f.inner) })
}

unsafe extern "C" fn device_characteristics(file: *mut ffi::sqlite3_file) -> c_int {
    // SAFETY: as in `read`.
    let f = unsafe { wal_file(file) };
    inner_methods(f).xDeviceCharacteristics.map_or(0, |characteristics| unsafe { characteristics(f.inner) })
}

#[cfg(test)]
pub(super) mod tests {
    use std::cell::Cell;

    use rusqlite::{Connection, OpenFlags};

    use super::*;

    /// WAL writes SQLite asked the layer for, and writes the layer made, on this thread.
    #[derive(Clone, Copy, Default)]
    pub struct Counts {
        pub writes: usize,
        pub flushes: usize,
    }

    thread_local! {
        static COUNTS: Cell<Counts> = Cell::new(Counts::default());
    }

    pub fn count(f: impl FnOnce(&mut Counts)) {
        COUNTS.with(|c| {
            let mut counts = c.get();
            f(&mut counts);
            c.set(counts);
        });
    }

    fn counts() -> Counts {
        COUNTS.with(Cell::get)
    }

    /// WAL files (by path) whose next flush that a read triggers fails as if the disk
    /// were full: nothing of the buffer reaches the file.
    static FAULTS: std::sync::Mutex<Vec<std::path::PathBuf>> = std::sync::Mutex::new(Vec::new());

    /// Arms one fault for the WAL of database `db`.
    pub fn fail_next_read_flush(db: &std::path::Path) {
        let db = std::fs::canonicalize(db).unwrap();
        FAULTS.lock().unwrap().push(format!("{}-wal", db.display()).into());
    }

    /// Whether the fault armed for `db` is still waiting to fire.
    pub fn read_flush_fault_armed(db: &std::path::Path) -> bool {
        let db = std::fs::canonicalize(db).unwrap();
        FAULTS.lock().unwrap().contains(&format!("{}-wal", db.display()).into())
    }

    /// Takes the fault armed for the WAL file `name`, if any.
    pub(super) fn fault_fires(name: ffi::sqlite3_filename) -> bool {
        // SAFETY: SQLite keeps a file's name valid until the file is closed.
        let name = unsafe { CStr::from_ptr(name) };
        let Ok(name) = name.to_str() else { return false };
        let mut faults = FAULTS.lock().unwrap();
        let Some(i) = faults.iter().position(|p| p.as_os_str() == name) else { return false };
        faults.swap_remove(i);
        true
    }

    fn open_writer(path: &std::path::Path) -> Connection {
        let conn = Connection::open_with_flags_and_vfs(path, OpenFlags::default(), register().unwrap()).unwrap();
        conn.pragma_update(None, "journal_mode", "wal").unwrap();
        conn.pragma_update(None, "synchronous", "full").unwrap();
        conn.pragma_update(None, "wal_autocheckpoint", 0).unwrap();
        conn
    }

    fn fill(conn: &Connection, from: i64, rows: i64) {
        let tx = conn.unchecked_transaction().unwrap();
        for i in from..from + rows {
            tx.execute("insert into t (id, body) values (?1, ?2)", (i, format!("{i:0>2000}"))).unwrap();
        }
        tx.commit().unwrap();
    }

    fn rows_and_integrity(conn: &Connection) -> (i64, String) {
        let rows = conn.query_row("select count(*) from t", [], |r| r.get(0)).unwrap();
        let ok = conn.query_row("pragma integrity_check", [], |r| r.get(0)).unwrap();
        (rows, ok)
    }

    #[test]
    fn a_commit_reaches_the_wal_in_few_hand_overs_and_other_connections_read_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        let writer = open_writer(&path);
        writer.execute_batch("create table t (id integer primary key, body text not null)").unwrap();
        let before = counts();
        fill(&writer, 0, 200);
        let (asked, made) = (counts().writes - before.writes, counts().flushes - before.flushes);
        // 200 rows of 2 KB: over 100 frames, two writes each, about 420 KB. A hand-over
        // is one `flush`: one `pwrite` per 124 KiB.
        assert!(asked > 200, "SQLite asked for {asked} WAL writes");
        assert!(made <= 3, "{asked} WAL writes reached the file in {made} hand-overs");
        // Another connection, through the default layer, sees the commit at once.
        let other = Connection::open(&path).unwrap();
        assert_eq!(rows_and_integrity(&other), (200, "ok".into()));
    }

    #[test]
    fn what_was_committed_survives_a_crash_and_wal_restarts() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        let writer = open_writer(&path);
        writer.execute_batch("create table t (id integer primary key, body text not null)").unwrap();
        for round in 0..7 {
            fill(&writer, round * 50, 50);
            if round % 2 == 1 {
                // The WAL starts over from its beginning at the next write: a write
                // elsewhere in the file, and a read of it first.
                writer.query_row("pragma wal_checkpoint(restart)", [], |_| Ok(())).unwrap();
            }
        }
        // A crash right after the last commit (round 6, not checkpointed): copy the files while the writer holds
        // them open (nothing checkpointed or closed), and open the copy from scratch.
        let copy = tempfile::tempdir().unwrap();
        for suffix in ["", "-wal"] {
            std::fs::copy(
                format!("{}{suffix}", path.display()),
                format!("{}{suffix}", copy.path().join("db").display()),
            )
            .unwrap();
        }
        let recovered = Connection::open(copy.path().join("db")).unwrap();
        assert_eq!(rows_and_integrity(&recovered), (350, "ok".into()));
        drop(writer);
        assert_eq!(rows_and_integrity(&Connection::open(&path).unwrap()), (350, "ok".into()));
    }

    /// The layer's own promises, on a WAL file opened through it directly: writes that
    /// continue each other are gathered; a read, a write elsewhere, the size and a sync
    /// each see every byte written before them.
    #[test]
    fn reads_sizes_and_writes_elsewhere_see_every_earlier_write() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("db"), b"").unwrap();
        let name = std::ffi::CString::new(dir.path().join("db-wal").to_str().unwrap()).unwrap();
        let flags = ffi::SQLITE_OPEN_WAL | ffi::SQLITE_OPEN_READWRITE | ffi::SQLITE_OPEN_CREATE;
        register().unwrap();
        // SAFETY: the VFS is the one registered above; `file` has its `szOsFile` bytes,
        // 8-aligned; it is closed before the memory goes.
        unsafe {
            let vfs = ffi::sqlite3_vfs_find(NAME.as_ptr());
            let mut memory = vec![0u64; ((*vfs).szOsFile as usize).div_ceil(8)];
            let file = memory.as_mut_ptr().cast::<ffi::sqlite3_file>();
            let mut out_flags = 0;
            assert_eq!((*vfs).xOpen.unwrap()(vfs, name.as_ptr(), file, flags, &mut out_flags), ffi::SQLITE_OK);
            let m = &*(*file).pMethods;
            let put = |bytes: &[u8], at: i64| m.xWrite.unwrap()(file, bytes.as_ptr().cast(), bytes.len() as c_int, at);
            let get = |len: usize, at: i64| {
                let mut buf = vec![0u8; len];
                assert_eq!(m.xRead.unwrap()(file, buf.as_mut_ptr().cast(), len as c_int, at), ffi::SQLITE_OK);
                buf
            };
            let size = || {
                let mut size = -1;
                assert_eq!(m.xFileSize.unwrap()(file, &mut size), ffi::SQLITE_OK);
                size
            };
            let before = counts();
            assert_eq!(put(b"abc", 0), ffi::SQLITE_OK);
            assert_eq!(put(b"def", 3), ffi::SQLITE_OK);
            assert_eq!(counts().flushes, before.flushes, "continuing writes are gathered");
            assert_eq!(get(6, 0), b"abcdef");
            assert_eq!(put(b"ghi", 6), ffi::SQLITE_OK);
            assert_eq!(size(), 9);
            assert_eq!(put(b"jk", 9), ffi::SQLITE_OK);
            assert_eq!(put(b"X", 1), ffi::SQLITE_OK);
            assert_eq!(get(11, 0), b"aXcdefghijk");
            assert_eq!(put(b"lm", 11), ffi::SQLITE_OK);
            assert_eq!(m.xSync.unwrap()(file, ffi::SQLITE_SYNC_NORMAL), ffi::SQLITE_OK);
            assert_eq!(std::fs::read(dir.path().join("db-wal")).unwrap(), b"aXcdefghijklm");
            assert_eq!(put(b"no", 13), ffi::SQLITE_OK);
            assert_eq!(m.xClose.unwrap()(file), ffi::SQLITE_OK);
            assert_eq!(std::fs::read(dir.path().join("db-wal")).unwrap(), b"aXcdefghijklmno");
        }
    }

    #[test]
    fn a_failed_hand_over_fails_every_later_write_read_and_sync_until_the_transaction_ends() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("db"), b"").unwrap();
        let name = std::ffi::CString::new(dir.path().join("db-wal").to_str().unwrap()).unwrap();
        let flags = ffi::SQLITE_OPEN_WAL | ffi::SQLITE_OPEN_READWRITE | ffi::SQLITE_OPEN_CREATE;
        register().unwrap();
        // SAFETY: as in `reads_sizes_and_writes_elsewhere_see_every_earlier_write`.
        unsafe {
            let vfs = ffi::sqlite3_vfs_find(NAME.as_ptr());
            let mut memory = vec![0u64; ((*vfs).szOsFile as usize).div_ceil(8)];
            let file = memory.as_mut_ptr().cast::<ffi::sqlite3_file>();
            let mut out_flags = 0;
            assert_eq!((*vfs).xOpen.unwrap()(vfs, name.as_ptr(), file, flags, &mut out_flags), ffi::SQLITE_OK);
            let m = &*(*file).pMethods;
            let put = |bytes: &[u8], at: i64| m.xWrite.unwrap()(file, bytes.as_ptr().cast(), bytes.len() as c_int, at);
            let get = |len: usize, at: i64| {
                let mut buf = vec![0u8; len];
                m.xRead.unwrap()(file, buf.as_mut_ptr().cast(), len as c_int, at)
            };
            let sync = || m.xSync.unwrap()(file, ffi::SQLITE_SYNC_NORMAL);
            assert_eq!(put(b"abc", 0), ffi::SQLITE_OK);
            // The disk is full when a read hands "abc" over.
            wal_file(file).fail_flush = true;

            assert_eq!(get(3, 0), ffi::SQLITE_IOERR_WRITE, "a read reports an I/O error, not a full disk");
            assert_eq!(put(b"def", 3), ffi::SQLITE_FULL);
            assert_eq!(get(3, 0), ffi::SQLITE_IOERR_WRITE);
            assert_eq!(sync(), ffi::SQLITE_FULL, "the commit's sync fails too");
            forget_failure(file);
            assert_eq!(put(b"xyz", 0), ffi::SQLITE_OK);
            assert_eq!(sync(), ffi::SQLITE_OK);

            assert_eq!(std::fs::read(dir.path().join("db-wal")).unwrap(), b"xyz", "nothing failed is written later");
            assert_eq!(m.xClose.unwrap()(file), ffi::SQLITE_OK);
        }
    }

    #[test]
    fn a_read_that_finds_a_failed_hand_over_rolls_the_whole_transaction_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        let writer = open_writer(&path);
        writer.pragma_update(None, "cache_size", 10).unwrap();
        writer.execute_batch("create table t (id integer primary key, body text not null)").unwrap();
        writer.execute_batch("begin").unwrap();
        for i in 0..300 {
            writer.execute("insert into t (id, body) values (?1, ?2)", (i, format!("{i:0>2000}"))).unwrap();
        }
        fail_next_read_flush(&path);

        // A statement that may need undoing alone (it changes many rows, each checked).
        let failed = writer.execute("update t set body = upper(body) where id % 3 = 0", []);

        assert!(!read_flush_fault_armed(&path), "a read handed spilled frames over");
        let code = match &failed {
            Err(rusqlite::Error::SqliteFailure(e, _)) => e.extended_code,
            other => panic!("{other:?}"),
        };
        assert_eq!(code & 0xff, ffi::SQLITE_IOERR, "{failed:?}");
        assert!(writer.is_autocommit(), "SQLite rolled the whole transaction back");
        end_transaction(&writer);
        fill(&writer, 1_000, 10);
        assert_eq!(rows_and_integrity(&Connection::open(&path).unwrap()), (10, "ok".into()));
    }

    #[test]
    fn a_large_transaction_spills_and_reads_back_its_own_frames() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        let writer = open_writer(&path);
        // A page cache of 10 pages: SQLite writes pages to the WAL before the commit and
        // reads them back while the transaction goes on.
        writer.pragma_update(None, "cache_size", 10).unwrap();
        writer.execute_batch("create table t (id integer primary key, body text not null)").unwrap();
        fill(&writer, 0, 2_000);
        let updated = writer.execute("update t set body = upper(body) where id % 3 = 0", []).unwrap();
        assert_eq!(updated, 667);
        assert_eq!(rows_and_integrity(&Connection::open(&path).unwrap()), (2_000, "ok".into()));
    }
}
