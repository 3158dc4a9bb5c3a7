//! `metasync sync NAME… [--all] [--wait]`: enqueue, then (with `--wait`) follow each job to
//! its end with a progress display: a spinner per job on a terminal, a plain line per change
//! otherwise (CI logs).

use std::io::IsTerminal as _;
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use reqwest::Method;
use serde_json::{Value, json};

use crate::client::Client;
use crate::error::{CliError, CliResult};

/// One job being followed, and the resource it syncs.
pub struct Tracked {
    pub name: String,
    pub job_id: String,
    pub job: Value,
}

/// Enqueues a sync of each named resource (every resource with `all`): one request per
/// resource for a single one, one batch (`POST /v1/syncs`) for several. Returns each
/// resource's job (new, or the active one it already had).
pub async fn enqueue(client: &Client, names: &[String], all: bool) -> CliResult<Vec<Tracked>> {
    let resources: Vec<Value> = if all {
        client.list_all(&["v1", "resources"], &[]).await?
    } else {
        let mut found = Vec::with_capacity(names.len());
        for name in names {
            found.push(client.resource_by_name(name).await?);
        }
        found
    };
    let id_of = |r: &Value| r["id"].as_str().unwrap_or_default().to_owned();
    let name_of = |r: &Value| r["name"].as_str().unwrap_or_default().to_owned();
    if let [resource] = resources.as_slice() {
        let id = id_of(resource);
        let (_, job) = client
            .call(Method::POST, &["v1", "resources", &id, "sync"], None)
            .await?;
        let job_id = job["id"].as_str().unwrap_or_default().to_owned();
        return Ok(vec![Tracked {
            name: name_of(resource),
            job_id,
            job,
        }]);
    }
    if resources.is_empty() {
        return Ok(Vec::new());
    }
    let ids: Vec<String> = resources.iter().map(id_of).collect();
    let (_, batch) = client
        .call(
            Method::POST,
            &["v1", "syncs"],
            Some(&json!({ "resource_ids": ids })),
        )
        .await?;
    let results = batch["results"].as_array().cloned().unwrap_or_default();
    let mut tracked = Vec::with_capacity(resources.len());
    for resource in &resources {
        let id = id_of(resource);
        let result = results
            .iter()
            .find(|r| r["resource_id"] == Value::String(id.clone()));
        let Some(job_id) = result.and_then(|r| r["job_id"].as_str()) else {
            let outcome = result.map_or("absent", |r| r["outcome"].as_str().unwrap_or("?"));
            // A refusal says why (`active_jobs_quota`: the tenant's cap on unfinished jobs).
            let reason = result
                .and_then(|r| r["reason"].as_str())
                .map(|reason| format!(": {reason}"))
                .unwrap_or_default();
            return Err(CliError::Api(format!(
                "POST /v1/syncs did not start a job for `{}` ({outcome}{reason})",
                name_of(resource)
            )));
        };
        let job = client.get(&["v1", "jobs", job_id], &[]).await?;
        tracked.push(Tracked {
            name: name_of(resource),
            job_id: job_id.to_owned(),
            job,
        });
    }
    Ok(tracked)
}

pub fn state(job: &Value) -> &str {
    job["state"].as_str().unwrap_or("unknown")
}

pub fn is_finished(job: &Value) -> bool {
    matches!(state(job), "succeeded" | "failed" | "cancelled")
}

/// A job's progress in a few words: state, phase, objects when known, attempts.
pub fn describe(job: &Value) -> String {
    let mut parts = vec![state(job).to_owned()];
    if let Some(phase) = job.pointer("/progress/phase").and_then(Value::as_str) {
        parts.push(phase.to_owned());
    }
    if let Some(n) = job
        .pointer("/progress/objects_total")
        .and_then(Value::as_u64)
    {
        parts.push(format!("{n} objects"));
    }
    let attempts = job["attempts"].as_i64().unwrap_or(0);
    let max = job["max_attempts"].as_i64().unwrap_or(0);
    if attempts > 0 {
        parts.push(format!("attempt {attempts}/{max}"));
    }
    if state(job) == "retrying"
        && let Some(error) = job["error"].as_str()
    {
        parts.push(format!("last error: {}", first_line(error)));
    }
    parts.join(" · ")
}

/// How a finished job ended, in one line.
pub fn summary(job: &Value) -> String {
    match state(job) {
        "succeeded" => {
            let stat = |k: &str| job.pointer(&format!("/stats/{k}")).and_then(Value::as_u64);
            let attempts = job["attempts"].as_i64().unwrap_or(0);
            match stat("tables") {
                Some(tables) => format!(
                    "succeeded · {tables} tables ({} added, {} changed, {} removed) · {attempts} attempt(s)",
                    stat("tables_added").unwrap_or(0),
                    stat("tables_changed").unwrap_or(0),
                    stat("tables_removed").unwrap_or(0),
                ),
                None => format!("succeeded · {attempts} attempt(s)"),
            }
        }
        "failed" => format!(
            "failed after {} attempt(s): {}",
            job["attempts"].as_i64().unwrap_or(0),
            job["error"].as_str().map_or("-", first_line)
        ),
        other => other.to_owned(),
    }
}

fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or(s)
}

/// The display while waiting: indicatif on a terminal, plain lines on stderr otherwise.
enum Display {
    Terminal {
        _multi: MultiProgress,
        bars: Vec<ProgressBar>,
    },
    Plain {
        last: Vec<String>,
    },
    /// `--quiet`: nothing.
    Silent,
}

impl Display {
    fn new(jobs: &[Tracked], quiet: bool) -> Self {
        let width = jobs
            .iter()
            .map(|j| j.name.chars().count())
            .max()
            .unwrap_or(0);
        if quiet {
            return Self::Silent;
        }
        if !std::io::stderr().is_terminal() {
            return Self::Plain {
                last: vec![String::new(); jobs.len()],
            };
        }
        let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stderr());
        let style = ProgressStyle::with_template(&format!(
            "{{spinner}} {{prefix:{width}}}  {{msg}}  [{{elapsed}}]"
        ))
        .expect("a valid template")
        .tick_chars("⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏✓");
        let bars = jobs
            .iter()
            .map(|j| {
                let bar = multi.add(ProgressBar::new_spinner());
                bar.set_style(style.clone());
                bar.set_prefix(j.name.clone());
                bar.set_message(describe(&j.job));
                bar.enable_steady_tick(Duration::from_millis(120));
                bar
            })
            .collect();
        Self::Terminal {
            _multi: multi,
            bars,
        }
    }

    fn update(&mut self, i: usize, name: &str, job: &Value) {
        let line = if is_finished(job) {
            summary(job)
        } else {
            describe(job)
        };
        match self {
            Self::Terminal { bars, .. } => {
                if is_finished(job) {
                    bars[i].finish_with_message(line);
                } else {
                    bars[i].set_message(line);
                }
            }
            Self::Plain { last } => {
                if last[i] != line {
                    eprintln!("{name}: {line}");
                    last[i] = line;
                }
            }
            Self::Silent => {}
        }
    }

    fn abandon(&self) {
        if let Self::Terminal { bars, .. } = self {
            for bar in bars.iter().filter(|b| !b.is_finished()) {
                bar.abandon();
            }
        }
    }
}

/// Follows every job until it is finished or `timeout` passes, showing progress.
pub async fn wait(
    client: &Client,
    jobs: &mut [Tracked],
    timeout: Duration,
    quiet: bool,
) -> CliResult<()> {
    let deadline = Instant::now() + timeout;
    let mut display = Display::new(jobs, quiet);
    // A long-poll waits for a change from the state the server sees when it starts, so the
    // display first catches up with that state (a job claimed since it was enqueued).
    for (i, tracked) in jobs.iter_mut().enumerate() {
        if !is_finished(&tracked.job) {
            tracked.job = client.get(&["v1", "jobs", &tracked.job_id], &[]).await?;
        }
        display.update(i, &tracked.name, &tracked.job);
    }
    loop {
        let Some(i) = jobs.iter().position(|j| !is_finished(&j.job)) else {
            return Ok(());
        };
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            display.abandon();
            return Err(CliError::TimedOut(format!(
                "{} still {} after {}",
                jobs[i].name,
                state(&jobs[i].job),
                humanize(timeout)
            )));
        }
        // Short long-polls while progress is shown: with `until=finished` the server answers
        // only at the end, and several jobs each want their line current.
        let slice = if quiet && jobs.len() == 1 { 10 } else { 2 };
        let wait = left.min(Duration::from_secs(slice));
        let job = match client.wait_job(&jobs[i].job_id, wait).await {
            Ok(job) => job,
            Err(e) => {
                display.abandon();
                return Err(e);
            }
        };
        display.update(i, &jobs[i].name, &job);
        jobs[i].job = job;
        // The others' state, cheaply, when several are followed.
        if jobs.len() > 1 {
            for (j, other) in jobs.iter_mut().enumerate() {
                if j != i && !is_finished(&other.job) {
                    let job = client.get(&["v1", "jobs", &other.job_id], &[]).await?;
                    display.update(j, &other.name, &job);
                    other.job = job;
                }
            }
        }
    }
}

/// The exit status of finished jobs: failed over cancelled over success.
pub fn outcome(jobs: &[Tracked]) -> CliResult<()> {
    let named = |s: &str| -> Vec<&str> {
        jobs.iter()
            .filter(|j| state(&j.job) == s)
            .map(|j| j.name.as_str())
            .collect()
    };
    let failed = named("failed");
    if !failed.is_empty() {
        return Err(CliError::Failed(format!(
            "sync of {} failed",
            failed.join(", ")
        )));
    }
    let cancelled = named("cancelled");
    if !cancelled.is_empty() {
        return Err(CliError::Cancelled(format!(
            "sync of {} was cancelled",
            cancelled.join(", ")
        )));
    }
    Ok(())
}

pub fn humanize(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..60 => format!("{s}s"),
        60..3600 if s.is_multiple_of(60) => format!("{}m", s / 60),
        _ if s.is_multiple_of(3600) => format!("{}h", s / 3600),
        _ => format!("{s}s"),
    }
}

/// `30s`, `5m`, `2h`, `1d`, or bare seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let (number, unit) = text
        .find(|c: char| !c.is_ascii_digit())
        .map_or((text, "s"), |i| text.split_at(i));
    let n: u64 = number
        .parse()
        .map_err(|_| format!("`{text}` is not a duration like 30s, 5m, 2h or 1d"))?;
    let seconds = match unit {
        "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        "d" => n * 86_400,
        _ => return Err(format!("`{text}` is not a duration like 30s, 5m, 2h or 1d")),
    };
    Ok(Duration::from_secs(seconds))
}
