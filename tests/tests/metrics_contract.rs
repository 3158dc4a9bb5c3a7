//! docs/metrics.md is the metrics contract: the API and a worker, started as the real
//! binaries with their operations listeners on, export exactly the families the doc lists
//! (type, labels, and which process exports each), the doc and `telemetry::FAMILIES` agree, and
//! `promtool check metrics` accepts both scrapes.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use metasync_shared::telemetry::{FAMILIES, Role};
use metasync_tests::{create_source, free_port, spawn_app_without_maintenance};

/// A family as the doc or a scrape describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Described {
    kind: String,
    labels: BTreeSet<String>,
    by: String,
}

/// The doc's table: name → type, label names and exporting process.
fn doc_families() -> BTreeMap<String, Described> {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/metrics.md"))
        .expect("reading docs/metrics.md");
    let mut families = BTreeMap::new();
    for line in doc.lines().filter(|l| l.starts_with("| `metasync_")) {
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        let name = cells[1].trim_matches('`').to_owned();
        families.insert(
            name,
            Described {
                kind: cells[2].to_owned(),
                labels: label_names(cells[3]),
                by: cells[4].to_owned(),
            },
        );
    }
    families
}

/// The backticked names of a labels cell, leaving out the values in parentheses.
fn label_names(cell: &str) -> BTreeSet<String> {
    let mut outside = String::new();
    let mut depth = 0;
    for c in cell.chars() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            c if depth == 0 => outside.push(c),
            _ => {}
        }
    }
    outside
        .split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_owned)
        .collect()
}

/// A scrape's families: name → type and the label names its samples carry (`le` aside).
fn scraped(body: &str) -> BTreeMap<String, (String, BTreeSet<String>)> {
    let mut families: BTreeMap<String, (String, BTreeSet<String>)> = BTreeMap::new();
    for line in body.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap();
            families.insert(name.to_owned(), (kind.to_owned(), BTreeSet::new()));
        }
    }
    for line in body
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let (series, _) = line.rsplit_once(' ').unwrap();
        let (name, labels) = series.split_once('{').unwrap_or((series, ""));
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| name.strip_suffix(s).filter(|f| families.contains_key(*f)))
            .unwrap_or(name);
        let Some((_, names)) = families.get_mut(family) else {
            panic!("sample {line} has no # TYPE");
        };
        for pair in labels
            .trim_end_matches('}')
            .split(',')
            .filter(|p| !p.is_empty())
        {
            let key = pair.split_once('=').unwrap().0;
            if key != "le" {
                names.insert(key.to_owned());
            }
        }
    }
    families
}

async fn scrape(addr: &str) -> anyhow::Result<String> {
    Ok(reqwest::get(format!("http://{addr}/metrics"))
        .await?
        .error_for_status()?
        .text()
        .await?)
}

/// What `role` must export, per the doc.
fn expected(doc: &BTreeMap<String, Described>, role: &str) -> BTreeMap<String, Described> {
    doc.iter()
        .filter(|(_, d)| d.by == role || d.by == "both")
        .map(|(n, d)| (n.clone(), d.clone()))
        .collect()
}

/// The differences between what `role` should export and what its scrape holds (empty: none).
fn differences(doc: &BTreeMap<String, Described>, role: &str, body: &str) -> Vec<String> {
    let want = expected(doc, role);
    let got = scraped(body);
    let mut problems = Vec::new();
    for (name, d) in &want {
        match got.get(name) {
            None => problems.push(format!("{role}: {name} is documented but not exported")),
            Some((kind, labels)) => {
                if *kind != d.kind {
                    problems.push(format!(
                        "{role}: {name} is a {kind}, documented as {}",
                        d.kind
                    ));
                }
                if *labels != d.labels {
                    problems.push(format!(
                        "{role}: {name} has labels {labels:?}, documented {:?}",
                        d.labels
                    ));
                }
            }
        }
    }
    for name in got.keys().filter(|n| n.starts_with("metasync_")) {
        if !want.contains_key(name) {
            problems.push(format!(
                "{role}: {name} is exported but not documented for it"
            ));
        }
    }
    problems
}

#[test]
fn the_doc_and_the_code_list_the_same_families() {
    let doc = doc_families();
    let code: BTreeMap<String, Described> = FAMILIES
        .iter()
        .map(|f| {
            let by = match f.by {
                Role::Api => "api",
                Role::Worker => "worker",
                Role::Both => "both",
            };
            let described = Described {
                kind: f.kind.as_str().to_owned(),
                labels: f.labels.iter().map(|l| l.name.to_owned()).collect(),
                by: by.to_owned(),
            };
            (f.name.to_owned(), described)
        })
        .collect();
    assert_eq!(doc, code, "docs/metrics.md and telemetry::FAMILIES differ");
}

/// promtool, unpacked by deploy/local/prometheus.sh; None (with a loud message) without it.
fn promtool() -> Option<std::path::PathBuf> {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/local/prometheus.sh");
    let out = std::process::Command::new(script).output().ok()?;
    if !out.status.success() {
        eprintln!(
            "\n\n!!! SKIPPING promtool check metrics: deploy/local/prometheus.sh failed:\n{}\n",
            String::from_utf8_lossy(&out.stderr)
        );
        return None;
    }
    Some(std::path::PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()).join("promtool"))
}

fn promtool_check(promtool: &std::path::Path, role: &str, body: &str) {
    use std::io::Write as _;
    let mut child = std::process::Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(body.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics failed on the {role}'s scrape:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_scrapes_match_the_doc_and_pass_promtool() {
    let app = spawn_app_without_maintenance().await.unwrap();
    let api_addr = format!("127.0.0.1:{}", free_port().unwrap());
    let api_ops = format!("127.0.0.1:{}", free_port().unwrap());
    let worker_ops = format!("127.0.0.1:{}", free_port().unwrap());
    let _api = app
        .spawn_api_process(&api_addr, &[("METASYNC_METRICS_ADDR", api_ops.as_str())])
        .unwrap();
    let _worker = app
        .spawn_worker_process(
            "contract",
            &[
                ("METASYNC_METRICS_ADDR", worker_ops.as_str()),
                ("METASYNC_LEASE", "3s"),
                // The job's connection stays parked while the test scrapes.
                ("METASYNC_SOURCE_IDLE", "60s"),
            ],
        )
        .unwrap();

    // A job, so the worker's per-outcome families with open label values appear, and a
    // request to the API process, so its HTTP families do.
    let source = create_source("create table t (id int);").await.unwrap();
    let resource = app.register("t1", "contract", &source).await.unwrap();
    let job = app.sync("t1", resource.id).await.unwrap();
    app.wait_for_job("t1", job.id, Duration::from_secs(30))
        .await
        .unwrap();

    // Families with open label values (a lease's lag, a duty's last success) appear after
    // their first event: poll until both scrapes match, or report the last differences.
    let doc = doc_families();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let (api, worker) = loop {
        let _ = reqwest::get(format!("http://{api_addr}/healthz")).await;
        if let (Ok(api), Ok(worker)) = (scrape(&api_ops).await, scrape(&worker_ops).await) {
            let mut problems = differences(&doc, "api", &api);
            problems.extend(differences(&doc, "worker", &worker));
            if problems.is_empty() {
                break (api, worker);
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the scrapes do not match docs/metrics.md: {problems:#?}"
            );
        }
        assert!(tokio::time::Instant::now() < deadline, "no scrape answered");
        tokio::time::sleep(Duration::from_millis(250)).await;
    };

    assert!(
        worker.contains("metasync_source_connections_parked{engine=\"postgres\"} 1\n"),
        "the job's connection is parked:\n{worker}"
    );
    for body in [&api, &worker] {
        assert!(
            body.contains("process_resident_memory_bytes"),
            "process metrics"
        );
        assert!(!body.contains(&resource.id.to_string()), "an id in a label");
    }
    match promtool() {
        Some(promtool) => {
            promtool_check(&promtool, "api", &api);
            promtool_check(&promtool, "worker", &worker);
        }
        None => eprintln!("!!! promtool unavailable: the scrapes were not linted"),
    }
}
