//! Records the git commit the binary is built from, for `depot --version`: `DEPOT_GIT_COMMIT` if
//! set, else `git rev-parse`; `unknown` outside a git checkout (a source tarball) or without git.

use std::path::PathBuf;
use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok().filter(|out| out.status.success())?;
    let text = String::from_utf8(out.stdout).ok()?.trim().to_owned();
    (!text.is_empty()).then_some(text)
}

fn main() {
    // A build without the git dir (a container build whose context leaves out .git) passes the
    // commit in DEPOT_GIT_COMMIT.
    let given = std::env::var("DEPOT_GIT_COMMIT").ok().filter(|c| !c.trim().is_empty());
    let commit = given.or_else(|| git(&["rev-parse", "--short", "HEAD"])).unwrap_or_else(|| "unknown".to_owned());
    println!("cargo:rustc-env=DEPOT_GIT_COMMIT={commit}");
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=DEPOT_GIT_COMMIT");
    // A commit moves HEAD, or the branch HEAD names (a loose ref, or packed-refs after a gc). In a
    // worktree HEAD lives in its own git dir and the refs in the common one. Only paths that
    // exist are watched: cargo would rerun this script on every build for a missing one.
    let mut watched: Vec<PathBuf> = Vec::new();
    if let Some(dir) = git(&["rev-parse", "--git-dir"]) {
        watched.push(PathBuf::from(dir).join("HEAD"));
    }
    if let Some(common) = git(&["rev-parse", "--git-common-dir"]) {
        let common = PathBuf::from(common);
        if let Some(branch) = git(&["symbolic-ref", "-q", "HEAD"]) {
            watched.push(common.join(branch));
        }
        watched.push(common.join("packed-refs"));
    }
    for path in watched.iter().filter(|p| p.exists()) {
        println!("cargo:rerun-if-changed={}", path.display());
    }
}
