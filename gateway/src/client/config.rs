//! The client's own file: the servers it logged in to (contexts), each with its URL and refresh
//! token, and which one is current.
//!
//! `$DEPOT_CONFIG`, else `$XDG_CONFIG_HOME/depot/config.toml`, else `~/.config/depot/config.toml`.
//! The directory is 0700 and the file 0600: it holds credentials. Every write is a new file
//! renamed over the old one, so a crash leaves the old file or the new one, never half of each.
//! Writers that refresh tokens hold [`ConfigLock`] from reading to writing: two commands at once
//! must not both spend the same refresh token (the server would revoke the whole session).

use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::failure::Failure;

#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    /// The context commands use when `--context` does not name one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub current: Option<String>,
    #[serde(default)]
    pub contexts: BTreeMap<String, Context>,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Context {
    /// The server's base URL, e.g. `https://depot.example.com`.
    pub url: String,
    /// Who logged in: a username, or `api key` for a login with a key.
    #[serde(default)]
    pub principal: String,
    /// Single use: each refresh spends it and stores the next one.
    pub refresh_token: String,
    /// The last access token and when it expires (Unix seconds); reused until shortly before.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_token: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_expires_at: Option<u64>,
}

/// Where the file is.
pub fn path() -> Result<PathBuf, Failure> {
    if let Some(path) = std::env::var_os("DEPOT_CONFIG").filter(|p| !p.is_empty()) {
        return Ok(PathBuf::from(path));
    }
    let base = match std::env::var_os("XDG_CONFIG_HOME").filter(|p| !p.is_empty()) {
        Some(dir) => PathBuf::from(dir),
        None => match std::env::var_os("HOME").filter(|p| !p.is_empty()) {
            Some(home) => PathBuf::from(home).join(".config"),
            None => return Err(Failure::other("neither DEPOT_CONFIG, XDG_CONFIG_HOME nor HOME is set")),
        },
    };
    Ok(base.join("depot").join("config.toml"))
}

/// Reads the file; a missing file is an empty configuration.
pub fn load(path: &Path) -> Result<ConfigFile, Failure> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(ConfigFile::default()),
        Err(e) => return Err(Failure::other(format!("reading {}: {e}", path.display()))),
    };
    toml::from_str(&text).map_err(|e| Failure::other(format!("{}: {e}", path.display())))
}

/// Replaces the file atomically, with mode 0600 in a 0700 directory.
pub fn save(path: &Path, config: &ConfigFile) -> Result<(), Failure> {
    let text = toml::to_string(config).map_err(|e| Failure::other(format!("encoding the configuration: {e}")))?;
    let dir = ensure_dir(path)?;
    // A fresh name opened with create_new: never a leftover file with looser permissions, never
    // a planted symlink.
    let tmp = dir.join(format!(".config.toml.tmp-{:016x}", rand::random::<u64>()));
    let written = (|| -> std::io::Result<()> {
        let mut file = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&tmp)?;
        file.write_all(text.as_bytes())?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)?;
        std::fs::File::open(&dir)?.sync_all()
    })();
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(Failure::other(format!("writing {}: {e}", path.display())));
    }
    Ok(())
}

/// The file's directory, created 0700 if missing.
fn ensure_dir(path: &Path) -> Result<PathBuf, Failure> {
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new(".")).to_path_buf();
    if !dir.exists() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)
            .map_err(|e| Failure::other(format!("creating {}: {e}", dir.display())))?;
        // `recursive` applies the mode before the umask; the last directory is ours to set.
        let _ = std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700));
    }
    Ok(dir)
}

/// An exclusive lock on the configuration, held until dropped (or the process ends).
pub struct ConfigLock {
    _file: std::fs::File,
}

impl ConfigLock {
    /// Waits for the lock beside `path` (`config.toml.lock`).
    pub fn take(path: &Path) -> Result<ConfigLock, Failure> {
        ensure_dir(path)?;
        let lock_path = path.with_extension("toml.lock");
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(&lock_path)
            .map_err(|e| Failure::other(format!("opening {}: {e}", lock_path.display())))?;
        file.lock().map_err(|e| Failure::other(format!("locking {}: {e}", lock_path.display())))?;
        Ok(ConfigLock { _file: file })
    }
}

impl ConfigFile {
    /// The context `name` names, or the current one.
    pub fn context(&self, name: Option<&str>) -> Result<(String, &Context), Failure> {
        let name = match name.or(self.current.as_deref()) {
            Some(name) => name,
            None => {
                return Err(Failure::auth("not logged in: run `depot login URL`, or set DEPOT_URL and DEPOT_TOKEN"))
            }
        };
        let context = self.contexts.get(name).ok_or_else(|| {
            Failure::auth(format!(
                "no context {name:?}: run `depot login URL --context {name}` (`depot context ls` lists them)"
            ))
        })?;
        Ok((name.to_owned(), context))
    }
}

/// The context name a login to `url` gets by default: its host (and port), e.g. `localhost-4444`.
pub fn default_name(url: &url::Url) -> String {
    let host = url.host_str().unwrap_or("depot");
    let name = match url.port() {
        Some(port) => format!("{host}-{port}"),
        None => host.to_owned(),
    };
    name.chars().map(|c| if c.is_ascii_alphanumeric() || c == '.' || c == '-' { c } else { '-' }).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_file_is_private_and_round_trips() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let path = dir.path().join("nested/depot/config.toml");
        let mut config = ConfigFile::default();
        let context = Context {
            url: "http://127.0.0.1:4444".to_owned(),
            principal: "admin".to_owned(),
            refresh_token: "r1".to_owned(),
            access_token: None,
            access_expires_at: None,
        };
        config.contexts.insert("local".to_owned(), context);
        config.current = Some("local".to_owned());
        save(&path, &config).unwrap_or_else(|e| panic!("{e}"));
        let mode = |p: &Path| std::fs::metadata(p).map(|m| m.permissions().mode() & 0o777).unwrap_or(0);
        assert_eq!(mode(&path), 0o600);
        assert_eq!(mode(path.parent().unwrap_or(Path::new("/"))), 0o700);
        let back = load(&path).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            back.context(None).map(|(n, c)| (n, c.refresh_token.clone())).ok(),
            Some(("local".into(), "r1".into()))
        );
        assert!(back.context(Some("other")).is_err());
        assert!(load(&dir.path().join("missing.toml")).is_ok_and(|c| c.contexts.is_empty()));
    }

    #[test]
    fn default_names_come_from_the_host() {
        let url = |s: &str| url::Url::parse(s).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(default_name(&url("http://127.0.0.1:4444/")), "127.0.0.1-4444");
        assert_eq!(default_name(&url("https://depot.example.com")), "depot.example.com");
    }
}
