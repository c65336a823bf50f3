//! The collector's configuration file (TOML), strictly checked. Every key is
//! documented in `packaging/config/collector.toml`, which a test parses.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// Default listen address: loopback until told otherwise.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:7878";
/// Default database file.
pub const DEFAULT_DB: &str = "/var/lib/portwatch/collector.db";
/// Default configuration file, read when it exists and no `--config` is given.
pub const DEFAULT_CONFIG: &str = "/etc/portwatch/collector.toml";

/// The collector's configuration.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Address to listen on.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// SQLite database file.
    #[serde(default = "default_db")]
    pub db: PathBuf,
    /// Serve HTTPS with this certificate and key (default: plain HTTP).
    pub tls: Option<Tls>,
}

/// The collector's TLS certificate and key, PEM files read at start (and
/// again on SIGHUP, so a renewed certificate needs no restart).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tls {
    /// Certificate chain, the collector's own certificate first.
    pub cert: PathBuf,
    /// Private key of that certificate (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 7878))
}

fn default_db() -> PathBuf {
    PathBuf::from(DEFAULT_DB)
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: default_listen(),
            db: default_db(),
            tls: None,
        }
    }
}

impl Config {
    /// The file `path` if given, else [`DEFAULT_CONFIG`] if it exists, else the defaults.
    pub fn load(path: Option<&Path>) -> anyhow::Result<Config> {
        let path = match path {
            Some(p) => p,
            None if Path::new(DEFAULT_CONFIG).exists() => Path::new(DEFAULT_CONFIG),
            None => return Ok(Config::default()),
        };
        let text = std::fs::read_to_string(path).map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
        Config::parse(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
    }

    /// Parses configuration text; the error names the line and key.
    pub fn parse(text: &str) -> Result<Config, String> {
        toml::from_str(text).map_err(|e| e.to_string().trim_end().to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_example_parses_to_the_defaults() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../packaging/config/collector.toml");
        assert_eq!(Config::load(Some(&path)).unwrap(), Config::default());
        assert_eq!(Config::default().listen.to_string(), DEFAULT_LISTEN);
    }

    #[test]
    fn unknown_keys_and_bad_addresses_name_their_line() {
        let e = Config::parse("listen = \"0.0.0.0:7878\"\ndatabase = \"x\"\n").unwrap_err();
        assert!(e.contains("line 2") && e.contains("database"), "{e}");
        let e = Config::parse("listen = \"everywhere\"").unwrap_err();
        assert!(e.contains("line 1"), "{e}");
        assert_eq!(
            Config::parse("db = \"/srv/pw.db\"").unwrap().db,
            PathBuf::from("/srv/pw.db")
        );
        let e = Config::parse("[tls]\ncert = \"/etc/c.pem\"\n").unwrap_err();
        assert!(e.contains("key"), "{e}");
        let e = Config::parse("[tls]\ncert = \"c\"\nkey = \"k\"\nca = \"x\"\n").unwrap_err();
        assert!(e.contains("line 4") && e.contains("ca"), "{e}");
        let tls = Config::parse("[tls]\ncert = \"c.pem\"\nkey = \"k.pem\"\n")
            .unwrap()
            .tls
            .unwrap();
        assert_eq!((tls.cert, tls.key), (PathBuf::from("c.pem"), PathBuf::from("k.pem")));
    }
}
