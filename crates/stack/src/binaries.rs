//! Finding the service binaries: next to the stack's own executable (one
//! target dir), in `--bin-dir`, or — for tests and benchmarks, whose
//! executables live in `target/<profile>/deps` — built on demand with the
//! cargo that runs them.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

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

/// For tests and benchmarks: `$SWITCHBOARD_STACK_BIN_DIR` if set, else builds
/// the six service binaries in the profile of the running test binary (`cargo
/// build -p switchboard-<svc> --bins`, a no-op when they are fresh) and
/// returns their folder. Builds once per process.
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
    let mut command = Command::new(cargo());
    command.arg("build").arg("--quiet");
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

/// The cargo running us (`cargo test` sets `CARGO`), else the one that built us.
fn cargo() -> PathBuf {
    std::env::var_os("CARGO")
        .map(PathBuf::from)
        .or_else(|| option_env!("CARGO").map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from("cargo"))
}
