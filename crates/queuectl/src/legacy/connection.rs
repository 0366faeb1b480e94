//! Where `queuectl legacy import` and `legacy status` read and write: Raptor's database, auth and
//! rbac, and the importer identity their tokens are issued as (one set of flags for both).

use clap::Args;
use std::path::PathBuf;

use super::client::{Client, Endpoint};

/// Where the import and the status read and write: Raptor's database, auth and rbac, and the
/// importer identity their tokens are issued as.
#[derive(Args)]
pub struct Connection {
    /// Raptor's database, `postgresql://USER[:PASSWORD]@HOST:PORT/DB`; read-only access is
    /// enough (everything is read in one read-only REPEATABLE READ transaction).
    #[arg(long, env = "RAPTOR_DATABASE_URL", value_name = "URL", hide_env_values = true)]
    source_url: String,
    /// The auth service (users, sessions, backup codes, passkeys).
    #[arg(long, env = "QUEUE_AUTH_URL", value_name = "URL", default_value = "http://127.0.0.1:8081")]
    auth_url: String,
    /// The rbac service (roles, grants).
    #[arg(long, env = "QUEUE_RBAC_URL", value_name = "URL", default_value = "http://127.0.0.1:8082")]
    rbac_url: String,
    /// auth's identity (its `tokens.issuer`): the audience of the tokens sent to it.
    #[arg(long, default_value = "auth")]
    auth_audience: String,
    /// rbac's identity: the audience of the tokens sent to it.
    #[arg(long, default_value = "rbac")]
    rbac_audience: String,
    /// The importer identity the tokens are issued as (one of the services' importers); its
    /// key is `<keys-dir>/<iss>.pem` unless --key is given.
    #[arg(long, env = "QUEUE_OPERATOR", default_value = "operator")]
    iss: String,
    /// The importer's signing key (PKCS#8 PEM).
    #[arg(long, env = "QUEUE_OPERATOR_KEY")]
    key: Option<PathBuf>,
    /// Where `<iss>.pem` is looked for when --key is not given.
    #[arg(long, default_value = "var/keys")]
    keys_dir: PathBuf,
}

impl Connection {
    /// Raptor's database URL, checked to be one.
    pub fn source(&self) -> anyhow::Result<&str> {
        let scheme = url::Url::parse(&self.source_url).map(|u| u.scheme().to_string()).unwrap_or_default();
        if !matches!(scheme.as_str(), "postgres" | "postgresql") {
            anyhow::bail!("--source-url must be a postgresql:// URL of Raptor's database");
        }
        Ok(&self.source_url)
    }

    /// The services' client, minting with the importer's key.
    pub fn client(&self) -> anyhow::Result<Client> {
        let key = self.key.clone().unwrap_or_else(|| self.keys_dir.join(format!("{}.pem", self.iss)));
        Client::new(
            crate::minter(&self.iss, &key)?,
            Endpoint { url: self.auth_url.clone(), audience: self.auth_audience.clone() },
            Endpoint { url: self.rbac_url.clone(), audience: self.rbac_audience.clone() },
        )
    }
}
