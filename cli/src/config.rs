//! Where the API is and which token to send: `--url`/`--token` (or `METASYNC_URL` /
//! `METASYNC_TOKEN`), else what `metasync login` stored in `$XDG_CONFIG_HOME/metasync/config.json`
//! (`~/.config/metasync/config.json` without it), a file only its owner can read.

use std::io::Write as _;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::error::{CliError, CliResult};

#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Stored {
    pub url: Option<String>,
    pub token: Option<String>,
}

/// The login file's path.
pub fn path() -> CliResult<PathBuf> {
    let dir = match std::env::var_os("XDG_CONFIG_HOME").filter(|d| !d.is_empty()) {
        Some(dir) => PathBuf::from(dir),
        None => {
            let home = std::env::var_os("HOME")
                .filter(|h| !h.is_empty())
                .ok_or_else(|| {
                    CliError::BadInput(
                        "neither XDG_CONFIG_HOME nor HOME is set: nowhere to keep the login".into(),
                    )
                })?;
            PathBuf::from(home).join(".config")
        }
    };
    Ok(dir.join("metasync").join("config.json"))
}

/// What `login` stored; empty when nothing was.
pub fn load() -> CliResult<Stored> {
    let path = path()?;
    match std::fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
            CliError::BadInput(format!(
                "{} is not a metasync login file: {e}",
                path.display()
            ))
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Stored::default()),
        Err(e) => Err(CliError::BadInput(format!(
            "reading {}: {e}",
            path.display()
        ))),
    }
}

/// Writes the login file, readable by its owner only (it holds a bearer token): created with
/// mode 0600 and replaced by a rename, so no moment exposes it.
pub fn save(stored: &Stored) -> CliResult<PathBuf> {
    let path = path()?;
    let dir = path.parent().expect("the path has a directory");
    let io = |e: std::io::Error| CliError::BadInput(format!("writing {}: {e}", path.display()));
    std::fs::create_dir_all(dir).map_err(io)?;
    let temporary = dir.join(format!(".config.json.{}", std::process::id()));
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(&temporary).map_err(io)?;
    let body = serde_json::to_vec_pretty(stored).expect("the login serializes");
    let written = file.write_all(&body).and_then(|()| file.sync_all());
    if let Err(e) = written.and_then(|()| std::fs::rename(&temporary, &path)) {
        let _ = std::fs::remove_file(&temporary);
        return Err(io(e));
    }
    Ok(path)
}
