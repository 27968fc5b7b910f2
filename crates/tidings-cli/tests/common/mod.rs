//! Shared by the CLI tests: the Library example's files copied into a temporary folder
//! (so a test can break them), JSON edits, and the `tidings` binary.

#![allow(dead_code, unreachable_pub)]

pub mod brokers;

use std::path::{Path, PathBuf};

use assert_cmd::Command;
use serde_json::Value;

/// The Library example: catalog/, tidings.toml, tidings.lock.
pub fn library() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/library")
}

/// The `tidings` binary, run in `dir`.
pub fn tidings(dir: &Path) -> Command {
    let mut cmd = Command::cargo_bin("tidings").expect("the tidings binary is built");
    cmd.current_dir(dir);
    cmd
}

/// What a run printed and how it ended.
#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    /// The stdout lines that start with `prefix` (e.g. `error[`).
    pub fn lines(&self, prefix: &str) -> Vec<&str> {
        self.stdout
            .lines()
            .filter(|l| l.starts_with(prefix))
            .collect()
    }
}

/// Run `tidings args...` in `dir`.
pub fn run(dir: &Path, args: &[&str]) -> Run {
    let out = tidings(dir).args(args).output().expect("tidings runs");
    let run = Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8(out.stdout).unwrap(),
        stderr: String::from_utf8(out.stderr).unwrap(),
    };
    assert!(
        !run.stderr.contains("panicked"),
        "tidings {args:?} panicked: {}",
        run.stderr
    );
    run
}

/// A copy of the Library's workspace files in a fresh temporary folder.
pub fn library_copy() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let src = library();
    std::fs::create_dir(dir.path().join("catalog")).unwrap();
    for entry in std::fs::read_dir(src.join("catalog")).unwrap() {
        let path = entry.unwrap().path();
        std::fs::copy(
            &path,
            dir.path().join("catalog").join(path.file_name().unwrap()),
        )
        .unwrap();
    }
    for file in ["tidings.toml", "tidings.lock"] {
        std::fs::copy(src.join(file), dir.path().join(file)).unwrap();
    }
    dir
}

/// Edit `catalog/<service>.json` in `dir` as JSON.
pub fn edit_catalog(dir: &Path, service: &str, edit: impl FnOnce(&mut Value)) {
    let path = dir.join("catalog").join(format!("{service}.json"));
    let mut value: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    edit(&mut value);
    std::fs::write(&path, serde_json::to_string_pretty(&value).unwrap()).unwrap();
}

/// Edit `tidings.toml` in `dir` as text.
pub fn edit_manifest(dir: &Path, edit: impl FnOnce(String) -> String) {
    let path = dir.join("tidings.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, edit(text)).unwrap();
}

/// Lending's published `lending.book-borrowed` in a catalog document.
pub fn published_borrowed(lending: &mut Value) -> &mut Value {
    &mut lending["publishes"][0]["events"][0]
}

/// Catalog's handled `lending.book-borrowed` in a catalog document.
pub fn handled_borrowed(catalog: &mut Value) -> &mut Value {
    &mut catalog["subscriptions"][0]["handles"][0]
}
