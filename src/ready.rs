//! `--ready-file PATH`: once a server's listeners are bound, where they are,
//! as one JSON object (`{"grpc": "127.0.0.1:PORT", "admin": "127.0.0.1:PORT",
//! "health": "127.0.0.1:PORT", "console": null}`), so that scripts and tests start a server on port 0 and
//! read its real addresses instead of parsing its log. The file is written
//! beside its final name, then renamed: a reader sees the whole object or no
//! file, never half of one. `announce` says the same in the log.

use std::{
    io::Write as _,
    net::SocketAddr,
    path::{Path, PathBuf},
};

/// A server's bound addresses, as the ready file carries them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Addresses {
    pub grpc: SocketAddr,
    pub admin: SocketAddr,
    /// The health lane's; `null` with `--no-health-lane` (and for the
    /// upstream simulator, which has none).
    #[serde(default)]
    pub health: Option<SocketAddr>,
    /// tokio-console's endpoint when it is awake at start; `null` otherwise.
    pub console: Option<SocketAddr>,
}

#[derive(Debug, thiserror::Error)]
#[error("--ready-file {path}: {source}")]
pub struct ReadyFileError {
    path: PathBuf,
    source: std::io::Error,
}

/// Writes `addresses` to `path` atomically: a temporary file in the same
/// directory, then a rename over `path`.
pub fn write(path: &Path, addresses: &Addresses) -> Result<(), ReadyFileError> {
    let failed = |source| ReadyFileError {
        path: path.to_owned(),
        source,
    };
    let mut temporary = path.as_os_str().to_owned();
    temporary.push(format!(".{}.tmp", std::process::id()));
    let temporary = PathBuf::from(temporary);
    let json = serde_json::to_vec(addresses).map_err(|error| failed(error.into()))?;
    let written = std::fs::File::create(&temporary)
        .and_then(|mut file| file.write_all(&json).and_then(|()| file.sync_all()))
        .and_then(|()| std::fs::rename(&temporary, path));
    if let Err(error) = written {
        let _ = std::fs::remove_file(&temporary);
        return Err(failed(error));
    }
    Ok(())
}

/// Says where everything is, once serving: the addresses as fields (for
/// log searches), and a line each for the pages and the first call.
/// `has_console`: whether this build can wake tokio-console.
pub(crate) fn announce(addresses: &Addresses, has_console: bool) {
    let Addresses {
        grpc,
        admin,
        health,
        console,
    } = addresses;
    let console = match (console, has_console) {
        (Some(awake), _) => format!("awake at {awake}"),
        (None, true) => format!("dormant (curl -X PUT http://{admin}/debug/console wakes it)"),
        (None, false) => "not in this build".to_owned(),
    };
    let health = health.map_or_else(|| "off".to_owned(), |lane| lane.to_string());
    tracing::info!(%grpc, %admin, %health, %console, "catalogue is serving");
    tracing::info!("metrics:  http://{admin}/metrics");
    tracing::info!("profiles: http://{admin}/debug/pprof/");
    tracing::info!(
        "first call: bash scripts/python-client.sh {grpc}  (or grpcurl -plaintext {grpc} list)"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_file_holds_the_addresses_and_no_temporary_is_left() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ready.json");
        let addresses = Addresses {
            grpc: "127.0.0.1:5000".parse().unwrap(),
            admin: "127.0.0.1:6000".parse().unwrap(),
            health: None,
            console: None,
        };

        write(&path, &addresses).unwrap();

        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(
            text,
            r#"{"grpc":"127.0.0.1:5000","admin":"127.0.0.1:6000","health":null,"console":null}"#
        );
        let entries = std::fs::read_dir(dir.path()).unwrap().count();
        assert_eq!(entries, 1, "only the ready file is left");
    }

    #[test]
    fn a_directory_that_does_not_exist_is_an_error_naming_the_path() {
        let addresses = Addresses {
            grpc: "127.0.0.1:5000".parse().unwrap(),
            admin: "127.0.0.1:6000".parse().unwrap(),
            health: None,
            console: None,
        };

        let error = write(Path::new("/nonexistent/dir/ready.json"), &addresses).unwrap_err();

        assert!(
            error.to_string().contains("/nonexistent/dir/ready.json"),
            "{error}"
        );
    }
}
