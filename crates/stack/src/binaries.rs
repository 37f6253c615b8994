//! Finding the service binaries: next to the stack's own executable (one
//! target dir), in `--bin-dir`, or — for tests and benchmarks, whose
//! executables live in `target/<profile>/deps` — built on demand with the
//! cargo that runs them.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::time::SystemTime;

use crate::error::{Result, StackError};
use crate::service::ServiceName;

/// Set to a folder to use prebuilt binaries from there instead of building.
pub const BIN_DIR_ENV: &str = "SWITCHBOARD_STACK_BIN_DIR";

/// The folder holding the running executable, or its parent when it is a
/// test or bench binary in `target/<profile>/deps`.
pub fn default_bin_dir() -> Result<PathBuf> {
    let exe = std::env::current_exe()
        .map_err(|e| StackError::io("locating the running executable", e))?;
    let dir = exe.parent().unwrap_or(Path::new("/")).to_path_buf();
    if dir.file_name().is_some_and(|name| name == "deps")
        && let Some(parent) = dir.parent()
    {
        return Ok(parent.to_path_buf());
    }
    Ok(dir)
}

/// The path of `service`'s binary in `dir`, checked to exist.
pub fn service_binary(dir: &Path, service: ServiceName) -> Result<PathBuf> {
    let binary = dir.join(service.binary_name());
    if binary.is_file() {
        Ok(binary)
    } else {
        Err(StackError::MissingBinary {
            binary,
            dir: dir.to_path_buf(),
        })
    }
}

/// For tests and benchmarks: `$SWITCHBOARD_STACK_BIN_DIR` if set; else the
/// profile folder of the running test binary, after building the six service
/// binaries there (`cargo build -p switchboard-<svc> --bins`) if one is
/// missing or older than a source file of the workspace. Builds at most once
/// per process.
///
/// Binaries that are already fresh are not rebuilt on purpose: a `cargo
/// build` of just these packages unifies dependency features differently from
/// the `cargo test --workspace` that runs us, and would relink (or recompile)
/// what that run just built.
pub fn build_service_binaries() -> Result<PathBuf> {
    static BUILT: Mutex<Option<PathBuf>> = Mutex::new(None);
    if let Some(dir) = std::env::var_os(BIN_DIR_ENV) {
        return Ok(PathBuf::from(dir));
    }
    let mut built = BUILT.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(dir) = built.as_ref() {
        return Ok(dir.clone());
    }
    let profile_dir = default_bin_dir()?;
    if binaries_are_fresh(&profile_dir) {
        *built = Some(profile_dir.clone());
        return Ok(profile_dir);
    }
    let mut command = Command::new(cargo());
    command.arg("build").arg("--quiet");
    // What cargo sets for the test running us, not for a build: ring's build
    // script watches CARGO_MANIFEST_DIR, so inheriting it would make this
    // build and the next `cargo test` rebuild ring and its dependents by turns.
    for (name, _) in std::env::vars_os() {
        let name = name.to_string_lossy();
        if matches!(
            &*name,
            "CARGO_MANIFEST_DIR"
                | "CARGO_MANIFEST_PATH"
                | "CARGO_CRATE_NAME"
                | "CARGO_PRIMARY_PACKAGE"
                | "CARGO_TARGET_TMPDIR"
        ) || name.starts_with("CARGO_PKG_")
            || name.starts_with("CARGO_BIN_EXE_")
        {
            command.env_remove(&*name);
        }
    }
    for service in ServiceName::ALL {
        command.arg("-p").arg(format!("switchboard-{service}"));
    }
    command.arg("--bins");
    if let (Some(profile), Some(target_dir)) = (
        profile_dir.file_name().and_then(|name| name.to_str()),
        profile_dir.parent(),
    ) {
        match profile {
            "debug" => {}
            "release" => {
                command.arg("--release");
            }
            other => {
                command.arg("--profile").arg(other);
            }
        }
        command.arg("--target-dir").arg(target_dir);
    }
    let rendered = format!("{command:?}");
    let output = command
        .output()
        .map_err(|e| StackError::io(format!("running {rendered}"), e))?;
    if !output.status.success() {
        return Err(StackError::Build {
            command: rendered,
            output: String::from_utf8_lossy(&output.stderr).into_owned(),
        });
    }
    for service in ServiceName::ALL {
        service_binary(&profile_dir, service)?;
    }
    *built = Some(profile_dir.clone());
    Ok(profile_dir)
}

/// Whether all six binaries exist in `dir` and none is older than the newest
/// file of the workspace's sources (`crates/`, `proto/`, the manifests).
fn binaries_are_fresh(dir: &Path) -> bool {
    let mut oldest_binary = None;
    for service in ServiceName::ALL {
        let Ok(modified) = dir
            .join(service.binary_name())
            .metadata()
            .and_then(|meta| meta.modified())
        else {
            return false;
        };
        oldest_binary =
            Some(oldest_binary.map_or(modified, |oldest: SystemTime| oldest.min(modified)));
    }
    let Some(oldest_binary) = oldest_binary else {
        return false;
    };
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let sources = [
        workspace.join("crates"),
        workspace.join("proto"),
        workspace.join("Cargo.toml"),
        workspace.join("Cargo.lock"),
    ];
    // Without the sources (an installed copy) there is nothing to compare.
    sources
        .iter()
        .filter_map(|path| newest_modification(path))
        .all(|newest| newest <= oldest_binary)
}

/// The newest modification time of a file or of any file below a folder.
fn newest_modification(path: &Path) -> Option<SystemTime> {
    let meta = std::fs::symlink_metadata(path).ok()?;
    if !meta.is_dir() {
        return meta.modified().ok();
    }
    std::fs::read_dir(path)
        .ok()?
        .filter_map(|entry| entry.ok())
        .filter(|entry| entry.file_name() != "target")
        .filter_map(|entry| newest_modification(&entry.path()))
        .max()
}

/// The cargo running us (`cargo test` sets `CARGO`), else the one that built us.
fn cargo() -> PathBuf {
    std::env::var_os("CARGO")
        .map(PathBuf::from)
        .or_else(|| option_env!("CARGO").map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from("cargo"))
}
