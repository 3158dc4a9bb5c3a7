//! `metasync resources apply -f FILE`: the resources a YAML file declares, upserted by name
//! (`PUT /v1/resources/by-name/{name}`), with a plan of what changes. Passwords never sit in
//! the file: each entry names an environment variable (`password_env`) or a file
//! (`password_file`, relative to the YAML file) that holds it.

use std::collections::BTreeSet;
use std::path::Path;

use reqwest::{Method, StatusCode};
use serde::Serialize;
use serde_json::{Map, Value};

use crate::client::Client;
use crate::error::{CliError, CliResult};

/// One declared resource: its name, where its password comes from, and the rest of its
/// definition as the API takes it (the API checks those fields and names a bad one).
pub struct Declared {
    pub name: String,
    password: Option<Secret>,
    definition: Map<String, Value>,
}

enum Secret {
    Env(String),
    File(std::path::PathBuf),
}

/// What applying does (or, with `--dry-run`, would do) to one resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    Create,
    Update,
    Unchanged,
    Delete,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Create => "create",
            Self::Update => "update",
            Self::Unchanged => "unchanged",
            Self::Delete => "delete",
        }
    }
}

/// One line of the plan; `resource` is the API's document of it (after the change, or as it
/// was for a deletion).
#[derive(Debug, Serialize)]
pub struct Step {
    pub action: Action,
    pub name: String,
    pub resource: Value,
}

/// Reads and checks the file: a mapping with a `resources` list, each entry with a unique
/// `name` and no inline `password`.
pub fn parse(path: &Path) -> CliResult<Vec<Declared>> {
    let bad = |m: String| CliError::BadInput(format!("{}: {m}", path.display()));
    let text = std::fs::read_to_string(path).map_err(|e| bad(e.to_string()))?;
    let doc: Value = serde_yaml_ng::from_str(&text).map_err(|e| bad(e.to_string()))?;
    let Value::Object(mut top) = doc else {
        return Err(bad("expected a mapping with a `resources` list".into()));
    };
    let entries = match top.remove("resources") {
        Some(Value::Array(entries)) => entries,
        Some(Value::Null) => Vec::new(),
        _ => return Err(bad("expected a `resources` list".into())),
    };
    if let Some(key) = top.keys().next() {
        return Err(bad(format!(
            "unknown top-level key `{key}` (only `resources`)"
        )));
    }
    let base = path.parent().unwrap_or(Path::new("."));
    let mut names = BTreeSet::new();
    let mut declared = Vec::with_capacity(entries.len());
    for (i, entry) in entries.into_iter().enumerate() {
        let Value::Object(mut definition) = entry else {
            return Err(bad(format!("resources[{i}] is not a mapping")));
        };
        let name = match definition.remove("name") {
            Some(Value::String(name)) if !name.trim().is_empty() => name.trim().to_owned(),
            _ => return Err(bad(format!("resources[{i}] needs a `name`"))),
        };
        let at = |m: &str| bad(format!("resource `{name}`: {m}"));
        if !names.insert(name.clone()) {
            return Err(at("declared twice"));
        }
        if definition.contains_key("password") {
            return Err(at(
                "an inline `password` is not accepted: name an environment variable \
                 (`password_env: VAR`) or a file (`password_file: PATH`)",
            ));
        }
        let env = definition.remove("password_env");
        let file = definition.remove("password_file");
        let password = match (env, file) {
            (None, None) => None,
            (Some(Value::String(var)), None) if !var.is_empty() => Some(Secret::Env(var)),
            (None, Some(Value::String(file))) if !file.is_empty() => {
                Some(Secret::File(base.join(file)))
            }
            (Some(_), Some(_)) => {
                return Err(at("give `password_env` or `password_file`, not both"));
            }
            _ => {
                return Err(at(
                    "`password_env` / `password_file` must be a non-empty string",
                ));
            }
        };
        declared.push(Declared {
            name,
            password,
            definition,
        });
    }
    Ok(declared)
}

impl Declared {
    /// The `PUT` body: the definition with the password read from where the file says.
    fn body(&self) -> CliResult<Value> {
        let mut body = self.definition.clone();
        let bad = |m: String| CliError::BadInput(format!("resource `{}`: {m}", self.name));
        match &self.password {
            None => {}
            Some(Secret::Env(var)) => {
                let value = std::env::var(var).map_err(|_| {
                    bad(format!(
                        "`password_env`: the environment variable {var} is not set"
                    ))
                })?;
                body.insert("password".into(), Value::String(value));
            }
            Some(Secret::File(path)) => {
                let value = std::fs::read_to_string(path)
                    .map_err(|e| bad(format!("`password_file` {}: {e}", path.display())))?;
                // A file written by `echo` ends in a newline that is not part of the password.
                let value = value.strip_suffix('\n').unwrap_or(&value);
                let value = value.strip_suffix('\r').unwrap_or(value);
                body.insert("password".into(), Value::String(value.to_owned()));
            }
        }
        Ok(Value::Object(body))
    }
}

/// Upserts every declared resource (with `dry_run`, asks the API what each would do and
/// changes nothing), then with `prune` deletes the tenant's resources the file does not name.
pub async fn apply(
    client: &Client,
    declared: &[Declared],
    prune: bool,
    dry_run: bool,
) -> CliResult<Vec<Step>> {
    // Every body first: a missing password variable stops the run before anything changes.
    let bodies = declared
        .iter()
        .map(Declared::body)
        .collect::<CliResult<Vec<_>>>()?;
    let mut steps = Vec::new();
    for (resource, body) in declared.iter().zip(&bodies) {
        let query: &[(&str, String)] = if dry_run {
            &[("dry_run", "true".into())]
        } else {
            &[]
        };
        let url = client.url(&["v1", "resources", "by-name", &resource.name], query);
        let (status, answer) = client
            .send(Method::PUT, url, Some(body), crate::client::REQUEST_TIMEOUT)
            .await
            .map_err(|e| in_resource(&resource.name, e))?;
        let action = if status == StatusCode::CREATED {
            Action::Create
        } else if answer.get("changed") == Some(&Value::Bool(true)) {
            Action::Update
        } else {
            Action::Unchanged
        };
        steps.push(Step {
            action,
            name: resource.name.clone(),
            resource: answer,
        });
    }
    if prune {
        let names: BTreeSet<&str> = declared.iter().map(|d| d.name.as_str()).collect();
        for resource in client.list_all(&["v1", "resources"], &[]).await? {
            let name = resource["name"].as_str().unwrap_or_default().to_owned();
            if names.contains(name.as_str()) {
                continue;
            }
            if !dry_run {
                let id = resource["id"].as_str().unwrap_or_default();
                client
                    .call(Method::DELETE, &["v1", "resources", id], None)
                    .await
                    .map_err(|e| in_resource(&name, e))?;
            }
            steps.push(Step {
                action: Action::Delete,
                name,
                resource,
            });
        }
    }
    Ok(steps)
}

/// Names the resource in an error, keeping its kind (and so the exit code).
fn in_resource(name: &str, e: CliError) -> CliError {
    let with = |m: String| format!("resource `{name}`: {m}");
    match e {
        CliError::Failed(m) => CliError::Failed(with(m)),
        CliError::BadInput(m) => CliError::BadInput(with(m)),
        CliError::Auth(m) => CliError::Auth(with(m)),
        CliError::Unreachable(m) => CliError::Unreachable(with(m)),
        CliError::Cancelled(m) => CliError::Cancelled(with(m)),
        CliError::TimedOut(m) => CliError::TimedOut(with(m)),
        CliError::Api(m) => CliError::Api(with(m)),
    }
}
