//! Finding server binaries: `PATH` first (so that a Nix dev shell's or `nix
//! run`'s servers win), then the places Debian packages and `scripts/setup`
//! put them, which are not on a stock `PATH` (`/usr/lib/postgresql/<highest>/bin`,
//! `/usr/lib/rabbitmq/bin`, `/usr/local/bin`). One exception: Debian's
//! RabbitMQ wrappers in `/usr/sbin` are replaced by the scripts they wrap.

use std::ffi::{OsStr, OsString};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

const LOCAL_BIN: &str = "/usr/local/bin";
const RABBITMQ_BIN: &str = "/usr/lib/rabbitmq/bin";
const ERLANG_BIN: &str = "/usr/lib/erlang/bin";
const POSTGRESQL_LIB: &str = "/usr/lib/postgresql";
/// Where Debian's rabbitmq-server package puts its wrappers.
const DEBIAN_WRAPPERS: &str = "/usr/sbin";

/// Binaries that Debian also installs as wrappers in `/usr/sbin` which, run
/// as root, switch to the `rabbitmq` user and the system node's cookie, so
/// they cannot drive a private node: where `PATH` leads to such a wrapper,
/// the real script in `/usr/lib/rabbitmq/bin` is used instead. Any other
/// installation on `PATH` (Nix's `rabbitmq-server` package) is used as found.
const RABBITMQ_TOOLS: &[&str] = &[
    "rabbitmq-server",
    "rabbitmqctl",
    "rabbitmq-plugins",
    "rabbitmq-diagnostics",
];

/// Where `name` is looked for after `PATH`.
fn fallback_dirs(name: &str) -> Vec<PathBuf> {
    if RABBITMQ_TOOLS.contains(&name) {
        return vec![PathBuf::from(RABBITMQ_BIN)];
    }
    match name {
        "postgres" | "initdb" | "pg_ctl" | "pg_isready" | "psql" => {
            let mut dirs: Vec<PathBuf> = postgresql_bin_dir().into_iter().collect();
            dirs.push(PathBuf::from(LOCAL_BIN));
            dirs
        }
        "epmd" | "erl" => vec![PathBuf::from(ERLANG_BIN), PathBuf::from(LOCAL_BIN)],
        _ => vec![PathBuf::from(LOCAL_BIN)],
    }
}

/// `/usr/lib/postgresql/<highest major>/bin`, where Debian keeps `postgres`,
/// `initdb` and `pg_ctl` (only client wrappers are on `PATH`).
pub(crate) fn postgresql_bin_dir() -> Option<PathBuf> {
    let entries = std::fs::read_dir(POSTGRESQL_LIB).ok()?;
    entries
        .filter_map(|entry| entry.ok())
        .filter_map(|entry| {
            let version: u32 = entry.file_name().to_str()?.parse().ok()?;
            let bin = entry.path().join("bin");
            bin.join("postgres").is_file().then_some((version, bin))
        })
        .max_by_key(|(version, _)| *version)
        .map(|(_, bin)| bin)
}

/// Finds an executable named `name` on `PATH` or in the folders where Debian
/// packages and `scripts/setup` install it. The error names the fix.
pub fn find_binary(name: &str) -> Result<PathBuf> {
    let path_var = std::env::var_os("PATH").unwrap_or_default();
    find_binary_with(
        name,
        Some(&path_var),
        &fallback_dirs(name),
        Path::new(DEBIAN_WRAPPERS),
        Path::new(RABBITMQ_BIN),
    )
}

/// [`find_binary`] with the folders as parameters, for tests: `dirs` after
/// `path_var`, and a RabbitMQ tool found in `wrappers` replaced by the one
/// in `rabbitmq_bin` when that exists.
fn find_binary_with(
    name: &str,
    path_var: Option<&OsStr>,
    dirs: &[PathBuf],
    wrappers: &Path,
    rabbitmq_bin: &Path,
) -> Result<PathBuf> {
    let found = find_binary_in(name, path_var, dirs)?;
    if RABBITMQ_TOOLS.contains(&name) && same_dir(found.parent(), wrappers) {
        let real = rabbitmq_bin.join(name);
        if is_executable(&real) {
            return Ok(real);
        }
    }
    Ok(found)
}

/// Whether `dir` is `wanted`, also through symbolic links (`/sbin` is
/// `/usr/sbin` on a merged-/usr system).
fn same_dir(dir: Option<&Path>, wanted: &Path) -> bool {
    let canonical =
        |path: &Path| std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    dir.is_some_and(|dir| canonical(dir) == canonical(wanted))
}

/// Finds `name` in the folders of `path_var` (a `PATH`-style list; `None`
/// searches no `PATH`), then in `dirs`. The error message lists `dirs` and says
/// to run `scripts/setup`.
pub fn find_binary_in(name: &str, path_var: Option<&OsStr>, dirs: &[PathBuf]) -> Result<PathBuf> {
    let from_path: Vec<PathBuf> = path_var
        .map(|p| std::env::split_paths(p).collect())
        .unwrap_or_default();
    from_path
        .iter()
        .chain(dirs)
        .map(|dir| dir.join(name))
        .find(|candidate| is_executable(candidate))
        .ok_or_else(|| Error::MissingBinary {
            name: name.to_owned(),
            searched: dirs
                .iter()
                .map(|d| d.display().to_string())
                .collect::<Vec<_>>()
                .join(", "),
        })
}

/// The sibling `name` of an already found binary (PostgreSQL's tools must
/// come from one installation), else the usual search.
pub(crate) fn sibling_or_find(found: &Path, name: &str) -> Result<PathBuf> {
    let real = std::fs::canonicalize(found).unwrap_or_else(|_| found.to_path_buf());
    if let Some(dir) = real.parent() {
        let sibling = dir.join(name);
        if is_executable(&sibling) {
            return Ok(sibling);
        }
    }
    find_binary(name)
}

fn is_executable(path: &Path) -> bool {
    std::fs::metadata(path)
        .is_ok_and(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
}

/// A shell-like rendering of a command line for error messages.
pub(crate) fn display_command(program: &Path, args: &[OsString]) -> String {
    std::iter::once(program.as_os_str())
        .chain(args.iter().map(OsString::as_os_str))
        .map(|part| part.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_binary_names_the_fix() {
        let empty = tempfile::tempdir().expect("temp dir");
        let error = find_binary_in("mailhog", None, &[empty.path().to_path_buf()])
            .expect_err("must be missing");
        assert_eq!(
            error.to_string(),
            format!(
                "mailhog not found on PATH or in {}: run scripts/setup",
                empty.path().display()
            )
        );
    }

    #[test]
    fn missing_binary_message_lists_the_default_dirs() {
        let missing = find_binary("switchboard-no-such-binary").expect_err("must be missing");
        assert_eq!(
            missing.to_string(),
            "switchboard-no-such-binary not found on PATH or in /usr/local/bin: run scripts/setup"
        );
    }

    #[test]
    fn finds_on_path_and_in_dirs() {
        let dir = tempfile::tempdir().expect("temp dir");
        let tool = dir.path().join("tool");
        std::fs::write(&tool, "#!/bin/sh\n").expect("write");
        let not_executable = dir.path().join("data");
        std::fs::write(&not_executable, "x").expect("write");
        std::fs::set_permissions(&tool, std::fs::Permissions::from_mode(0o755)).expect("chmod");

        let path_var = std::env::join_paths([dir.path()]).expect("join");
        assert_eq!(
            find_binary_in("tool", Some(&path_var), &[]).expect("on PATH"),
            tool
        );
        assert_eq!(
            find_binary_in("tool", None, &[dir.path().to_path_buf()]).expect("in dir"),
            tool
        );
        assert!(find_binary_in("data", Some(&path_var), &[]).is_err());
    }

    fn executable(dir: &Path, name: &str) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, "#!/bin/sh\n").expect("write");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        path
    }

    /// Defect 9: a RabbitMQ on PATH (nix run, a Nix dev shell) wins over
    /// Debian's /usr/lib/rabbitmq/bin; only Debian's /usr/sbin wrappers are
    /// replaced by the scripts they wrap.
    #[test]
    fn path_wins_for_rabbitmq_except_over_debian_wrappers() {
        let nix = tempfile::tempdir().expect("temp dir");
        let sbin = tempfile::tempdir().expect("temp dir");
        let real = tempfile::tempdir().expect("temp dir");
        let from_nix = executable(nix.path(), "rabbitmq-server");
        let wrapper = executable(sbin.path(), "rabbitmq-server");
        let script = executable(real.path(), "rabbitmq-server");
        let dirs = [real.path().to_path_buf()];
        let find = |path: &[&Path]| {
            let path_var = std::env::join_paths(path).expect("join");
            find_binary_with(
                "rabbitmq-server",
                Some(&path_var),
                &dirs,
                sbin.path(),
                real.path(),
            )
            .expect("found")
        };

        // nix run: PATH = the Nix package first, the host's /usr/sbin later.
        assert_eq!(find(&[nix.path(), sbin.path()]), from_nix);
        // Debian as root: PATH leads to the wrapper, which is replaced.
        assert_eq!(find(&[sbin.path()]), script);
        // Not on PATH at all: the Debian script from the fallback folder.
        assert_eq!(find(&[]), script);
        // A wrapper folder without the real script: the wrapper, as found.
        let empty = tempfile::tempdir().expect("temp dir");
        let path_var = std::env::join_paths([sbin.path()]).expect("join");
        assert_eq!(
            find_binary_with(
                "rabbitmq-server",
                Some(&path_var),
                &[],
                sbin.path(),
                empty.path()
            )
            .expect("found"),
            wrapper
        );
        // Only RabbitMQ's tools are redirected.
        let other = executable(sbin.path(), "epmd");
        executable(real.path(), "epmd");
        assert_eq!(
            find_binary_with("epmd", Some(&path_var), &dirs, sbin.path(), real.path())
                .expect("found"),
            other
        );
    }
}
