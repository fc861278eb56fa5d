//! `grastate.dat` in Galera's format (version 2.1), DESIGN.md §4.
//!
//! ```text
//! # GALERA saved state
//! version: 2.1
//! uuid:    8348d5ea-5664-11e7-8628-262d8bf5ad3d
//! seqno:   -1
//! safe_to_bootstrap: 0
//! ```
//!
//! Parsing is strict because the file decides whether a node may bootstrap a
//! cluster: a damaged file is reported with its path, its line and what to
//! do, never guessed at. The bootstrap guard ([`check_bootstrap`]) is pure;
//! the only I/O here is [`GrastateFile::read`] and
//! [`GrastateFile::write_atomic`].

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use uuid::Uuid;

/// The only version we read and write: the one Galera 4 writes.
pub const VERSION: &str = "2.1";

/// The seqno of a running node, or of one that crashed: "position unknown".
pub const SEQNO_UNDEFINED: i64 = -1;

const HEADER: &str = "# GALERA saved state";

/// Appended to every damage report so the operator knows the way out.
const RECOVERY_HINT: &str =
    "run `quorate --recover` to read the true position from the database, then fix or remove the file";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrastateFile {
    pub uuid: Uuid,
    pub seqno: i64,
    pub safe_to_bootstrap: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum GrastateError {
    #[error("cannot access {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} line {line}: {message}")]
    Damaged {
        path: PathBuf,
        line: usize,
        message: String,
    },
}

/// `--bootstrap-node` on a node whose grastate.dat says `safe_to_bootstrap: 0`.
///
/// The CLI prints [`crate::status::BOOTSTRAP_REFUSED_BANNER`] for it; this
/// error's own text is for logs.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "not safe to bootstrap this node: grastate.dat has safe_to_bootstrap: 0 \
     (uuid {uuid}, seqno {seqno}); bootstrap the node that was last removed from the cluster, \
     or force this one with --force-safe-to-bootstrap"
)]
pub struct BootstrapRefusal {
    pub uuid: Uuid,
    pub seqno: i64,
}

impl BootstrapRefusal {
    pub fn banner(&self) -> &'static str {
        crate::status::BOOTSTRAP_REFUSED_BANNER
    }
}

/// The bootstrap guard: may `--bootstrap-node` start a new primary component
/// from this node?
///
/// A missing file means a fresh node (no file exists before the first start),
/// which may bootstrap; so may a node whose state UUID is still nil: it never
/// held cluster data, so it has nothing to lose or to fork. A refusal must change nothing on disk: callers simply
/// do not write the file when this returns `Err` (Galera overwrites the seqno
/// with -1 then; we don't).
pub fn check_bootstrap(file: Option<&GrastateFile>) -> Result<(), BootstrapRefusal> {
    match file {
        None => Ok(()),
        Some(f) if f.safe_to_bootstrap || f.uuid.is_nil() => Ok(()),
        Some(f) => Err(BootstrapRefusal {
            uuid: f.uuid,
            seqno: f.seqno,
        }),
    }
}

impl GrastateFile {
    /// The file while the node runs: seqno -1, not safe to bootstrap (set it
    /// with [`GrastateFile::with_safe_to_bootstrap`] while the node is the
    /// only member).
    pub fn running(uuid: Uuid) -> GrastateFile {
        GrastateFile {
            uuid,
            seqno: SEQNO_UNDEFINED,
            safe_to_bootstrap: false,
        }
    }

    /// The file a graceful stop leaves: the last committed seqno.
    pub fn stopped(uuid: Uuid, seqno: i64, safe_to_bootstrap: bool) -> GrastateFile {
        GrastateFile {
            uuid,
            seqno,
            safe_to_bootstrap,
        }
    }

    pub fn with_safe_to_bootstrap(self, safe_to_bootstrap: bool) -> GrastateFile {
        GrastateFile {
            safe_to_bootstrap,
            ..self
        }
    }

    /// Exactly Galera's layout, trailing newline included.
    pub fn render(&self) -> String {
        format!(
            "{HEADER}\nversion: {VERSION}\nuuid:    {}\nseqno:   {}\nsafe_to_bootstrap: {}\n",
            self.uuid.hyphenated(),
            self.seqno,
            u8::from(self.safe_to_bootstrap)
        )
    }

    /// Parses the file's text; `path` only names the file in errors.
    pub fn parse(text: &str, path: &Path) -> Result<GrastateFile, GrastateError> {
        let damaged = |line: usize, what: String| GrastateError::Damaged {
            path: path.to_path_buf(),
            line,
            message: format!("{what}; {RECOVERY_HINT}"),
        };

        let mut version: Option<usize> = None;
        let mut uuid: Option<(usize, Uuid)> = None;
        let mut seqno: Option<(usize, i64)> = None;
        let mut safe: Option<(usize, bool)> = None;
        let mut last_line = 0;

        for (index, raw) in text.lines().enumerate() {
            let line = index + 1;
            last_line = line;
            let trimmed = raw.trim();
            if trimmed.is_empty() || trimmed.starts_with('#') {
                continue;
            }
            let Some((key, value)) = trimmed.split_once(':') else {
                return Err(damaged(
                    line,
                    format!("expected `key: value`, found {:?}", shorten(trimmed)),
                ));
            };
            let key = key.trim();
            let value = value.trim();
            let seen_before = match key {
                "version" => version.map(|_| ()),
                "uuid" => uuid.map(|_| ()),
                "seqno" => seqno.map(|_| ()),
                "safe_to_bootstrap" => safe.map(|_| ()),
                _ => {
                    return Err(damaged(
                        line,
                        format!(
                            "unknown key {:?} (a version {VERSION} file has only version, uuid, \
                             seqno and safe_to_bootstrap)",
                            shorten(key)
                        ),
                    ))
                }
            };
            if seen_before.is_some() {
                return Err(damaged(line, format!("`{key}:` appears twice")));
            }
            match key {
                "version" => {
                    if value != VERSION {
                        return Err(damaged(
                            line,
                            format!(
                                "unsupported version {:?}: quorate reads only version {VERSION}, \
                                 the format of Galera 4",
                                shorten(value)
                            ),
                        ));
                    }
                    version = Some(line);
                }
                "uuid" => {
                    // Galera writes the hyphenated form only; the other forms
                    // `Uuid::parse_str` accepts would be a sign of hand editing gone wrong.
                    let parsed = (value.len() == 36)
                        .then(|| Uuid::try_parse(value).ok())
                        .flatten()
                        .ok_or_else(|| {
                            damaged(
                                line,
                                format!(
                                    "bad uuid {:?}: expected 36 characters like \
                                     8348d5ea-5664-11e7-8628-262d8bf5ad3d",
                                    shorten(value)
                                ),
                            )
                        })?;
                    uuid = Some((line, parsed));
                }
                "seqno" => {
                    let parsed = value.parse::<i64>().ok().filter(|s| *s >= SEQNO_UNDEFINED);
                    let parsed = parsed.ok_or_else(|| {
                        damaged(
                            line,
                            format!(
                                "bad seqno {:?}: expected -1 or a non-negative integer",
                                shorten(value)
                            ),
                        )
                    })?;
                    seqno = Some((line, parsed));
                }
                _ => {
                    let parsed = match value {
                        "0" => false,
                        "1" => true,
                        _ => {
                            return Err(damaged(
                                line,
                                format!(
                                    "bad safe_to_bootstrap {:?}: expected 0 or 1",
                                    shorten(value)
                                ),
                            ))
                        }
                    };
                    safe = Some((line, parsed));
                }
            }
        }

        // A key that is missing points at the end of the file: that is where
        // a truncated write stopped.
        let end = last_line.max(1);
        if version.is_none() && uuid.is_none() && seqno.is_none() && safe.is_none() {
            return Err(damaged(
                end,
                "the file holds no settings: it is empty or was cut short (an interrupted write?)"
                    .to_string(),
            ));
        }
        let missing = |key: &str| damaged(end, format!("`{key}:` is missing (truncated file?)"));
        if version.is_none() {
            return Err(missing("version"));
        }
        let (_, uuid) = uuid.ok_or_else(|| missing("uuid"))?;
        let (_, seqno) = seqno.ok_or_else(|| missing("seqno"))?;
        let (_, safe_to_bootstrap) = safe.ok_or_else(|| missing("safe_to_bootstrap"))?;
        Ok(GrastateFile {
            uuid,
            seqno,
            safe_to_bootstrap,
        })
    }

    /// `Ok(None)` when the file does not exist (a node that never started).
    pub fn read(path: &Path) -> Result<Option<GrastateFile>, GrastateError> {
        let bytes = match fs::read(path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(source) => {
                return Err(GrastateError::Io {
                    path: path.to_path_buf(),
                    source,
                })
            }
        };
        let text = String::from_utf8(bytes).map_err(|e| {
            let valid = &e.as_bytes()[..e.utf8_error().valid_up_to()];
            let line = valid.iter().filter(|b| **b == b'\n').count() + 1;
            GrastateError::Damaged {
                path: path.to_path_buf(),
                line,
                message: format!("the file is not text (invalid UTF-8); {RECOVERY_HINT}"),
            }
        })?;
        GrastateFile::parse(&text, path).map(Some)
    }

    /// Replaces the file atomically: a temp file in the same directory,
    /// written and fsync'd, renamed over the old one, then the directory
    /// fsync'd so the rename itself survives a power loss. A crash at any
    /// point leaves either the old file or the new one, never a mix.
    pub fn write_atomic(&self, path: &Path) -> Result<(), GrastateError> {
        let io_err = |source: io::Error| GrastateError::Io {
            path: path.to_path_buf(),
            source,
        };
        if self.seqno < SEQNO_UNDEFINED {
            // Refuse to write what `parse` would call damaged.
            return Err(io_err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "refusing to write seqno {} (must be -1 or more)",
                    self.seqno
                ),
            )));
        }
        let dir = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let file_name = path.file_name().ok_or_else(|| {
            io_err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "path has no file name",
            ))
        })?;

        let (tmp_path, mut tmp) =
            create_temp(&dir, &file_name.to_string_lossy()).map_err(|source| {
                GrastateError::Io {
                    path: dir.clone(),
                    source,
                }
            })?;
        let written = tmp
            .write_all(self.render().as_bytes())
            .and_then(|()| tmp.sync_all())
            .and_then(|()| fs::rename(&tmp_path, path));
        drop(tmp);
        if let Err(e) = written {
            // Best effort: the temp file is garbage either way, and the
            // original error is the one worth reporting.
            let _ = fs::remove_file(&tmp_path);
            return Err(io_err(e));
        }
        File::open(&dir)
            .and_then(|d| d.sync_all())
            .map_err(|source| GrastateError::Io { path: dir, source })
    }
}

/// A fresh temp file next to the target. `create_new` never reuses a stale
/// temp file a crashed writer left behind.
fn create_temp(dir: &Path, base: &str) -> io::Result<(PathBuf, File)> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut last_err = None;
    for _ in 0..16 {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let tmp_path = dir.join(format!(".{base}.tmp.{}.{n}", std::process::id()));
        match OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o640)
            .open(&tmp_path)
        {
            Ok(f) => return Ok((tmp_path, f)),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => last_err = Some(e),
            Err(e) => return Err(e),
        }
    }
    Err(last_err.unwrap_or_else(|| io::Error::other("cannot create a temp file")))
}

/// Keeps error messages readable when the file holds binary junk.
fn shorten(s: &str) -> String {
    const MAX: usize = 60;
    if s.chars().count() <= MAX {
        s.to_string()
    } else {
        let head: String = s.chars().take(MAX).collect();
        format!("{head}…")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const EXAMPLE: &str = "# GALERA saved state
version: 2.1
uuid:    8348d5ea-5664-11e7-8628-262d8bf5ad3d
seqno:   -1
safe_to_bootstrap: 0
";

    fn example_uuid() -> Uuid {
        Uuid::parse_str("8348d5ea-5664-11e7-8628-262d8bf5ad3d").unwrap()
    }

    fn p() -> &'static Path {
        Path::new("/var/lib/quorate/grastate.dat")
    }

    fn damage(text: &str) -> (usize, String) {
        match GrastateFile::parse(text, p()) {
            Err(GrastateError::Damaged {
                path,
                line,
                message,
            }) => {
                assert_eq!(path, p());
                assert!(
                    message.contains("quorate --recover"),
                    "no hint in {message:?}"
                );
                (line, message)
            }
            other => panic!("expected Damaged for {text:?}, got {other:?}"),
        }
    }

    #[test]
    fn parses_the_galera_example() {
        let f = GrastateFile::parse(EXAMPLE, p()).unwrap();
        assert_eq!(
            f,
            GrastateFile {
                uuid: example_uuid(),
                seqno: -1,
                safe_to_bootstrap: false
            }
        );
    }

    #[test]
    fn renders_exactly_galeras_layout() {
        assert_eq!(GrastateFile::running(example_uuid()).render(), EXAMPLE);
        let stopped = GrastateFile::stopped(example_uuid(), 4, true).render();
        assert_eq!(
            stopped,
            "# GALERA saved state\nversion: 2.1\nuuid:    8348d5ea-5664-11e7-8628-262d8bf5ad3d\n\
             seqno:   4\nsafe_to_bootstrap: 1\n"
        );
    }

    #[test]
    fn helpers_set_what_they_say() {
        let f = GrastateFile::running(example_uuid()).with_safe_to_bootstrap(true);
        assert_eq!(f.seqno, -1);
        assert!(f.safe_to_bootstrap);
        assert!(!f.clone().with_safe_to_bootstrap(false).safe_to_bootstrap);
        let s = GrastateFile::stopped(example_uuid(), 17, false);
        assert_eq!((s.seqno, s.safe_to_bootstrap), (17, false));
    }

    #[test]
    fn tolerates_whitespace_comments_and_key_order() {
        let text = "\n  # GALERA saved state\n# a note\n\nseqno:12\r\n   uuid :   \
                    8348d5ea-5664-11e7-8628-262d8bf5ad3d   \nsafe_to_bootstrap:1\nversion:\t2.1";
        let f = GrastateFile::parse(text, p()).unwrap();
        assert_eq!(f, GrastateFile::stopped(example_uuid(), 12, true));
    }

    #[test]
    fn every_damage_is_reported_with_its_line() {
        let cases: &[(&str, usize, &str)] = &[
            ("", 1, "empty"),
            ("# GALERA saved state\n", 1, "empty"),
            ("# GALERA saved state\nversion: 2.1\nuuid:    8348d5ea-5664-11e7-8628-262d8bf5ad3d\n", 3, "`seqno:` is missing"),
            ("version: 2.1\nseqno: 1\nsafe_to_bootstrap: 0\n", 3, "`uuid:` is missing"),
            ("uuid: 8348d5ea-5664-11e7-8628-262d8bf5ad3d\nseqno: 1\nsafe_to_bootstrap: 0\n", 3, "`version:` is missing"),
            ("version: 2.1\nuuid: 8348d5ea-5664-11e7-8628-262d8bf5ad3d\nseqno: 1\n", 3, "`safe_to_bootstrap:` is missing"),
            ("version: 2.0\n", 1, "unsupported version \"2.0\""),
            ("version: 2.1\nuuid: 8348d5ea-5664-11e7-8628\n", 2, "bad uuid"),
            ("version: 2.1\nuuid: 8348d5ea5664-11e7-8628-262d8bf5ad3dxx\n", 2, "bad uuid"),
            ("version: 2.1\nuuid: {8348d5ea-5664-11e7-8628-262d8bf5ad3d}\n", 2, "bad uuid"),
            ("version: 2.1\nseqno: -2\n", 2, "bad seqno \"-2\""),
            ("version: 2.1\nseqno: 12abc\n", 2, "bad seqno"),
            ("version: 2.1\nseqno:\n", 2, "bad seqno"),
            ("version: 2.1\nseqno: 99999999999999999999\n", 2, "bad seqno"),
            ("safe_to_bootstrap: 2\n", 1, "bad safe_to_bootstrap \"2\""),
            ("safe_to_bootstrap: yes\n", 1, "bad safe_to_bootstrap"),
            ("safe_to_bootstrap: \n", 1, "bad safe_to_bootstrap"),
            ("version: 2.1\nversion: 2.1\n", 2, "`version:` appears twice"),
            ("seqno: 1\nseqno: 1\n", 2, "`seqno:` appears twice"),
            ("version: 2.1\ncolour: blue\n", 2, "unknown key \"colour\""),
            ("version: 2.1\nthis is not a key\n", 2, "expected `key: value`"),
            ("version: 2.1\n\u{0}\u{1}\u{2}\n", 2, "expected `key: value`"),
        ];
        for (text, want_line, want) in cases {
            let (line, message) = damage(text);
            assert_eq!(line, *want_line, "line for {text:?}: {message}");
            assert!(
                message.contains(want),
                "{text:?}: {message:?} lacks {want:?}"
            );
        }
    }

    #[test]
    fn truncated_file_is_damaged() {
        // Every cut before the final newline loses part of a key or value.
        for cut in 0..EXAMPLE.len() - 1 {
            let text = &EXAMPLE[..cut];
            assert!(
                GrastateFile::parse(text, p()).is_err(),
                "accepted truncated {text:?}"
            );
        }
        // Without the trailing newline the content is complete.
        assert!(GrastateFile::parse(&EXAMPLE[..EXAMPLE.len() - 1], p()).is_ok());
    }

    #[test]
    fn damage_message_names_the_path() {
        let err = GrastateFile::parse("seqno: x\n", p())
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("/var/lib/quorate/grastate.dat line 1: bad seqno"),
            "{err}"
        );
    }

    #[test]
    fn bootstrap_guard() {
        assert_eq!(check_bootstrap(None), Ok(()));
        let safe = GrastateFile::stopped(example_uuid(), 9, true);
        assert_eq!(check_bootstrap(Some(&safe)), Ok(()));
        let never_held_data = GrastateFile::stopped(Uuid::nil(), -1, false);
        assert_eq!(check_bootstrap(Some(&never_held_data)), Ok(()));
        let unsafe_ = GrastateFile::stopped(example_uuid(), 9, false);
        let refusal = check_bootstrap(Some(&unsafe_)).unwrap_err();
        assert_eq!(
            refusal,
            BootstrapRefusal {
                uuid: example_uuid(),
                seqno: 9
            }
        );
        assert!(refusal.to_string().contains("--force-safe-to-bootstrap"));
        assert!(refusal
            .banner()
            .contains("It is not safe to bootstrap this node"));
    }

    #[test]
    fn read_missing_file_is_none() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(
            GrastateFile::read(&dir.path().join("grastate.dat")).unwrap(),
            None
        );
    }

    #[test]
    fn read_reports_io_errors_and_binary_junk() {
        let dir = tempfile::tempdir().unwrap();
        // A directory where the file should be is an I/O error, not "missing".
        let as_dir = dir.path().join("grastate.dat");
        fs::create_dir(&as_dir).unwrap();
        assert!(matches!(
            GrastateFile::read(&as_dir),
            Err(GrastateError::Io { .. })
        ));

        let junk = dir.path().join("junk.dat");
        fs::write(&junk, b"version: 2.1\nuuid: \xff\xfe\n").unwrap();
        match GrastateFile::read(&junk) {
            Err(GrastateError::Damaged { line, message, .. }) => {
                assert_eq!(line, 2);
                assert!(message.contains("not text"), "{message}");
            }
            other => panic!("expected Damaged, got {other:?}"),
        }
    }

    #[test]
    fn write_atomic_round_trips_and_leaves_no_temp_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("grastate.dat");
        let first = GrastateFile::running(example_uuid());
        first.write_atomic(&path).unwrap();
        assert_eq!(fs::read_to_string(&path).unwrap(), EXAMPLE);
        let second = GrastateFile::stopped(example_uuid(), 1234, true);
        second.write_atomic(&path).unwrap();
        assert_eq!(GrastateFile::read(&path).unwrap(), Some(second));

        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(names, vec!["grastate.dat".to_string()]);

        use std::os::unix::fs::PermissionsExt;
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode & 0o007, 0, "world-accessible grastate.dat: {mode:o}");
    }

    #[test]
    fn failed_write_keeps_the_old_file_and_leaves_no_temp() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("grastate.dat");
        let old = GrastateFile::stopped(example_uuid(), 5, true);
        old.write_atomic(&path).unwrap();
        let bad = GrastateFile::stopped(example_uuid(), -7, false);
        assert!(matches!(
            bad.write_atomic(&path),
            Err(GrastateError::Io { .. })
        ));
        assert_eq!(GrastateFile::read(&path).unwrap(), Some(old));

        // Renaming a file over a directory fails after the temp file was made.
        let target = dir.path().join("sub");
        fs::create_dir(&target).unwrap();
        fs::write(target.join("x"), b"keep the directory non-empty").unwrap();
        assert!(GrastateFile::running(example_uuid())
            .write_atomic(&target)
            .is_err());
        let mut names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(names, vec!["grastate.dat".to_string(), "sub".to_string()]);
    }

    #[test]
    fn write_into_missing_directory_is_an_io_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nope").join("grastate.dat");
        let err = GrastateFile::running(example_uuid())
            .write_atomic(&path)
            .unwrap_err();
        assert!(matches!(err, GrastateError::Io { .. }), "{err}");
    }

    proptest! {
        #[test]
        fn parse_never_panics(text in ".{0,400}") {
            let _ = GrastateFile::parse(&text, p());
        }

        #[test]
        fn parse_never_panics_on_mangled_files(
            cut in 0usize..200,
            insert in "[\\PC\n:#]{0,12}",
        ) {
            let at = EXAMPLE.char_indices().map(|(i, _)| i).nth(cut % EXAMPLE.len()).unwrap_or(0);
            let text = format!("{}{insert}{}", &EXAMPLE[..at], &EXAMPLE[at..]);
            let _ = GrastateFile::parse(&text, p());
        }

        #[test]
        fn render_then_parse_round_trips(
            uuid in any::<u128>(),
            seqno in -1i64..=i64::MAX,
            safe in any::<bool>(),
        ) {
            let f = GrastateFile::stopped(Uuid::from_u128(uuid), seqno, safe);
            prop_assert_eq!(GrastateFile::parse(&f.render(), p()).unwrap(), f);
        }
    }
}
