//! A private PostgreSQL server for tests and the chaos harness that stop, crash or restart the
//! database: they never touch the shared server on 5432 that other tests are using.
//!
//! `initdb` refuses to run as root, so the cluster is created and run as the `postgres` user
//! (through `runuser` when the harness runs as root), in a temp dir of its own, on a free port
//! bound to 127.0.0.1 only, with trust authentication. Stopped by `pg_ctl -m immediate` and
//! removed when dropped.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::Context as _;
use uuid::Uuid;

use crate::eventually;

/// A PostgreSQL cluster of its own, on `127.0.0.1:port`, superuser `postgres`, trust auth.
pub struct PostgresServer {
    pub port: u16,
    bin: PathBuf,
    dir: PathBuf,
}

impl PostgresServer {
    /// Creates the cluster and starts it; answers queries when this returns.
    pub async fn start() -> anyhow::Result<Self> {
        let bin = postgres_bin_dir()?;
        let dir = std::env::temp_dir().join(format!("mstest-pg-{}", Uuid::now_v7().simple()));
        std::fs::create_dir_all(&dir)?;
        let mut server = Self { port: 0, bin, dir };
        server.chown_to_postgres()?;
        server
            .run_as_postgres(
                "initdb",
                &[
                    "-D",
                    &server.data_dir(),
                    "--auth=trust",
                    "-U",
                    "postgres",
                    "--no-sync",
                    "--encoding=UTF8",
                    "--locale=C",
                ],
            )
            .context("initdb")?;
        // The port is free when picked but could be taken before the postmaster binds it: then
        // `pg_ctl start -w` fails, and another port is tried.
        for _ in 0..5 {
            server.port = free_port()?;
            if server.start_again().await.is_ok() {
                return Ok(server);
            }
        }
        anyhow::bail!("postgres did not start on a free port")
    }

    /// Starts the (stopped) server again on the same port and data; returns once it answers.
    pub async fn start_again(&self) -> anyhow::Result<()> {
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c max_connections=300 \
             -c fsync=off -c shared_buffers=64MB",
            self.port,
            self.dir.display()
        );
        let log = self.dir.join("postgres.log");
        self.run_as_postgres(
            "pg_ctl",
            &[
                "start",
                "-w",
                "-t",
                "60",
                "-D",
                &self.data_dir(),
                "-l",
                &log.display().to_string(),
                "-o",
                &options,
            ],
        )?;
        let url = self.url("postgres");
        eventually(Duration::from_secs(60), "postgres to answer", || {
            let url = url.clone();
            async move {
                let answered = async {
                    let pool = sqlx::PgPool::connect(&url).await?;
                    sqlx::query("select 1").execute(&pool).await?;
                    pool.close().await;
                    Ok::<_, sqlx::Error>(())
                }
                .await;
                Ok(answered.is_ok().then_some(()))
            }
        })
        .await
    }

    /// `pg_ctl stop -m immediate`: every backend is killed at once, no checkpoint; the next
    /// start runs crash recovery.
    pub fn stop_immediate(&self) -> anyhow::Result<()> {
        self.run_as_postgres(
            "pg_ctl",
            &["stop", "-m", "immediate", "-D", &self.data_dir()],
        )
    }

    /// A URL for `database` as the superuser.
    pub fn url(&self, database: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{database}", self.port)
    }

    /// Creates a database on this server.
    pub async fn create_database(&self, name: &str) -> anyhow::Result<()> {
        let pool = sqlx::PgPool::connect(&self.url("postgres")).await?;
        sqlx::query(sqlx::AssertSqlSafe(format!("create database \"{name}\"")))
            .execute(&pool)
            .await?;
        pool.close().await;
        Ok(())
    }

    /// The server's log (`pg_ctl -l`).
    pub fn log_path(&self) -> PathBuf {
        self.dir.join("postgres.log")
    }

    fn data_dir(&self) -> String {
        self.dir.join("data").display().to_string()
    }

    fn chown_to_postgres(&self) -> anyhow::Result<()> {
        if !running_as_root() {
            return Ok(());
        }
        let status = Command::new("chown")
            .args(["postgres:postgres"])
            .arg(&self.dir)
            .status()?;
        anyhow::ensure!(status.success(), "chown postgres {}", self.dir.display());
        Ok(())
    }

    fn run_as_postgres(&self, tool: &str, args: &[&str]) -> anyhow::Result<()> {
        let program = self.bin.join(tool);
        let mut command = if running_as_root() {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(&program);
            c
        } else {
            Command::new(&program)
        };
        let output = command
            .args(args)
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .output()
            .with_context(|| format!("running {}", program.display()))?;
        anyhow::ensure!(
            output.status.success(),
            "{tool} {args:?}: {}\n{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
        Ok(())
    }
}

impl Drop for PostgresServer {
    fn drop(&mut self) {
        // Already stopped is fine: the error is ignored.
        let _ = self.stop_immediate();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn running_as_root() -> bool {
    std::env::var("USER").is_ok_and(|u| u == "root")
        || Command::new("id")
            .arg("-u")
            .output()
            .is_ok_and(|o| o.stdout.trim_ascii() == b"0")
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// The newest installed PostgreSQL's `bin` (Debian layout), or the directory of `pg_ctl` on
/// `PATH`.
fn postgres_bin_dir() -> anyhow::Result<PathBuf> {
    let root = Path::new("/usr/lib/postgresql");
    if let Ok(entries) = std::fs::read_dir(root) {
        let mut versions: Vec<(u32, PathBuf)> = entries
            .filter_map(Result::ok)
            .filter_map(|e| {
                let version = e.file_name().to_str()?.parse().ok()?;
                let bin = e.path().join("bin");
                bin.join("initdb").exists().then_some((version, bin))
            })
            .collect();
        versions.sort();
        if let Some((_, bin)) = versions.pop() {
            return Ok(bin);
        }
    }
    let output = Command::new("sh")
        .args(["-c", "command -v pg_ctl"])
        .output()?;
    let path = PathBuf::from(String::from_utf8(output.stdout)?.trim());
    path.parent()
        .filter(|_| output.status.success())
        .map(Path::to_path_buf)
        .context("no PostgreSQL server binaries (initdb, pg_ctl) found")
}
