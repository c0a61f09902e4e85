//! Which files a backup leaves out: the request's `ignore` lines, or the server's
//! `.pteroignore`, read with real gitignore semantics (the `ignore` crate's matcher) rather
//! than Wings' regex translation.

use std::fs::File;
use std::io::Read;
use std::os::fd::BorrowedFd;
use std::path::Path;

use ignore::gitignore::{Gitignore, GitignoreBuilder};
use rustix::fs::{openat, Mode, OFlags};
use rustix::io::Errno;

/// The largest `.pteroignore` read, as in Wings; a bigger one is skipped with a warning.
pub const PTEROIGNORE_MAX_BYTES: u64 = 32 * 1024;

/// The ignore file in a server's root.
pub const PTEROIGNORE: &str = ".pteroignore";

/// Compiled ignore rules for one backup.
pub struct IgnoreRules {
    matcher: Gitignore,
}

impl IgnoreRules {
    /// Rules from text: one gitignore pattern per line, CRLF tolerated. A pattern that does
    /// not compile is skipped with a warning naming its line.
    pub fn parse(text: &str) -> Self {
        let mut builder = GitignoreBuilder::new("");
        for (number, line) in text.lines().enumerate() {
            let line = line.strip_suffix('\r').unwrap_or(line);
            if let Err(err) = builder.add_line(None, line) {
                tracing::warn!(
                    line = number + 1,
                    pattern = line,
                    "ignoring a bad ignore pattern: {err}"
                );
            }
        }
        let matcher = builder.build().unwrap_or_else(|err| {
            tracing::warn!("ignore rules failed to compile, backing up everything: {err}");
            Gitignore::empty()
        });
        Self { matcher }
    }

    /// The rules for a backup of `root`: `request_ignore` when it has any pattern, otherwise
    /// the server's `.pteroignore` (never followed through a symlink), otherwise none.
    pub fn for_backup(root: BorrowedFd<'_>, request_ignore: &str) -> Self {
        if !request_ignore.trim().is_empty() {
            return Self::parse(request_ignore);
        }
        match read_pteroignore(root) {
            Ok(Some(text)) => Self::parse(&text),
            Ok(None) => Self::parse(""),
            Err(reason) => {
                tracing::warn!("not using {PTEROIGNORE}: {reason}; backing up everything");
                Self::parse("")
            }
        }
    }

    /// True when `relative` (a path inside the server root) is left out. An ignored
    /// directory is pruned whole, as in git.
    pub fn is_ignored(&self, relative: &Path, is_dir: bool) -> bool {
        self.matcher.matched(relative, is_dir).is_ignore()
    }
}

/// Reads `.pteroignore` in `root`: `None` if absent, an error if it is a symlink, not a
/// regular file, unreadable or too large.
fn read_pteroignore(root: BorrowedFd<'_>) -> Result<Option<String>, String> {
    let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC;
    let file = match openat(root, PTEROIGNORE, flags, Mode::empty()) {
        Ok(fd) => File::from(fd),
        Err(Errno::NOENT) => return Ok(None),
        Err(Errno::LOOP) => return Err("it is a symlink".into()),
        Err(e) => return Err(e.to_string()),
    };
    let metadata = file.metadata().map_err(|e| e.to_string())?;
    if !metadata.is_file() {
        return Err("it is not a regular file".into());
    }
    if metadata.len() > PTEROIGNORE_MAX_BYTES {
        return Err(format!(
            "it is {} bytes, over the {PTEROIGNORE_MAX_BYTES}-byte limit",
            metadata.len()
        ));
    }
    let mut text = String::new();
    file.take(PTEROIGNORE_MAX_BYTES)
        .read_to_string(&mut text)
        .map_err(|e| e.to_string())?;
    Ok(Some(text))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    /// (patterns, path, is_dir, ignored by git). File rows are re-checked against
    /// `git check-ignore` by `file_rows_agree_with_git`. Directory rows say whether git's
    /// walk prunes the directory: `cache/**` does not prune `cache` (git lists its files one
    /// by one, which is why `!cache/keep.txt` can re-include one), though `git check-ignore
    /// cache/` reports a match.
    const TABLE: &[(&str, &str, bool, bool)] = &[
        ("*.log", "latest.log", false, true),
        ("*.log", "logs/latest.log", false, true),
        ("*.log", "log.txt", false, false),
        ("*.log\n!keep.log", "keep.log", false, false),
        ("*.log\n!keep.log", "sub/keep.log", false, false),
        ("*.log\n!keep.log", "other.log", false, true),
        ("temp/", "temp", true, true),
        ("temp/", "temp", false, false),
        ("temp/", "a/temp", true, true),
        ("cache/**", "cache/x", false, true),
        ("cache/**", "cache/deep/x", false, true),
        ("cache/**", "cache", true, false),
        ("cache/**\n!cache/keep.txt", "cache/keep.txt", false, false),
        ("node_modules/", "web/node_modules", true, true),
        ("*.tmp", "x.tmp", false, true),
        ("/world", "world", true, true),
        ("/world", "sub/world", true, false),
        ("foo/bar", "x/foo/bar", false, false),
        ("foo/bar", "foo/bar", false, true),
        ("file?.txt", "file1.txt", false, true),
        ("file?.txt", "file10.txt", false, false),
        ("[ab].dat", "a.dat", false, true),
        ("[ab].dat", "c.dat", false, false),
        ("# comment\n\n*.bak", "x.bak", false, true),
        ("*.bak\r\n*.old\r\n", "x.old", false, true),
        ("\\#hash", "#hash", false, true),
        ("a/**/b", "a/x/y/b", false, true),
        ("**/plugins", "server/plugins", true, true),
        ("*.txt", "d.txt", true, true),
    ];

    #[test]
    fn patterns_behave_as_in_git() {
        for &(patterns, path, is_dir, ignored) in TABLE {
            let rules = IgnoreRules::parse(patterns);
            assert_eq!(
                rules.is_ignored(Path::new(path), is_dir),
                ignored,
                "patterns {patterns:?}, path {path:?} (dir: {is_dir})"
            );
        }
    }

    /// The table's file rows are git's own answer: ask git.
    #[test]
    fn file_rows_agree_with_git() {
        use std::process::Command;
        if Command::new("git").arg("--version").output().is_err() {
            return crate::test_skips::skip_visibly(
                "archive::ignore_rules::file_rows_agree_with_git",
                "git is not installed; the table's file rows were not re-checked",
            );
        }
        for &(patterns, path, _, ignored) in TABLE.iter().filter(|row| !row.2) {
            let repo = tempfile::tempdir().unwrap();
            let git = |args: &[&str]| {
                Command::new("git")
                    .args(args)
                    .current_dir(repo.path())
                    .output()
                    .unwrap()
            };
            git(&["init", "-q"]);
            std::fs::write(repo.path().join(".gitignore"), patterns).unwrap();
            let full = repo.path().join(path);
            std::fs::create_dir_all(full.parent().unwrap()).unwrap();
            std::fs::write(&full, "x").unwrap();
            let out = git(&["check-ignore", "-q", "--no-index", path]);
            assert_eq!(
                out.status.code() == Some(0),
                ignored,
                "git disagrees with the table on {patterns:?} / {path:?}"
            );
        }
    }

    #[test]
    fn the_request_wins_over_pteroignore_and_a_symlinked_one_is_not_followed() {
        let root = tempfile::tempdir().unwrap();
        std::fs::write(root.path().join(PTEROIGNORE), "*.log\n").unwrap();
        let from_file = IgnoreRules::for_backup(File::open(root.path()).unwrap().as_fd(), "");
        assert!(from_file.is_ignored(Path::new("a.log"), false));
        let from_request =
            IgnoreRules::for_backup(File::open(root.path()).unwrap().as_fd(), "*.txt");
        assert!(!from_request.is_ignored(Path::new("a.log"), false));
        assert!(from_request.is_ignored(Path::new("a.txt"), false));

        let elsewhere = tempfile::tempdir().unwrap();
        std::fs::write(elsewhere.path().join("rules"), "*.log\n").unwrap();
        std::fs::remove_file(root.path().join(PTEROIGNORE)).unwrap();
        std::os::unix::fs::symlink(
            elsewhere.path().join("rules"),
            root.path().join(PTEROIGNORE),
        )
        .unwrap();
        let through_link = IgnoreRules::for_backup(File::open(root.path()).unwrap().as_fd(), "");
        assert!(!through_link.is_ignored(Path::new("a.log"), false));
    }

    #[test]
    fn an_oversized_pteroignore_is_not_used() {
        let root = tempfile::tempdir().unwrap();
        let mut text = "*.log\n".to_string();
        text.push_str(&"#\n".repeat(PTEROIGNORE_MAX_BYTES as usize));
        std::fs::write(root.path().join(PTEROIGNORE), text).unwrap();
        let rules = IgnoreRules::for_backup(File::open(root.path()).unwrap().as_fd(), "");
        assert!(!rules.is_ignored(Path::new("a.log"), false));
    }
}
