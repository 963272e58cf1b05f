//! Records the git commit the crate was built from (`TIMECARD_BUILD`), for
//! the lineage of captured exchanges; "unknown" outside a git checkout.

use std::path::Path;
use std::process::Command;

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let git = root.join(".git");
    // Rebuild when a commit moves HEAD (not on every edit).
    for p in ["HEAD", "packed-refs"] {
        println!("cargo:rerun-if-changed={}", git.join(p).display());
    }
    if let Ok(head) = std::fs::read_to_string(git.join("HEAD"))
        && let Some(r) = head.trim().strip_prefix("ref: ")
    {
        println!("cargo:rerun-if-changed={}", git.join(r).display());
    }
    println!("cargo:rerun-if-env-changed=TIMECARD_BUILD");
    let build = std::env::var("TIMECARD_BUILD").ok().or_else(|| {
        Command::new("git")
            .arg("-C")
            .arg(&root)
            .args(["rev-parse", "--short=12", "HEAD"])
            .output()
            .ok()
            .filter(|o| o.status.success())
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .map(|s| s.trim().to_owned())
    });
    println!(
        "cargo:rustc-env=TIMECARD_BUILD={}",
        build.unwrap_or_else(|| "unknown".into())
    );
}
