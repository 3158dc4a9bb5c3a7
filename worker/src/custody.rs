//! The custody subcommands, run where the private keys are: `keygen` prints a new master key
//! pair; `rotate-master-key` re-seals every stored password under one master key and in the
//! current record format (also migrating records of the earlier AES scheme, and records sealed
//! before the TLS settings were bound), while the old keys keep opening until it ends.

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand};
use metasync_shared::config::{DatabaseArgs, OpeningArgs, decode_key32};
use metasync_shared::custody::{self, Fingerprinter};
use metasync_shared::db::{self, resources};

/// `metasync-worker keygen | rotate-master-key`.
#[derive(Parser)]
#[command(
    name = "metasync-worker",
    about = "Master keys of the stored source passwords"
)]
pub struct CustodyCli {
    #[command(subcommand)]
    command: CustodyCommand,
}

#[derive(Subcommand)]
enum CustodyCommand {
    /// Print a new master key pair: METASYNC_OPENING_KEYS for workers (private, add it to the
    /// existing ones while rotating) and METASYNC_SEALING_KEY for the API (public).
    Keygen {
        /// The key's id, e.g. the month it was made.
        #[arg(long)]
        key_id: String,
    },
    /// Re-seal every stored password under the key `--to` (which METASYNC_OPENING_KEYS must
    /// hold, beside the keys the passwords are sealed under now) and in the current record
    /// format (bound to the TLS settings). Run it after the API seals with the new key; then the
    /// old keys can be removed from the workers. With `--to` the current key, it migrates older
    /// records alone.
    RotateMasterKey(RotateArgs),
}

#[derive(Args)]
struct RotateArgs {
    /// The id of the key to re-seal under.
    #[arg(long)]
    to: String,
    #[command(flatten)]
    database: DatabaseArgs,
    #[command(flatten)]
    opening: OpeningArgs,
    /// The API's METASYNC_PASSWORD_FINGERPRINT_KEY, to fingerprint passwords that have none
    /// (those stored before fingerprints existed).
    #[arg(
        long = "password-fingerprint-key",
        env = "METASYNC_PASSWORD_FINGERPRINT_KEY",
        hide_env_values = true
    )]
    fingerprint_key: Option<String>,
}

/// Whether `args` (the process's arguments, program name first) name a custody subcommand.
pub fn is_custody_command(args: &[String]) -> bool {
    matches!(
        args.get(1).map(String::as_str),
        Some("keygen" | "rotate-master-key")
    )
}

/// Runs a custody subcommand.
pub async fn run(cli: CustodyCli) -> anyhow::Result<()> {
    match cli.command {
        CustodyCommand::Keygen { key_id } => {
            let (opening, sealing) = custody::generate(&key_id)?;
            println!("METASYNC_OPENING_KEYS={opening}");
            println!("METASYNC_SEALING_KEY={sealing}");
            Ok(())
        }
        CustodyCommand::RotateMasterKey(args) => {
            let report = rotate(&args).await?;
            println!(
                "rotate-master-key: {} re-sealed under {:?}, {} changed meanwhile (kept), {} could not be opened",
                report.resealed, args.to, report.raced, report.unopened
            );
            anyhow::ensure!(
                report.unopened == 0,
                "{} password(s) could not be opened with METASYNC_OPENING_KEYS (and the legacy key, if given): \
                 they stay as they are; set them again through the API",
                report.unopened
            );
            Ok(())
        }
    }
}

/// What a rotation did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct RotationReport {
    /// Passwords now sealed under the new key.
    pub resealed: u64,
    /// Passwords set through the API while the rotation ran (already under the new key).
    pub raced: u64,
    /// Passwords no configured key opens.
    pub unopened: u64,
}

async fn rotate(args: &RotateArgs) -> anyhow::Result<RotationReport> {
    let keys = args.opening.keys()?;
    let to = keys.sealing_key(&args.to).with_context(|| {
        format!(
            "METASYNC_OPENING_KEYS has no key {:?} to re-seal under",
            args.to
        )
    })?;
    let fingerprinter = args
        .fingerprint_key
        .as_deref()
        .map(|key| decode_key32("METASYNC_PASSWORD_FINGERPRINT_KEY", key).map(Fingerprinter::new))
        .transpose()?;
    let pool = db::connect(&args.database)
        .await
        .context("connecting to DATABASE_URL")?;
    let mut report = RotationReport::default();
    let mut after = None;
    loop {
        let page = resources::needing_reseal(&pool, to.id(), after, 200).await?;
        let Some(last) = page.last() else { break };
        after = Some(last.resource.id);
        for row in &page {
            let old = row.sealed_password();
            let Ok(password) = keys.open(&old, &row.target()) else {
                tracing::warn!(resource_id = %row.resource.id, key_id = %old.key_id, "password cannot be opened; left as it is");
                report.unopened += 1;
                continue;
            };
            let resealed = to.seal(&password, &row.target());
            let fingerprint = fingerprinter
                .as_ref()
                .map(|f| f.fingerprint(row.resource.id, &password));
            if resources::reseal(
                &pool,
                row.resource.id,
                &old,
                &resealed,
                fingerprint.as_deref(),
            )
            .await?
            {
                report.resealed += 1;
            } else {
                report.raced += 1;
            }
        }
    }
    Ok(report)
}
