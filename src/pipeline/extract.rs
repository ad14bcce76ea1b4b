//! The write stage of a restore: unpack one decoded tar partition into the destination.
//!
//! Entry names are WAL-G's (`/base/5/1259`) or relative (`base/5/1259`, remote and WAL-E
//! backups); both land below the destination, reached through [`Destination`], which
//! refuses a name that would climb out of it (`..`) or pass through a link the archive made. Files are written through one fixed buffer, chmodded to the header's mode and
//! handed to a [`FileSync`] (fsynced unless asked not to, `WALG_TAR_DISABLE_FSYNC`; writeback
//! starts while a file is still being written). Ownership and times are not
//! restored, as with WAL-G. After the archive's end marker only zeros may follow.
//!
//! Restoring a delta chain, an [`EntryPlan`] says per file whether the entry is written,
//! applied as an increment to the copy an earlier backup of the chain restored, or left out
//! (the newest backup no longer has the file).

use super::dest::{self, Destination, DirCache, refused};
use super::sync::FileSync;
use std::fs;
use std::io::{self, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// What one partition held.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Extracted {
    /// Regular files written.
    pub files: u64,
    /// Directories created.
    pub dirs: u64,
    /// Bytes of file data written.
    pub bytes: u64,
}

/// What becomes of a regular-file entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Written whole (created or truncated).
    Write,
    /// An increment stream, applied to the file already restored.
    Increment,
    /// Left out.
    Skip,
}

/// Decides, per regular-file entry name, what [`unpack`] does with it.
pub trait EntryPlan: Sync {
    /// The action for entry `name`.
    fn action(&self, name: &str) -> io::Result<Action>;
}

/// A full backup's plan: every entry is written.
pub struct WriteAll;

impl EntryPlan for WriteAll {
    fn action(&self, _name: &str) -> io::Result<Action> {
        Ok(Action::Write)
    }
}

/// Maps a tar entry name onto the destination; `None` for names that leave it.
pub fn target_path(dest: &Path, name: &str) -> Option<PathBuf> {
    let mut out = dest.to_path_buf();
    out.extend(dest::components(name)?);
    Some(out)
}

/// Written bytes after which a file's writeback is started, when the restore fsyncs: the
/// disk then works while the next megabytes are decompressed, and the fsync at the end of a
/// 1 GiB relation file waits for the last few megabytes instead of the whole file.
const FLUSH_AFTER: u64 = 8 << 20;

fn invalid(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg)
}

/// Unpacks the tar stream `archive` into `dest` as `plan` says, using `buf` (at least one
/// page) for file data.
pub fn unpack(
    archive: &mut dyn Read,
    dest: &Destination,
    buf: &mut [u8],
    sync: &dyn FileSync,
    plan: &dyn EntryPlan,
) -> io::Result<Extracted> {
    let mut unpacker = Unpacker {
        dest,
        buf: &mut *buf,
        sync,
        plan,
        dirs: DirCache::default(),
        stats: Extracted::default(),
    };
    {
        let mut reader = ::tar::Archive::new(&mut *archive);
        for entry in reader.entries()? {
            unpacker.entry(&mut entry?)?;
        }
    }
    let stats = unpacker.stats;
    expect_zeros(archive, buf)?;
    Ok(stats)
}

/// What every entry of one partition is written with.
struct Unpacker<'a> {
    dest: &'a Destination,
    buf: &'a mut [u8],
    sync: &'a dyn FileSync,
    plan: &'a dyn EntryPlan,
    dirs: DirCache,
    stats: Extracted,
}

impl Unpacker<'_> {
    /// Writes one entry below the destination, or refuses it.
    fn entry<R: Read>(&mut self, entry: &mut ::tar::Entry<'_, R>) -> io::Result<()> {
        let name = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        let comps = dest::components(&name)
            .ok_or_else(|| refused(format!("tar entry {name:?} points outside the destination")))?;
        let header = entry.header();
        let mode = header.mode().unwrap_or(0o600) & 0o7777;
        let kind = header.entry_type();
        if kind.is_dir() {
            self.dest.create_dir(&comps, mode, &mut self.dirs)?;
            self.stats.dirs += 1;
        } else if kind.is_symlink() || kind == ::tar::EntryType::Link {
            let link = entry
                .link_name_bytes()
                .map(|b| String::from_utf8_lossy(&b).into_owned())
                .ok_or_else(|| refused(format!("link {name} has no target")))?;
            if kind.is_symlink() {
                self.dest.symlink(&comps, &link, &mut self.dirs)?;
            } else {
                self.dest.hard_link(&comps, &link, &mut self.dirs)?;
            }
        } else if kind.is_file() || kind == ::tar::EntryType::Continuous {
            let written = match self.plan.action(&name)? {
                Action::Write => self.file(entry, &name, &comps, mode)?,
                Action::Increment => self.increment(entry, &name, &comps)?,
                Action::Skip => return Ok(()),
            };
            self.stats.files += 1;
            self.stats.bytes += written;
        } else if !matches!(
            kind,
            ::tar::EntryType::XHeader
                | ::tar::EntryType::XGlobalHeader
                | ::tar::EntryType::GNULongName
                | ::tar::EntryType::GNULongLink
        ) {
            // Devices, fifos and the like have no place in a data directory.
            return Err(refused(format!(
                "tar entry {name} is of a kind a backup never holds ({kind:?})"
            )));
        }
        Ok(())
    }

    /// Writes a regular file's data and hands the file to the sync stage; the bytes written.
    fn file<R: Read>(
        &mut self,
        entry: &mut ::tar::Entry<'_, R>,
        name: &str,
        comps: &[&str],
        mode: u32,
    ) -> io::Result<u64> {
        let target = self.dest.display(comps);
        let mut out = self.dest.create_file(comps, &mut self.dirs)?;
        let expected = entry.size();
        let mut written = 0u64;
        let mut flushed = 0u64;
        loop {
            let n = match entry.read(self.buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            out.write_all(&self.buf[..n])
                .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", target.display())))?;
            written += n as u64;
            if self.sync.durable() && written - flushed >= FLUSH_AFTER {
                crate::sys::start_writeback(&out, flushed, written - flushed);
                flushed = written;
            }
        }
        if written != expected {
            return Err(invalid(format!(
                "tar entry {name} ended after {written} of {expected} bytes"
            )));
        }
        // fchmod on the open file: no second path lookup.
        out.set_permissions(fs::Permissions::from_mode(mode))?;
        // A file that crossed FLUSH_AFTER has its tail's writeback started too; small
        // files are left to the fsync stage (one call fewer per file).
        if self.sync.durable() && flushed > 0 && written > flushed {
            crate::sys::start_writeback(&out, flushed, written - flushed);
        }
        self.sync.finished(out, &target)?;
        Ok(written)
    }
}

impl Unpacker<'_> {
    /// Applies an increment entry to the file an earlier backup restored; the bytes written.
    fn increment<R: Read>(
        &mut self,
        entry: &mut ::tar::Entry<'_, R>,
        name: &str,
        comps: &[&str],
    ) -> io::Result<u64> {
        let target = self.dest.display(comps);
        let out = self
            .dest
            .open_existing(comps, &mut self.dirs)
            .map_err(|e| {
                if e.kind() == io::ErrorKind::NotFound {
                    invalid(format!(
                        "{name}: the increment's file was not restored by the base backup"
                    ))
                } else {
                    e
                }
            })?;
        let len = entry.size();
        let written = super::increment::apply(entry, len, &out, self.buf)
            .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", target.display())))?;
        self.sync.finished(out, &target)?;
        Ok(written)
    }
}

/// WAL-G fails a partition with anything but zeros after the end marker.
fn expect_zeros(archive: &mut dyn Read, buf: &mut [u8]) -> io::Result<()> {
    loop {
        let n = match archive.read(buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if buf[..n].iter().any(|&b| b != 0) {
            return Err(invalid("data after the end of the tar archive".into()));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::sync::{NoSync, SyncNow};
    use super::*;
    use crate::format::tar::{END_OF_ARCHIVE, Header, Kind, encode, padding};

    fn archive(entries: &[(&str, Kind, &[u8])]) -> Vec<u8> {
        let mut out = Vec::new();
        for (name, kind, data) in entries {
            // A symlink's "data" is its target.
            let (link, data) = if *kind == Kind::Symlink {
                (String::from_utf8(data.to_vec()).unwrap(), &b""[..])
            } else {
                (String::new(), *data)
            };
            let h = Header {
                name: name.to_string(),
                kind: *kind,
                mode: if *kind == Kind::Dir { 0o700 } else { 0o600 },
                uid: 0,
                gid: 0,
                uname: String::new(),
                gname: String::new(),
                mtime: 0,
                size: data.len() as u64,
                link,
            };
            encode(&h, &mut out);
            out.extend_from_slice(data);
            out.extend(std::iter::repeat_n(0u8, padding(data.len() as u64)));
        }
        out.extend_from_slice(&END_OF_ARCHIVE);
        out
    }

    fn at(dir: &tempfile::TempDir) -> Destination {
        Destination::open(dir.path(), &[]).unwrap()
    }

    /// A hostile archive: nothing lands outside, the restore fails, and the failure is a
    /// refusal (not worth a retry).
    fn refuses(entries: &[(&str, Kind, &[u8])], outside: &Path) {
        let dest = tempfile::tempdir().unwrap();
        let a = archive(entries);
        let e = unpack(&mut &a[..], &at(&dest), &mut [0u8; 64], &NoSync, &WriteAll).unwrap_err();
        assert!(dest::is_refusal(&e), "{e}");
        assert_eq!(fs::read_dir(outside).unwrap().count(), 0, "{entries:?}");
    }

    #[test]
    fn links_cannot_lead_a_restore_outside() {
        let outside = tempfile::tempdir().unwrap();
        let o = outside.path().to_str().unwrap().as_bytes();
        // An absolute link, then a file through it.
        refuses(
            &[
                ("/escape_link", Kind::Symlink, o),
                ("/escape_link/pwned", Kind::File, b"x"),
            ],
            outside.path(),
        );
        // A relative link climbing out.
        refuses(
            &[(
                "/base/escape",
                Kind::Symlink,
                b"../../../../../../../../tmp",
            )],
            outside.path(),
        );
        // A link to a harmless name inside, then a file of the link's name: the file must
        // not be written through the link.
        let dest = tempfile::tempdir().unwrap();
        fs::write(dest.path().join("victim"), b"keep").unwrap();
        let a = archive(&[
            ("/ln", Kind::Symlink, b"victim"),
            ("/ln", Kind::File, b"overwritten"),
        ]);
        let e = unpack(&mut &a[..], &at(&dest), &mut [0u8; 64], &NoSync, &WriteAll).unwrap_err();
        assert!(dest::is_refusal(&e), "{e}");
        assert_eq!(fs::read(dest.path().join("victim")).unwrap(), b"keep");
        // A tablespace link from the archive.
        refuses(&[("/pg_tblspc/16384", Kind::Symlink, b"x")], outside.path());
        // WAL-G's quirk (a link named after itself) still restores.
        let dest = tempfile::tempdir().unwrap();
        let a = archive(&[("/self", Kind::Symlink, b"self")]);
        unpack(&mut &a[..], &at(&dest), &mut [0u8; 64], &NoSync, &WriteAll).unwrap();
        assert_eq!(
            fs::read_link(dest.path().join("self")).unwrap(),
            Path::new("self")
        );
    }

    #[test]
    fn unpacks_absolute_and_relative_names() {
        let dest = tempfile::tempdir().unwrap();
        let a = archive(&[
            ("/", Kind::Dir, b""),
            ("/base", Kind::Dir, b""),
            ("/base/1", Kind::File, b"one"),
            ("global/2", Kind::File, b"two"),
            ("backup_label", Kind::File, b"label"),
        ]);
        let s = unpack(&mut &a[..], &at(&dest), &mut [0u8; 7], &SyncNow, &WriteAll).unwrap();
        assert_eq!(
            s,
            Extracted {
                files: 3,
                dirs: 2,
                bytes: 11
            }
        );
        assert_eq!(fs::read(dest.path().join("base/1")).unwrap(), b"one");
        assert_eq!(fs::read(dest.path().join("global/2")).unwrap(), b"two");
        assert_eq!(
            fs::metadata(dest.path().join("base/1"))
                .unwrap()
                .permissions()
                .mode()
                & 0o777,
            0o600
        );
    }

    #[test]
    fn refuses_escapes_truncation_and_trailing_garbage() {
        let dest = tempfile::tempdir().unwrap();
        let bad = archive(&[("/../etc/x", Kind::File, b"x")]);
        assert!(
            unpack(
                &mut &bad[..],
                &at(&dest),
                &mut [0u8; 64],
                &NoSync,
                &WriteAll
            )
            .is_err()
        );
        let good = archive(&[("/f", Kind::File, &[5u8; 1000])]);
        let cut = &good[..800];
        assert!(
            unpack(
                &mut &cut[..],
                &at(&dest),
                &mut [0u8; 64],
                &NoSync,
                &WriteAll
            )
            .is_err(),
            "truncated"
        );
        let mut tail = good.clone();
        tail.extend_from_slice(b"junk");
        assert!(
            unpack(
                &mut &tail[..],
                &at(&dest),
                &mut [0u8; 64],
                &NoSync,
                &WriteAll
            )
            .is_err(),
            "garbage after end"
        );
        let mut zeros = good.clone();
        zeros.extend_from_slice(&[0u8; 4096]);
        assert!(
            unpack(
                &mut &zeros[..],
                &at(&dest),
                &mut [0u8; 64],
                &NoSync,
                &WriteAll
            )
            .is_ok()
        );
    }
}
