//! The ignore-rules parser on hostile text (a server's `.pteroignore` or a request's
//! `ignore` lines): parsing and matching never panic, and matching is deterministic.
//!
//! The input is the rules, then optionally a NUL byte and newline-separated paths to match
//! besides a few fixed ones; each path is matched both as a file and as a directory.

#![no_main]

use std::path::Path;

use aerie::archive::IgnoreRules;
use libfuzzer_sys::fuzz_target;

/// Paths matched against every rule set, besides the input's own.
const FIXED_PATHS: &[&str] = &[
    "",
    ".",
    "..",
    "/",
    "a",
    "a/b/c.txt",
    "logs/latest.log",
    ".pteroignore",
    "world/region/r.0.0.mca",
    "/abs/path",
    "../up",
    "a//b/./c/../d",
    "dir/",
    "\u{e9}t\u{e9}/\u{1f600}",
];

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let (rules, paths) = text.split_once('\0').unwrap_or((&text, ""));
    let parsed = IgnoreRules::parse(rules);
    let again = IgnoreRules::parse(rules);
    for path in FIXED_PATHS.iter().copied().chain(paths.split('\n')) {
        for is_dir in [false, true] {
            let ignored = parsed.is_ignored(Path::new(path), is_dir);
            assert_eq!(
                ignored,
                again.is_ignored(Path::new(path), is_dir),
                "the same rules disagree on {path:?} (dir: {is_dir})"
            );
        }
    }
});
