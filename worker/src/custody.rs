//! The custody subcommands, run where the private keys are: `keygen` prints a new master key
//! pair; `rotate-master-key` re-seals every stored password and webhook secret under one
//! master key, passwords in the current record format (also migrating records of the earlier
//! AES scheme, and records sealed before the TLS settings were bound), while the old keys keep
//! opening until it ends.

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand};
use metasync_shared::config::{DatabaseArgs, OpeningArgs, decode_key32};
use metasync_shared::custody::{self, Fingerprinter, OpeningKeys, SealingKey};
use metasync_shared::db::{self, resources, webhooks};
use sqlx::PgPool;

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
    /// Re-seal every stored password and webhook secret under the key `--to` (which
    /// METASYNC_OPENING_KEYS must hold, beside the keys they are sealed under now), passwords in
    /// the current record format (bound to the TLS settings). Run it after the API seals with the new key; then the
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
            let rotation = rotate(&args).await?;
            let (passwords, secrets) = (rotation.passwords, rotation.webhook_secrets);
            println!(
                "rotate-master-key --to {:?}: passwords: {} re-sealed, {} changed meanwhile (kept), {} could not be opened; \
                 webhook secrets: {} re-sealed, {} changed meanwhile (kept), {} could not be opened",
                args.to,
                passwords.resealed,
                passwords.raced,
                passwords.unopened,
                secrets.resealed,
                secrets.raced,
                secrets.unopened,
            );
            anyhow::ensure!(
                passwords.unopened == 0,
                "{} password(s) could not be opened with METASYNC_OPENING_KEYS (and the legacy key, if given): \
                 they stay as they are; set them again through the API",
                passwords.unopened
            );
            anyhow::ensure!(
                secrets.unopened == 0,
                "{} webhook secret(s) could not be opened with METASYNC_OPENING_KEYS: they stay as \
                 they are; register those webhooks again",
                secrets.unopened
            );
            Ok(())
        }
    }
}

/// What a rotation did, to passwords and to webhook secrets.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Rotation {
    /// Source passwords.
    pub passwords: RotationReport,
    /// Webhook signing secrets.
    pub webhook_secrets: RotationReport,
}

/// What a rotation did to one kind of record.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct RotationReport {
    /// Records now sealed under the new key.
    pub resealed: u64,
    /// Records set or removed through the API while the rotation ran (already under the new
    /// key, or gone).
    pub raced: u64,
    /// Records no configured key opens.
    pub unopened: u64,
}

async fn rotate(args: &RotateArgs) -> anyhow::Result<Rotation> {
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
    Ok(Rotation {
        passwords: reseal_passwords(&pool, &keys, &to, fingerprinter.as_ref()).await?,
        webhook_secrets: reseal_webhook_secrets(&pool, &keys, &to).await?,
    })
}

async fn reseal_passwords(
    pool: &PgPool,
    keys: &OpeningKeys,
    to: &SealingKey,
    fingerprinter: Option<&Fingerprinter>,
) -> anyhow::Result<RotationReport> {
    let mut report = RotationReport::default();
    let mut after = None;
    loop {
        let page = resources::needing_reseal(pool, to.id(), after, 200).await?;
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
            let fingerprint = fingerprinter.map(|f| f.fingerprint(row.resource.id, &password));
            if resources::reseal(
                pool,
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

/// Webhook secrets have one record format: only the key changes.
async fn reseal_webhook_secrets(
    pool: &PgPool,
    keys: &OpeningKeys,
    to: &SealingKey,
) -> anyhow::Result<RotationReport> {
    let mut report = RotationReport::default();
    let mut after = None;
    loop {
        let page = webhooks::needing_reseal(pool, to.id(), after, 200).await?;
        let Some(last) = page.last() else { break };
        after = Some(last.webhook_id);
        for hook in &page {
            let old = hook.sealed_secret();
            let Ok(secret) = keys.open_webhook_secret(&old, &hook.target()) else {
                tracing::warn!(webhook_id = %hook.webhook_id, key_id = %old.key_id, "webhook secret cannot be opened; left as it is");
                report.unopened += 1;
                continue;
            };
            let resealed = to.seal_webhook_secret(&secret, &hook.target());
            if webhooks::reseal(pool, hook.webhook_id, &old, &resealed).await? {
                report.resealed += 1;
            } else {
                report.raced += 1;
            }
        }
    }
    Ok(report)
}
