//! `metasync`: the command line for people and CI scripts. Resources as code (`apply -f`),
//! syncs that wait with progress, job control, catalog reads; stable exit codes
//! ([`error::EXIT_CODES`]); `--output json` prints the API's own documents.

mod apply;
mod client;
mod config;
mod error;
mod output;
mod sync;

use std::io::BufRead as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use reqwest::Method;
use serde_json::{Value, json};

use crate::client::Client;
use crate::error::{CliError, CliResult, EXIT_CODES};
use crate::output::{Column, Format, field, print};

#[derive(Parser)]
#[command(
    name = "metasync",
    version,
    about = "Keep a catalog of database schemas fresh: resources as code, syncs that wait.",
    after_help = EXIT_CODES,
)]
struct Cli {
    #[command(flatten)]
    global: Global,
    #[command(subcommand)]
    command: Command,
}

#[derive(Args)]
struct Global {
    /// The API's base URL, e.g. https://metasync.example.com (else the `login` file).
    #[arg(long, env = "METASYNC_URL", global = true)]
    url: Option<String>,
    /// A bearer token (else the `login` file).
    #[arg(long, env = "METASYNC_TOKEN", global = true, hide_env_values = true)]
    token: Option<String>,
    /// How to print results: a table for people, or the API's own JSON (or as YAML).
    #[arg(long, short, value_enum, default_value = "table", global = true)]
    output: Format,
}

#[derive(Subcommand)]
enum Command {
    /// Store the API URL and a token in $XDG_CONFIG_HOME/metasync/config.json (mode 0600);
    /// the token is read from stdin unless --token (or METASYNC_TOKEN) gives it.
    Login,
    /// Register, read, apply and delete resources (sources).
    #[command(subcommand)]
    Resources(ResourcesCommand),
    /// Sync resources; with --wait, follow the jobs to their end.
    #[command(after_help = EXIT_CODES)]
    Sync(SyncArgs),
    /// List, read, cancel and retry jobs.
    #[command(subcommand)]
    Jobs(JobsCommand),
    /// A resource's catalogued tables and views.
    Tables(TablesArgs),
    /// Tables and columns of every resource whose name contains TEXT.
    Search {
        /// At least 3 characters.
        text: String,
    },
    /// A resource's schema changes, oldest first.
    Changes {
        /// The resource's name.
        name: String,
        /// Only changes since this RFC 3339 time, or this long ago (30m, 24h, 7d).
        #[arg(long)]
        since: Option<String>,
    },
}

#[derive(Subcommand)]
enum ResourcesCommand {
    /// Every resource.
    List,
    /// One resource, by name.
    Get { name: String },
    /// Create or update the resources a YAML file declares, by name; prints the plan.
    #[command(after_help = APPLY_HELP)]
    Apply {
        /// The YAML file (`-` for stdin is not accepted: passwords are named relative to it).
        #[arg(long, short = 'f')]
        file: PathBuf,
        /// Also delete the resources the file does not declare.
        #[arg(long)]
        prune: bool,
        /// Show the plan, change nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Delete a resource (its catalog goes with it).
    Delete { name: String },
}

const APPLY_HELP: &str = "\
The file:
  resources:
    - name: shop
      kind: postgres            # or mysql
      host: db.example.com
      port: 5432
      database: shop
      username: reader
      password_env: SHOP_PASSWORD      # or password_file: ./secrets/shop (relative to the file)
      schedule: {interval_seconds: 3600}
      tls: {mode: verify-full}
An inline `password` is refused. Other fields are the API's (POST /v1/resources).";

#[derive(Args)]
struct SyncArgs {
    /// The resources' names.
    #[arg(required_unless_present = "all", conflicts_with = "all")]
    names: Vec<String>,
    /// Every resource.
    #[arg(long)]
    all: bool,
    /// Wait until the jobs finish; the exit code says how they ended.
    #[arg(long)]
    wait: bool,
    /// With --wait: give up (exit 6) after this long (30s, 5m, 1h).
    #[arg(long, default_value = "5m", value_parser = sync::parse_duration)]
    timeout: Duration,
    /// With --wait: no progress display.
    #[arg(long, short)]
    quiet: bool,
}

#[derive(Subcommand)]
enum JobsCommand {
    /// Jobs, newest first.
    List {
        /// Only this resource's jobs (by name).
        #[arg(long)]
        resource: Option<String>,
        /// Only jobs in this state (queued, running, retrying, succeeded, failed, cancelled).
        #[arg(long)]
        state: Option<String>,
        /// At most this many.
        #[arg(long, default_value_t = 50)]
        limit: u32,
    },
    /// One job, with its attempts.
    Get { id: String },
    /// Cancel a job.
    Cancel { id: String },
    /// Start a new job for a failed or cancelled one.
    Retry { id: String },
}

#[derive(Args)]
struct TablesArgs {
    /// The resource's name.
    name: String,
    /// Only this database.
    #[arg(long)]
    database: Option<String>,
    /// Only this schema.
    #[arg(long)]
    schema: Option<String>,
    /// Only this kind (table, view, materialized_view, partitioned_table, foreign_table).
    #[arg(long)]
    kind: Option<String>,
    /// Only tables whose name contains this.
    #[arg(long)]
    filter: Option<String>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("metasync: {e}");
            e.exit_code()
        }
    }
}

async fn run(cli: Cli) -> CliResult<()> {
    let format = cli.global.output;
    if let Command::Login = cli.command {
        return login(cli.global).await;
    }
    let client = connect(cli.global)?;
    match cli.command {
        Command::Login => unreachable!("handled above"),
        Command::Resources(command) => resources(&client, command, format).await,
        Command::Sync(args) => sync_command(&client, args, format).await,
        Command::Jobs(command) => jobs(&client, command, format).await,
        Command::Tables(args) => tables(&client, args, format).await,
        Command::Search { text } => {
            let items = client.list_all(&["v1", "search"], &[("q", text)]).await?;
            let columns = [
                col("RESOURCE", |v| {
                    first_of(v, &["/resource_name", "/resource_id"])
                }),
                col("KIND", |v| field(v, "/kind")),
                col("DATABASE", |v| field(v, "/database")),
                col("SCHEMA", |v| field(v, "/schema")),
                col("TABLE", |v| field(v, "/table")),
                col("NAME", |v| field(v, "/name")),
                col("TYPE", |v| first_of(v, &["/data_type", "/table_kind"])),
            ];
            print(format, &page(items.clone()), &items, &columns);
            Ok(())
        }
        Command::Changes { name, since } => {
            let resource = client.resource_by_name(&name).await?;
            let id = resource["id"].as_str().unwrap_or_default();
            let mut query = Vec::new();
            if let Some(since) = since {
                query.push(("since", since_time(&since)?));
            }
            let items = client
                .list_all(&["v1", "resources", id, "changes"], &query)
                .await?;
            let columns = [
                col("AT", |v| field(v, "/created_at")),
                col("CHANGE", |v| field(v, "/kind")),
                col("DATABASE", |v| field(v, "/database")),
                col("SCHEMA", |v| field(v, "/schema")),
                col("TABLE", |v| field(v, "/table")),
                col("OBJECT", |v| field(v, "/object_name")),
            ];
            print(format, &page(items.clone()), &items, &columns);
            Ok(())
        }
    }
}

/// The client for the URL and token given, else the login file's.
fn connect(global: Global) -> CliResult<Client> {
    let stored = config::load()?;
    let url = global.url.or(stored.url).ok_or_else(|| {
        CliError::BadInput("no API URL: set METASYNC_URL, pass --url, or `metasync login`".into())
    })?;
    let token = global.token.or(stored.token).ok_or_else(|| {
        CliError::Auth("no token: set METASYNC_TOKEN, pass --token, or `metasync login`".into())
    })?;
    Client::new(&url, token)
}

async fn login(global: Global) -> CliResult<()> {
    let url = global
        .url
        .ok_or_else(|| CliError::BadInput("login needs --url (or METASYNC_URL)".into()))?;
    let token = match global.token {
        Some(token) => token,
        None => {
            eprintln!("token (read from stdin):");
            let mut line = String::new();
            std::io::stdin()
                .lock()
                .read_line(&mut line)
                .map_err(|e| CliError::BadInput(format!("reading the token: {e}")))?;
            line.trim().to_owned()
        }
    };
    if token.is_empty() {
        return Err(CliError::BadInput("the token is empty".into()));
    }
    // Checked before it is stored: a typo is found now, not in the next CI run.
    let client = Client::new(&url, token.clone())?;
    client
        .get(&["v1", "resources"], &[("limit", "1".into())])
        .await?;
    let path = config::save(&config::Stored {
        url: Some(url.clone()),
        token: Some(token),
    })?;
    eprintln!("logged in to {url}; saved to {}", path.display());
    Ok(())
}

fn col(header: &'static str, read: fn(&Value) -> String) -> Column {
    Column { header, read }
}

/// The first of several fields that is present (the catalog's documents name a few things
/// differently per listing).
fn first_of(v: &Value, pointers: &[&str]) -> String {
    pointers
        .iter()
        .find_map(|p| v.pointer(p).filter(|x| !x.is_null()))
        .map_or_else(|| "-".into(), |x| output::text(Some(x)))
}

/// Every page's items as one page, the listing's own shape.
fn page(items: Vec<Value>) -> Value {
    json!({ "items": items, "next_cursor": null })
}

fn resource_columns() -> [Column; 6] {
    [
        col("NAME", |v| field(v, "/name")),
        col("KIND", |v| field(v, "/kind")),
        col("HOST", |v| {
            format!("{}:{}", field(v, "/host"), field(v, "/port"))
        }),
        col("DATABASE", |v| field(v, "/database")),
        col("LAST SYNC", |v| field(v, "/last_sync/state")),
        col("ID", |v| field(v, "/id")),
    ]
}

async fn resources(client: &Client, command: ResourcesCommand, format: Format) -> CliResult<()> {
    match command {
        ResourcesCommand::List => {
            let items = client.list_all(&["v1", "resources"], &[]).await?;
            print(format, &page(items.clone()), &items, &resource_columns());
        }
        ResourcesCommand::Get { name } => {
            let resource = client.resource_by_name(&name).await?;
            print(
                format,
                &resource,
                std::slice::from_ref(&resource),
                &resource_columns(),
            );
        }
        ResourcesCommand::Delete { name } => {
            let resource = client.resource_by_name(&name).await?;
            let id = resource["id"].as_str().unwrap_or_default();
            client
                .call(Method::DELETE, &["v1", "resources", id], None)
                .await?;
            if format == Format::Table {
                println!("deleted {name}");
            } else {
                print(format, &resource, &[], &[]);
            }
        }
        ResourcesCommand::Apply {
            file,
            prune,
            dry_run,
        } => {
            let declared = apply::parse(&file)?;
            let steps = apply::apply(client, &declared, prune, dry_run).await?;
            let count = |a: apply::Action| steps.iter().filter(|s| s.action == a).count();
            let (create, update, unchanged, delete) = (
                count(apply::Action::Create),
                count(apply::Action::Update),
                count(apply::Action::Unchanged),
                count(apply::Action::Delete),
            );
            if format == Format::Table {
                let width = steps.iter().map(|s| s.name.len()).max().unwrap_or(0);
                for step in &steps {
                    println!("{:<9}  {:<width$}", step.action.as_str(), step.name);
                }
                let verb = if dry_run { "would be " } else { "" };
                println!(
                    "{create} {verb}created, {update} {verb}updated, {unchanged} unchanged, \
                     {delete} {verb}deleted{}",
                    if dry_run {
                        " (dry run: nothing changed)"
                    } else {
                        ""
                    }
                );
            } else {
                let doc = json!({ "dry_run": dry_run, "steps": steps });
                print(format, &doc, &[], &[]);
            }
        }
    }
    Ok(())
}

fn job_columns() -> [Column; 6] {
    [
        col("RESOURCE", |v| {
            first_of(v, &["/resource_name", "/resource_id"])
        }),
        col("JOB", |v| field(v, "/id")),
        col("STATE", |v| field(v, "/state")),
        col("ATTEMPTS", |v| {
            format!("{}/{}", field(v, "/attempts"), field(v, "/max_attempts"))
        }),
        col("TABLES", |v| field(v, "/stats/tables")),
        col("ERROR", |v| {
            let e = field(v, "/error");
            e.lines().next().unwrap_or("-").to_owned()
        }),
    ]
}

async fn sync_command(client: &Client, args: SyncArgs, format: Format) -> CliResult<()> {
    let mut tracked = sync::enqueue(client, &args.names, args.all).await?;
    if args.wait {
        sync::wait(client, &mut tracked, args.timeout, args.quiet).await?;
    }
    let jobs: Vec<Value> = tracked
        .iter()
        .map(|t| {
            let mut job = t.job.clone();
            // Which resource, by name, for the table (the job's own fields stay as they are).
            if format == Format::Table {
                job["resource_name"] = Value::String(t.name.clone());
            }
            job
        })
        .collect();
    print(format, &Value::Array(jobs.clone()), &jobs, &job_columns());
    if args.wait {
        sync::outcome(&tracked)
    } else {
        Ok(())
    }
}

async fn jobs(client: &Client, command: JobsCommand, format: Format) -> CliResult<()> {
    match command {
        JobsCommand::List {
            resource,
            state,
            limit,
        } => {
            let mut query = vec![("limit", limit.clamp(1, 1000).to_string())];
            if let Some(name) = resource {
                let r = client.resource_by_name(&name).await?;
                query.push(("resource_id", r["id"].as_str().unwrap_or_default().into()));
            }
            if let Some(state) = state {
                query.push(("state", state));
            }
            let page = client.get(&["v1", "jobs"], &query).await?;
            let items = page["items"].as_array().cloned().unwrap_or_default();
            print(format, &page, &items, &job_columns());
        }
        JobsCommand::Get { id } => {
            let job = client.get(&["v1", "jobs", &id], &[]).await?;
            print(format, &job, std::slice::from_ref(&job), &job_columns());
        }
        JobsCommand::Cancel { id } => {
            let (_, job) = client
                .call(Method::POST, &["v1", "jobs", &id, "cancel"], None)
                .await?;
            print(format, &job, std::slice::from_ref(&job), &job_columns());
        }
        JobsCommand::Retry { id } => {
            let (_, job) = client
                .call(Method::POST, &["v1", "jobs", &id, "retry"], None)
                .await?;
            print(format, &job, std::slice::from_ref(&job), &job_columns());
        }
    }
    Ok(())
}

async fn tables(client: &Client, args: TablesArgs, format: Format) -> CliResult<()> {
    let resource = client.resource_by_name(&args.name).await?;
    let id = resource["id"].as_str().unwrap_or_default();
    let mut query = Vec::new();
    for (key, value) in [
        ("database", args.database),
        ("schema", args.schema),
        ("kind", args.kind),
        ("q", args.filter),
    ] {
        if let Some(value) = value {
            query.push((key, value));
        }
    }
    let items = client
        .list_all(&["v1", "resources", id, "tables"], &query)
        .await?;
    let columns = [
        col("DATABASE", |v| field(v, "/database")),
        col("SCHEMA", |v| field(v, "/schema")),
        col("NAME", |v| field(v, "/name")),
        col("KIND", |v| field(v, "/kind")),
        col("ROWS", |v| field(v, "/row_estimate")),
        col("ID", |v| field(v, "/id")),
    ];
    print(format, &page(items.clone()), &items, &columns);
    Ok(())
}

/// `--since`: an RFC 3339 time as is, or a duration ago.
fn since_time(since: &str) -> CliResult<String> {
    if since.contains('T') || since.contains('-') {
        return Ok(since.to_owned());
    }
    let ago = sync::parse_duration(since).map_err(CliError::BadInput)?;
    let ago = chrono::Duration::from_std(ago)
        .map_err(|_| CliError::BadInput(format!("`--since {since}` is too long ago")))?;
    let at = chrono::Utc::now() - ago;
    Ok(at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
}
