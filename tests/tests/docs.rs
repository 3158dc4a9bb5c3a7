//! The docs' examples, run as written: the README's "Running it" section (its own catalog
//! database, queue and port, through the variables the section reads) and every example of
//! docs/ci.md against a real API and worker.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use metasync_tests::{
    binary, create_source, drop_database, free_port, queue_name, spawn_app, unique_name,
};

fn repository() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_owned()
}

/// The fenced blocks of `lang` in `markdown` (between `section`'s heading and the next `## `
/// heading when given), in order.
fn blocks(markdown: &str, section: Option<&str>, lang: &str) -> Vec<String> {
    let text = match section {
        Some(heading) => {
            let start = markdown
                .find(&format!("\n{heading}\n"))
                .unwrap_or_else(|| panic!("no `{heading}` section"));
            let rest = &markdown[start + heading.len() + 2..];
            &rest[..rest.find("\n## ").unwrap_or(rest.len())]
        }
        None => markdown,
    };
    let mut found = Vec::new();
    let mut lines = text.lines();
    while let Some(line) = lines.next() {
        if line.trim() == format!("```{lang}") {
            let block: Vec<&str> = lines.by_ref().take_while(|l| l.trim() != "```").collect();
            found.push(block.join("\n"));
        }
    }
    found
}

/// A scratch directory, removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new() -> Self {
        let dir = std::env::temp_dir().join(unique_name("metasync-docs-", '-'));
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Runs `script` with bash (`-euo pipefail`; background jobs stopped at the end) in `dir`;
/// returns (exit code, stdout, stderr).
async fn bash(script: &str, dir: &Path, env: &[(&str, String)]) -> (Option<i32>, String, String) {
    let script = format!(
        "set -euo pipefail\ntrap 'kill $(jobs -p) 2>/dev/null || true; wait' EXIT\n{script}\n"
    );
    let mut cmd = tokio::process::Command::new("bash");
    cmd.arg("-c")
        .arg(script)
        .current_dir(dir)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .kill_on_drop(true);
    let out = tokio::time::timeout(Duration::from_secs(300), cmd.output())
        .await
        .expect("the example finishes within 5 minutes")
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The README's "Running it", pasted into a shell: its first block (the build) meets a `cargo`
/// that has nothing to do and a `$CARGO_TARGET_DIR/release` holding the binaries the tests
/// built; the second runs as is, with the tests' own database, queue and port.
#[tokio::test]
async fn the_readme_running_it_section_works_pasted_into_a_shell() {
    let readme = std::fs::read_to_string(repository().join("README.md")).unwrap();
    let sh = blocks(&readme, Some("## Running it"), "sh");
    assert!(sh.len() >= 2, "the section has its build and run blocks");
    assert!(sh[0].contains("cargo build --release"), "{}", sh[0]);

    let scratch = Scratch::new();
    let bin = scratch.0.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    std::fs::write(bin.join("cargo"), "#!/bin/sh\nexit 0\n").unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(bin.join("cargo"), std::fs::Permissions::from_mode(0o755))
            .unwrap();
    }
    let built = binary("metasync").unwrap().parent().unwrap().to_owned();
    let target = scratch.0.join("target");
    std::fs::create_dir_all(&target).unwrap();
    #[cfg(unix)]
    std::os::unix::fs::symlink(&built, target.join("release")).unwrap();

    let database = unique_name("mstest_readme", '_');
    let queue = queue_name();
    let env = [
        (
            "PATH",
            format!("{}:{}", bin.display(), std::env::var("PATH").unwrap()),
        ),
        ("CARGO_TARGET_DIR", target.display().to_string()),
        ("PGDATABASE", database.clone()),
        (
            "METASYNC_API_ADDR",
            format!("127.0.0.1:{}", free_port().unwrap()),
        ),
        ("METASYNC_QUEUE", queue.clone()),
        // The API's operations port is shared by whatever else runs here.
        ("METASYNC_METRICS_ADDR", "off".into()),
        ("HOME", scratch.0.display().to_string()),
        ("RUST_LOG", "warn".into()),
    ];
    let script = sh.join("\n");
    let (code, stdout, stderr) = bash(&script, &repository(), &env).await;
    let _ = drop_database(&database).await;
    assert_eq!(code, Some(0), "stdout:\n{stdout}\nstderr:\n{stderr}");
    // The long-poll's answer, then the CLI's table of the catalogued tables (the catalog's
    // own, e.g. `jobs`).
    assert!(stdout.contains("\"state\""), "{stdout}");
    assert!(stderr.contains("catalog: succeeded"), "{stderr}");
    assert!(
        stdout
            .lines()
            .any(|l| l.contains(" public ") && l.contains(" jobs ")),
        "{stdout}"
    );
}

/// Every example of docs/ci.md, in order, in one shell: the YAML file as `sources.yaml` (its
/// database and user replaced by the test's own source), then each `sh` block.
#[tokio::test]
async fn every_example_of_the_ci_page_runs() {
    let page = std::fs::read_to_string(repository().join("docs/ci.md")).unwrap();
    let app = spawn_app().await.unwrap();
    let _worker = app.spawn_worker().await;
    let source =
        create_source("create schema sales; create table sales.orders (id int primary key);")
            .await
            .unwrap();

    let scratch = Scratch::new();
    let yaml = blocks(&page, None, "yaml");
    assert_eq!(yaml.len(), 1, "one YAML example");
    let file = yaml[0]
        .lines()
        .next()
        .unwrap()
        .trim_start_matches("# ")
        .trim();
    assert_eq!(file, "sources.yaml");
    let sources = yaml[0]
        .replace("database: shop", &format!("database: {source}"))
        .replace("username: reader", "username: root");
    std::fs::write(scratch.0.join(file), sources).unwrap();

    let built = binary("metasync").unwrap().parent().unwrap().to_owned();
    let env = [
        (
            "PATH",
            format!("{}:{}", built.display(), std::env::var("PATH").unwrap()),
        ),
        ("METASYNC_URL", app.base.clone()),
        ("METASYNC_TOKEN", app.token("acme")),
        ("SHOP_DB_PASSWORD", "unused-with-trust".into()),
        (
            "XDG_CONFIG_HOME",
            scratch.0.join("config").display().to_string(),
        ),
    ];
    let sh = blocks(&page, None, "sh");
    assert!(sh.len() >= 3, "{sh:?}");
    let (code, stdout, stderr) = bash(&sh.join("\n"), &scratch.0, &env).await;
    assert_eq!(code, Some(0), "stdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(stdout.contains("create     shop"), "{stdout}");
    assert!(stdout.contains("shop synced: 1 tables"), "{stdout}");
    assert!(stdout.contains("sales.orders"), "{stdout}");
}

/// The page's exit-code table is the CLI's.
#[test]
fn the_ci_page_lists_the_clis_exit_codes() {
    let page = std::fs::read_to_string(repository().join("docs/ci.md")).unwrap();
    let help = std::process::Command::new(binary("metasync").unwrap())
        .arg("--help")
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    let codes: Vec<&str> = help
        .lines()
        .skip_while(|l| !l.starts_with("Exit codes:"))
        .skip(1)
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert_eq!(codes, ["0", "1", "2", "3", "4", "5", "6", "7"], "{help}");
    for line in help
        .lines()
        .skip_while(|l| !l.starts_with("Exit codes:"))
        .skip(1)
    {
        let (code, meaning) = line.trim().split_once("  ").unwrap();
        let word = meaning.trim().split([':', ' ']).next().unwrap();
        let row = page
            .lines()
            .find(|l| l.starts_with(&format!("| {code} |")))
            .unwrap_or_else(|| panic!("docs/ci.md has no row for exit code {code}"));
        assert!(row.contains(word), "exit {code}: `{word}` not in `{row}`");
    }
}
