//! A server's folder: a temporary one removed on drop (tests) or a persistent
//! one given by the caller and never removed (dev stack).

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use tempfile::TempDir;

use crate::error::{Error, Result};

#[derive(Debug)]
pub(crate) enum Workdir {
    Temporary(TempDir),
    Persistent(PathBuf),
}

impl Workdir {
    /// `dir: None` creates `<tmp>/switchboard-<server>-XXXXXX`; `Some` creates
    /// the folder if missing and keeps what is in it. `other_user` says the
    /// server runs as another OS user (PostgreSQL as `postgres` under root),
    /// who must be able to reach the folder.
    pub(crate) fn create(server: &str, dir: Option<&Path>, other_user: bool) -> Result<Self> {
        match dir {
            None => {
                let base = temp_base(other_user);
                let temp = tempfile::Builder::new()
                    .prefix(&format!("switchboard-{server}-"))
                    .tempdir_in(&base)
                    .map_err(|e| {
                        Error::io(
                            format!("creating a temporary folder in {}", base.display()),
                            e,
                        )
                    })?;
                Ok(Self::Temporary(temp))
            }
            Some(dir) => {
                std::fs::create_dir_all(dir)
                    .map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
                let absolute = std::fs::canonicalize(dir)
                    .map_err(|e| Error::io(format!("resolving {}", dir.display()), e))?;
                if other_user {
                    // The folder itself is handed to that user; its parents must let them in.
                    let parent = absolute.parent().unwrap_or(Path::new("/"));
                    if let Some(blocking) = first_unsearchable_ancestor(parent) {
                        return Err(Error::io(
                            format!(
                                "{server} runs as another OS user and cannot reach {}: {} is not searchable by others (chmod o+x it or choose another folder)",
                                absolute.display(),
                                blocking.display()
                            ),
                            std::io::Error::from(std::io::ErrorKind::PermissionDenied),
                        ));
                    }
                }
                Ok(Self::Persistent(absolute))
            }
        }
    }

    pub(crate) fn path(&self) -> &Path {
        match self {
            Self::Temporary(temp) => temp.path(),
            Self::Persistent(path) => path,
        }
    }

    pub(crate) fn is_temporary(&self) -> bool {
        matches!(self, Self::Temporary(_))
    }

    /// What the reaper removes when the test process dies: only temporary folders.
    pub(crate) fn removable(&self) -> Option<&Path> {
        match self {
            Self::Temporary(temp) => Some(temp.path()),
            Self::Persistent(_) => None,
        }
    }
}

/// The system temp dir, unless another user cannot traverse it (a `TMPDIR`
/// under `/root`): then `/tmp`.
fn temp_base(other_user: bool) -> PathBuf {
    let base = std::env::temp_dir();
    if other_user && first_unsearchable_ancestor(&base).is_some() {
        PathBuf::from("/tmp")
    } else {
        base
    }
}

/// The first folder on the way to `path` (inclusive) that others cannot enter.
fn first_unsearchable_ancestor(path: &Path) -> Option<PathBuf> {
    let mut ancestors: Vec<&Path> = path.ancestors().collect();
    ancestors.reverse();
    ancestors
        .into_iter()
        .find(|dir| std::fs::metadata(dir).is_ok_and(|meta| meta.permissions().mode() & 0o001 == 0))
        .map(Path::to_path_buf)
}
