//! The directory a restore writes into, reached only through file descriptors that never
//! follow a link the archive made.
//!
//! A tar partition comes from storage, and whoever can write to the bucket can write the
//! partition. A symlink entry `/x -> /etc` followed by a file entry `/x/passwd` must not
//! write into `/etc`, and a file entry over an earlier symlink must not overwrite the link's
//! target. So every path is resolved one component at a time with `openat(O_NOFOLLOW)`
//! from the destination's own descriptor; a component that is a symlink is refused. The one
//! exception is `pg_tblspc/<name>` for the tablespaces of the backup's spec: those links are
//! made by the restore itself (from the sentinel or `--restore-spec`), and files below them
//! go to the tablespace's directory, as PostgreSQL expects.
//!
//! Symlink entries are still restored (WAL-G writes one for any symlink in the data
//! directory other than the tablespaces), but only with a relative target that stays inside
//! the destination and never under `pg_tblspc/`.

use rustix::fs::{AtFlags, Mode, OFlags};
use rustix::io::Errno;
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Component, Path, PathBuf};

/// A refusal that no retry can change: the archive asks for something unsafe. Carried inside
/// an `io::Error` of kind `InvalidData`; see [`is_refusal`].
#[derive(Debug)]
pub struct Refused(pub String);

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Refused {}

/// An `io::Error` that says the archive is refused.
pub fn refused(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, Refused(msg))
}

/// Whether `e` is a [`Refused`]: the same archive would be refused again.
pub fn is_refusal(e: &io::Error) -> bool {
    e.get_ref().is_some_and(|inner| inner.is::<Refused>())
}

/// The components of a tar entry name below the destination (`/` and `` are the root);
/// `None` when a component climbs out (`..`).
pub fn components(name: &str) -> Option<Vec<&str>> {
    let mut out = Vec::new();
    for c in Path::new(name.trim_start_matches('/')).components() {
        match c {
            Component::Normal(p) => out.push(p.to_str()?),
            Component::CurDir => {}
            _ => return None,
        }
    }
    Some(out)
}

/// The last directory a caller resolved, kept to save the walk for the next file of the
/// same folder (a tar lists a folder's files together). One per worker thread.
#[derive(Default)]
pub struct DirCache {
    parent: Vec<String>,
    fd: Option<OwnedFd>,
}

/// The restore's destination directory.
pub struct Destination {
    root: PathBuf,
    root_fd: OwnedFd,
    /// `pg_tblspc/<name>` links made from the spec, with their directories, opened once.
    tablespaces: Vec<(String, OwnedFd)>,
}

fn io_at(what: &Path, e: Errno) -> io::Error {
    let e = io::Error::from(e);
    io::Error::new(e.kind(), format!("{}: {e}", what.display()))
}

impl Destination {
    /// Opens `root` (which must exist) and the tablespace directories the restore linked as
    /// `pg_tblspc/<name>`.
    pub fn open(root: &Path, tablespaces: &[(String, PathBuf)]) -> io::Result<Destination> {
        let dir = |p: &Path| {
            rustix::fs::open(
                p,
                OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
                Mode::empty(),
            )
            .map_err(|e| io_at(p, e))
        };
        let mut spaces = Vec::new();
        for (name, loc) in tablespaces {
            spaces.push((name.clone(), dir(loc)?));
        }
        Ok(Destination {
            root: root.to_path_buf(),
            root_fd: dir(root)?,
            tablespaces: spaces,
        })
    }

    /// Where an entry lands, for messages and the fsync stage's reports.
    pub fn display(&self, comps: &[&str]) -> PathBuf {
        let mut p = self.root.clone();
        p.extend(comps);
        p
    }

    fn tablespace(&self, name: &str) -> Option<BorrowedFd<'_>> {
        self.tablespaces
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, fd)| fd.as_fd())
    }

    /// Whether `comps` names one of the spec's tablespace links itself.
    pub fn is_tablespace_link(&self, comps: &[&str]) -> bool {
        matches!(comps, ["pg_tblspc", name] if self.tablespace(name).is_some())
    }

    /// Opens the directory `comps` (creating missing folders with mode 0750), refusing any
    /// component that is a symlink, except the spec's tablespace links.
    fn walk(&self, comps: &[&str]) -> io::Result<OwnedFd> {
        let (start, rest) = match comps {
            ["pg_tblspc", name, rest @ ..] if self.tablespace(name).is_some() => {
                (self.tablespace(name).expect("checked"), rest)
            }
            _ => (self.root_fd.as_fd(), comps),
        };
        let mut cur = start.try_clone_to_owned()?;
        let done = comps.len() - rest.len();
        for (i, c) in rest.iter().enumerate() {
            cur = self.open_or_make_dir(cur.as_fd(), c, &comps[..done + i + 1])?;
        }
        Ok(cur)
    }

    fn open_or_make_dir(
        &self,
        at: BorrowedFd<'_>,
        name: &str,
        so_far: &[&str],
    ) -> io::Result<OwnedFd> {
        let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        match rustix::fs::openat(at, name, flags, Mode::empty()) {
            Ok(fd) => Ok(fd),
            Err(Errno::NOENT) => {
                match rustix::fs::mkdirat(at, name, Mode::from_raw_mode(0o750)) {
                    Ok(()) | Err(Errno::EXIST) => {}
                    Err(e) => return Err(io_at(&self.display(so_far), e)),
                }
                rustix::fs::openat(at, name, flags, Mode::empty())
                    .map_err(|e| self.not_a_dir(so_far, e))
            }
            Err(e) => Err(self.not_a_dir(so_far, e)),
        }
    }

    fn not_a_dir(&self, so_far: &[&str], e: Errno) -> io::Error {
        if e == Errno::LOOP || e == Errno::NOTDIR {
            refused(format!(
                "{} is a symbolic link or a file, not a folder: the archive would write through it",
                so_far.join("/")
            ))
        } else {
            io_at(&self.display(so_far), e)
        }
    }

    /// The parent folder of `comps`, through `cache`.
    fn parent<'c>(&self, comps: &[&str], cache: &'c mut DirCache) -> io::Result<BorrowedFd<'c>> {
        let parent = &comps[..comps.len() - 1];
        if cache.fd.is_none()
            || cache
                .parent
                .iter()
                .map(String::as_str)
                .ne(parent.iter().copied())
        {
            cache.fd = Some(self.walk(parent)?);
            cache.parent = parent.iter().map(|s| s.to_string()).collect();
        }
        Ok(cache.fd.as_ref().expect("set above").as_fd())
    }

    /// Creates or truncates the regular file `comps` (mode 0600 until the caller sets the
    /// header's); an existing symlink there is refused, not followed.
    pub fn create_file(&self, comps: &[&str], cache: &mut DirCache) -> io::Result<File> {
        let flags =
            OFlags::WRONLY | OFlags::CREATE | OFlags::TRUNC | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        self.open_file(comps, flags, cache)
    }

    /// Opens the regular file `comps` an earlier backup of a delta chain restored, for an
    /// increment to be applied to it; a missing file is an error, a symlink is refused.
    pub fn open_existing(&self, comps: &[&str], cache: &mut DirCache) -> io::Result<File> {
        self.open_file(
            comps,
            OFlags::RDWR | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            cache,
        )
    }

    fn open_file(&self, comps: &[&str], flags: OFlags, cache: &mut DirCache) -> io::Result<File> {
        let Some(last) = comps.last() else {
            return Err(refused("a file entry names the destination itself".into()));
        };
        let at = self.parent(comps, cache)?;
        match rustix::fs::openat(at, *last, flags, Mode::from_raw_mode(0o600)) {
            Ok(fd) => Ok(File::from(fd)),
            Err(Errno::LOOP) => Err(refused(format!(
                "{} is a symbolic link: the archive would write through it",
                comps.join("/")
            ))),
            Err(e) => Err(io_at(&self.display(comps), e)),
        }
    }

    /// Creates the folder `comps` if missing and sets its mode.
    pub fn create_dir(&self, comps: &[&str], mode: u32, cache: &mut DirCache) -> io::Result<()> {
        let mode = Mode::from_raw_mode(mode);
        if comps.is_empty() {
            return rustix::fs::fchmod(&self.root_fd, mode).map_err(|e| io_at(&self.root, e));
        }
        if self.is_tablespace_link(comps) {
            // The tablespace's own directory: made and owned by the restore's spec.
            return Ok(());
        }
        let at = self.parent(comps, cache)?;
        let last = comps[comps.len() - 1];
        let fd = self.open_or_make_dir(at, last, comps)?;
        rustix::fs::fchmod(&fd, mode).map_err(|e| io_at(&self.display(comps), e))
    }

    /// Creates the symlink `comps -> target`, replacing a file or link of that name. Only a
    /// relative target that stays inside the destination, outside `pg_tblspc/`, is accepted.
    pub fn symlink(&self, comps: &[&str], target: &str, cache: &mut DirCache) -> io::Result<()> {
        let name = comps.join("/");
        if comps.first() == Some(&"pg_tblspc") {
            return Err(refused(format!(
                "symbolic link {name}: tablespace links are made from the backup's spec, not from the archive"
            )));
        }
        if comps.is_empty() || !link_stays_inside(comps, target) {
            return Err(refused(format!(
                "symbolic link {name} -> {target} points outside the destination"
            )));
        }
        let at = self.parent(comps, cache)?;
        let last = comps[comps.len() - 1];
        match rustix::fs::unlinkat(at, last, AtFlags::empty()) {
            Ok(()) | Err(Errno::NOENT) => {}
            Err(e) => return Err(io_at(&self.display(comps), e)),
        }
        rustix::fs::symlinkat(target, at, last).map_err(|e| io_at(&self.display(comps), e))
    }

    /// Creates the hard link `comps` to the earlier entry `source`, both inside the
    /// destination; neither is followed if it is a symlink.
    pub fn hard_link(&self, comps: &[&str], source: &str, cache: &mut DirCache) -> io::Result<()> {
        let name = comps.join("/");
        let src = components(source)
            .filter(|s| !s.is_empty())
            .ok_or_else(|| {
                refused(format!(
                    "hard link {name} -> {source} leaves the destination"
                ))
            })?;
        if comps.is_empty() {
            return Err(refused(
                "a hard link entry names the destination itself".into(),
            ));
        }
        let mut src_cache = DirCache::default();
        let src_at = self
            .parent(&src, &mut src_cache)
            .map_err(|e| io::Error::new(e.kind(), format!("hard link {name} -> {source}: {e}")))?;
        let at = self.parent(comps, cache)?;
        let last = comps[comps.len() - 1];
        match rustix::fs::unlinkat(at, last, AtFlags::empty()) {
            Ok(()) | Err(Errno::NOENT) => {}
            Err(e) => return Err(io_at(&self.display(comps), e)),
        }
        rustix::fs::linkat(src_at, src[src.len() - 1], at, last, AtFlags::empty()).map_err(|e| {
            let e = io::Error::from(e);
            io::Error::new(
                e.kind(),
                format!("hard link {name} -> {source}: {e} (the link's source must come earlier in the same partition)"),
            )
        })
    }
}

/// Whether a relative symlink target, read from the link's own folder, stays inside the
/// destination without passing through `pg_tblspc/` (whose links lead elsewhere).
fn link_stays_inside(comps: &[&str], target: &str) -> bool {
    if target.is_empty() || target.starts_with('/') {
        return false;
    }
    let mut at: Vec<&str> = comps[..comps.len() - 1].to_vec();
    for c in target.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                if at.pop().is_none() {
                    return false;
                }
            }
            other => at.push(other),
        }
        if at.first() == Some(&"pg_tblspc") {
            return false;
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_targets() {
        assert!(link_stays_inside(&["a", "link"], "b"));
        assert!(link_stays_inside(&["a", "link"], "../c/d"));
        assert!(
            link_stays_inside(&["link"], "link"),
            "WAL-G's own-name quirk"
        );
        assert!(!link_stays_inside(&["link"], "/etc"));
        assert!(!link_stays_inside(&["link"], "../x"));
        assert!(!link_stays_inside(&["a", "link"], "../../x"));
        assert!(!link_stays_inside(
            &["a", "link"],
            "../pg_tblspc/16384/../../x"
        ));
        assert!(!link_stays_inside(&["a", "link"], ""));
    }

    #[test]
    fn names() {
        assert_eq!(components("/base/1/2"), Some(vec!["base", "1", "2"]));
        assert_eq!(components("base/./1"), Some(vec!["base", "1"]));
        assert_eq!(components("/"), Some(vec![]));
        assert_eq!(components("/a/../b"), None);
    }

    #[test]
    fn never_writes_through_a_link() {
        let dest = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(outside.path(), dest.path().join("planted")).unwrap();
        let d = Destination::open(dest.path(), &[]).unwrap();
        let mut cache = DirCache::default();
        let e = d
            .create_file(&["planted", "pwned"], &mut cache)
            .unwrap_err();
        assert!(is_refusal(&e), "{e}");
        let e = d.create_file(&["planted"], &mut cache).unwrap_err();
        assert!(is_refusal(&e), "{e}");
        let e = d
            .create_dir(&["planted", "sub"], 0o700, &mut cache)
            .unwrap_err();
        assert!(is_refusal(&e), "{e}");
        assert_eq!(std::fs::read_dir(outside.path()).unwrap().count(), 0);
    }

    #[test]
    fn tablespace_links_are_followed() {
        let dest = tempfile::tempdir().unwrap();
        let ts = tempfile::tempdir().unwrap();
        std::fs::create_dir(dest.path().join("pg_tblspc")).unwrap();
        std::os::unix::fs::symlink(ts.path(), dest.path().join("pg_tblspc/16384")).unwrap();
        let d =
            Destination::open(dest.path(), &[("16384".into(), ts.path().to_path_buf())]).unwrap();
        let mut cache = DirCache::default();
        d.create_file(&["pg_tblspc", "16384", "PG_15", "5", "1"], &mut cache)
            .unwrap();
        assert!(ts.path().join("PG_15/5/1").is_file());
        d.create_dir(&["pg_tblspc", "16384"], 0o700, &mut cache)
            .unwrap();
        // A tablespace link the spec does not name is not followed.
        std::os::unix::fs::symlink(ts.path(), dest.path().join("pg_tblspc/99")).unwrap();
        let e = d
            .create_file(&["pg_tblspc", "99", "x"], &mut cache)
            .unwrap_err();
        assert!(is_refusal(&e), "{e}");
    }
}
