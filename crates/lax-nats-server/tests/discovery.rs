//! `nats-server` discovery: the search order and the error that names the setup command.

use std::{
    ffi::OsString,
    fs,
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
};

use lax_nats_server::{BinaryLocator, LocateError, SETUP_COMMAND};

fn fake_binary(dir: &Path, mode: u32) -> PathBuf {
    fs::create_dir_all(dir).unwrap();
    let path = dir.join("nats-server");
    fs::write(&path, "#!/bin/sh\necho 'nats-server: v2.99.0'\n").unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(mode)).unwrap();
    path
}

#[test]
fn missing_binary_error_names_the_setup_command() {
    let empty = tempfile::tempdir().unwrap();
    let locator = BinaryLocator {
        explicit: None,
        path_var: Some(OsString::from(empty.path())),
        tools_dirs: vec![empty.path().join(".tools")],
    };
    let err = locator.locate().unwrap_err();
    assert!(matches!(err, LocateError::NotFound { .. }), "{err:?}");
    let message = err.to_string();
    assert_eq!(SETUP_COMMAND, "cargo xtask setup");
    assert!(message.contains("`cargo xtask setup`"), "{message}");
    assert!(message.contains("cargo xtask test"), "{message}");
    assert!(message.contains("LAX_NATS_SERVER"), "{message}");
    // It lists where it looked.
    assert!(
        message.contains(
            &empty
                .path()
                .join(".tools/bin/nats-server")
                .display()
                .to_string()
        ),
        "{message}"
    );
}

#[test]
fn wrong_override_is_an_error_not_a_fallback() {
    let tools = tempfile::tempdir().unwrap();
    fake_binary(&tools.path().join("bin"), 0o755);
    let locator = BinaryLocator {
        explicit: Some(PathBuf::from("/nonexistent/nats-server")),
        path_var: None,
        tools_dirs: vec![tools.path().to_path_buf()],
    };
    let err = locator.locate().unwrap_err();
    assert!(
        matches!(err, LocateError::InvalidOverride { .. }),
        "{err:?}"
    );
    let message = err.to_string();
    assert!(message.contains("/nonexistent/nats-server"), "{message}");
    assert!(message.contains("cargo xtask setup"), "{message}");
}

#[test]
fn search_order_is_override_then_path_then_tools_dirs() {
    let root = tempfile::tempdir().unwrap();
    let explicit = fake_binary(&root.path().join("explicit"), 0o755);
    let on_path = fake_binary(&root.path().join("path"), 0o755);
    let in_tools = fake_binary(&root.path().join("tools/bin"), 0o755);
    let in_second_tools = fake_binary(&root.path().join("tools2/bin"), 0o755);
    let path_var =
        std::env::join_paths([root.path().join("nothing-here"), root.path().join("path")]).unwrap();
    let tools_dirs = vec![root.path().join("tools"), root.path().join("tools2")];

    let mut locator = BinaryLocator {
        explicit: Some(explicit.clone()),
        path_var: Some(path_var),
        tools_dirs,
    };
    assert_eq!(locator.locate().unwrap(), explicit);
    locator.explicit = None;
    assert_eq!(locator.locate().unwrap(), on_path);
    locator.path_var = None;
    assert_eq!(locator.locate().unwrap(), in_tools);
    locator.tools_dirs.remove(0);
    assert_eq!(locator.locate().unwrap(), in_second_tools);
}

#[test]
fn non_executable_files_are_skipped() {
    let root = tempfile::tempdir().unwrap();
    fake_binary(&root.path().join("path"), 0o644);
    let in_tools = fake_binary(&root.path().join("tools/bin"), 0o755);
    let locator = BinaryLocator {
        explicit: None,
        path_var: Some(root.path().join("path").into_os_string()),
        tools_dirs: vec![root.path().join("tools")],
    };
    assert_eq!(locator.locate().unwrap(), in_tools);
}

#[test]
fn the_real_search_finds_a_runnable_server() {
    // `cargo xtask test` (and CI) install nats-server before running tests, so the real
    // search must succeed; if it fails, its message says what to run.
    let binary = lax_nats_server::nats_server_binary().unwrap_or_else(|e| panic!("{e}"));
    let output = std::process::Command::new(&binary)
        .arg("--version")
        .output()
        .unwrap();
    let version = String::from_utf8_lossy(&output.stdout);
    assert!(
        version.contains("nats-server"),
        "{}: {version}",
        binary.display()
    );
}

#[test]
fn a_pip_install_in_a_tools_dir_is_found_after_its_bin() {
    let root = tempfile::tempdir().unwrap();
    let from_pip = fake_binary(&root.path().join("tools/pip/bin"), 0o755);
    let locator = BinaryLocator {
        explicit: None,
        path_var: Some(root.path().join("no-path").into_os_string()),
        tools_dirs: vec![root.path().join("tools")],
    };
    assert_eq!(locator.locate().unwrap(), from_pip);
    let linked = fake_binary(&root.path().join("tools/bin"), 0o755);
    assert_eq!(locator.locate().unwrap(), linked, "bin/ comes first");
}
