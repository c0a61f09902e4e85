//! Publishing a file atomically: written under a temporary name, fsynced, then given its
//! final name without ever replacing a file already there, and the directory fsynced, so a
//! file under its final name is always whole, even after a power cut. Every step works
//! relative to the directory's descriptor, opened once.

use std::fs::File;
use std::io::{self, Write};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use rustix::fs::{
    fsync, linkat, openat, renameat_with, unlinkat, AtFlags, Mode, OFlags, RenameFlags, CWD,
};
use rustix::io::Errno;

/// Files hold a server's data: only the daemon's user may read them.
const FILE_MODE: u32 = 0o600;

/// A file being written under a temporary name (`.<name>.partial`) in a directory, until
/// [`AtomicFile::publish`] gives it its final name. Dropped (or [`AtomicFile::discard`]ed)
/// before that, it removes the temporary file: nothing is left behind.
pub struct AtomicFile {
    /// The directory, opened once; every name below is relative to it.
    directory: OwnedFd,
    /// The directory's path, for messages.
    directory_path: PathBuf,
    /// The final name.
    name: String,
    /// The temporary name.
    temp_name: String,
    /// The open temporary file; `None` once it is closed for publishing.
    file: Option<File>,
    /// True while the temporary name exists and is ours to remove.
    pending: bool,
}

impl AtomicFile {
    /// Creates (or truncates) the temporary file for `name` in `directory`, mode 0600.
    /// `name` must be one path segment (see [`crate::helpers::backup_segment`]).
    pub fn create(directory: &Path, name: &str) -> io::Result<Self> {
        check_name(name)?;
        let dir = openat(
            CWD,
            directory,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        let temp_name = Self::temp_name(name);
        let fd = openat(
            &dir,
            temp_name.as_str(),
            OFlags::WRONLY | OFlags::CREATE | OFlags::TRUNC | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_raw_mode(FILE_MODE),
        )?;
        Ok(Self {
            directory: dir,
            directory_path: directory.to_path_buf(),
            name: name.to_string(),
            temp_name,
            file: Some(File::from(fd)),
            pending: true,
        })
    }

    /// The temporary name a file called `name` is written under.
    pub fn temp_name(name: &str) -> String {
        format!(".{name}.partial")
    }

    /// Removes the temporary file a crashed writer of `name` left in `directory`; `Ok(false)`
    /// when there was none. For [`crate::Adapter::discard_incomplete`].
    pub fn remove_leftover(directory: &Path, name: &str) -> io::Result<bool> {
        check_name(name)?;
        match std::fs::remove_file(directory.join(Self::temp_name(name))) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// The final path, as the file will be known once published.
    pub fn final_path(&self) -> PathBuf {
        self.directory_path.join(&self.name)
    }

    /// Bytes written so far.
    pub fn len(&self) -> io::Result<u64> {
        Ok(self.open_file()?.metadata()?.len())
    }

    /// Whether nothing was written yet.
    pub fn is_empty(&self) -> io::Result<bool> {
        Ok(self.len()? == 0)
    }

    /// fsyncs the file, gives it its final name (refused with `AlreadyExists`, and the
    /// temporary file removed, when a file of that name exists), then drops the temporary
    /// name and fsyncs the directory. Once the final name exists the file is published:
    /// a failure to tidy up after that is logged, not returned. Returns the final path.
    pub fn publish(mut self) -> io::Result<PathBuf> {
        let file = self
            .file
            .take()
            .ok_or_else(|| io::Error::other("already closed"))?;
        file.sync_all()?;
        drop(file);
        let (dir, temp, name) = (&self.directory, self.temp_name.as_str(), self.name.as_str());
        match linkat(dir, temp, dir, name, AtFlags::empty()) {
            Ok(()) => {
                if let Err(err) = unlinkat(dir, temp, AtFlags::empty()) {
                    tracing::warn!(path = %self.final_path().display(), "published, but the temporary name stays: {err}");
                }
            }
            // File systems without hard links: a rename that refuses to replace.
            Err(Errno::PERM | Errno::OPNOTSUPP | Errno::MLINK) => {
                renameat_with(dir, temp, dir, name, RenameFlags::NOREPLACE)?
            }
            Err(err) => return Err(err.into()),
        }
        self.pending = false;
        if let Err(err) = fsync(&self.directory) {
            tracing::warn!(path = %self.final_path().display(), "published, but fsyncing the directory failed: {err}");
        }
        Ok(self.final_path())
    }

    /// Removes the temporary file; what [`Drop`] does, with its error reported.
    pub fn discard(mut self) -> io::Result<()> {
        self.remove_temp()
    }

    fn remove_temp(&mut self) -> io::Result<()> {
        self.file = None;
        if !std::mem::take(&mut self.pending) {
            return Ok(());
        }
        match unlinkat(&self.directory, self.temp_name.as_str(), AtFlags::empty()) {
            Ok(()) | Err(Errno::NOENT) => Ok(()),
            Err(err) => Err(err.into()),
        }
    }

    fn open_file(&self) -> io::Result<&File> {
        self.file
            .as_ref()
            .ok_or_else(|| io::Error::other("already closed"))
    }
}

impl Write for AtomicFile {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        match self.file.as_mut() {
            Some(file) => file.write(bytes),
            None => Err(io::Error::other("already closed")),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self.file.as_mut() {
            Some(file) => file.flush(),
            None => Ok(()),
        }
    }
}

impl Drop for AtomicFile {
    fn drop(&mut self) {
        if let Err(err) = self.remove_temp() {
            tracing::warn!(directory = %self.directory_path.display(), name = %self.temp_name, "cannot remove a discarded file: {err}");
        }
    }
}

/// A name must be one segment of a path: no `/`, not `.` or `..`, no NUL.
fn check_name(name: &str) -> io::Result<()> {
    if name.is_empty() || name == "." || name == ".." || name.contains(['/', '\0']) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{name:?} is not a file name"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        names
    }

    fn temp_dir(test: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("aerie-publish-{test}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn a_file_appears_under_its_name_only_when_published() {
        let dir = temp_dir("publish");
        let mut file = AtomicFile::create(&dir, "a.tar.gz").unwrap();
        file.write_all(b"whole").unwrap();
        assert_eq!(names(&dir), [".a.tar.gz.partial"]);
        assert_eq!(file.publish().unwrap(), dir.join("a.tar.gz"));
        assert_eq!(names(&dir), ["a.tar.gz"]);
        assert_eq!(std::fs::read(dir.join("a.tar.gz")).unwrap(), b"whole");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn publishing_never_replaces_a_file_and_leaves_no_temporary_file() {
        let dir = temp_dir("exists");
        std::fs::write(dir.join("a.tar.gz"), b"first").unwrap();
        let mut file = AtomicFile::create(&dir, "a.tar.gz").unwrap();
        file.write_all(b"second").unwrap();
        let err = file.publish().unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AlreadyExists, "{err}");
        assert_eq!(names(&dir), ["a.tar.gz"]);
        assert_eq!(std::fs::read(dir.join("a.tar.gz")).unwrap(), b"first");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_dropped_or_discarded_file_leaves_nothing() {
        let dir = temp_dir("drop");
        let mut file = AtomicFile::create(&dir, "a").unwrap();
        file.write_all(b"half").unwrap();
        drop(file);
        let mut file = AtomicFile::create(&dir, "b").unwrap();
        file.write_all(b"half").unwrap();
        file.discard().unwrap();
        assert!(names(&dir).is_empty(), "{:?}", names(&dir));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_leftover_is_removed_and_names_that_leave_the_directory_are_refused() {
        let dir = temp_dir("leftover");
        let file = AtomicFile::create(&dir, "a").unwrap();
        std::mem::forget(file);
        assert!(AtomicFile::remove_leftover(&dir, "a").unwrap());
        assert!(!AtomicFile::remove_leftover(&dir, "a").unwrap());
        for bad in ["", ".", "..", "../a", "a/b"] {
            let err = AtomicFile::create(&dir, bad).err().expect(bad);
            assert_eq!(err.kind(), io::ErrorKind::InvalidInput, "{bad:?}");
        }
        assert!(names(&dir).is_empty());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
