//! Layered configuration: built-in defaults < TOML file < environment.
//!
//! Each service describes its settings as a serde struct whose `Default` is a
//! configuration that works on a developer's machine. The file comes from
//! `--config` or `SWITCHBOARD_<SERVICE>_CONFIG`; any key can be overridden by
//! `SWITCHBOARD_<SERVICE>__<SECTION>__<KEY>`. Structs deny unknown fields, so a
//! misspelled key stops the service with an error that names it instead of being
//! silently ignored.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// Why a service could not read its configuration. The messages name the file,
/// the variable or the key at fault, because an operator reads them in the journal.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("configuration file {path} does not exist")]
    MissingFile { path: PathBuf },
    #[error("invalid configuration: {0}")]
    Invalid(String),
    #[error("cannot build the defaults: {0}")]
    Defaults(String),
}

/// Settings every service has under `[runtime]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RuntimeSettings {
    /// How long in-flight requests may drain after SIGTERM before the process exits.
    pub shutdown_timeout_ms: u64,
    /// A `tracing` filter directive (`RUST_LOG` wins when set).
    pub log_filter: String,
    /// Where logs go.
    pub log_target: LogTarget,
}

impl Default for RuntimeSettings {
    fn default() -> Self {
        Self {
            shutdown_timeout_ms: 10_000,
            log_filter: "info".to_owned(),
            log_target: LogTarget::Auto,
        }
    }
}

impl RuntimeSettings {
    pub fn shutdown_timeout(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.shutdown_timeout_ms)
    }
}

/// Settings every service has under `[telemetry]`: where its OpenTelemetry
/// traces go. Without an endpoint no span is exported and no trace context
/// is read or sent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TelemetrySettings {
    /// An OTLP/gRPC collector (`http://127.0.0.1:4317`); unset: traces off.
    pub otlp_endpoint: Option<String>,
    /// The share of traces this service starts (a request that arrives
    /// without a `traceparent`) that are recorded, 0.0 to 1.0. A request
    /// that arrives with one follows its caller's decision, so a trace is
    /// recorded whole or not at all.
    pub sample_ratio: f64,
}

impl Default for TelemetrySettings {
    fn default() -> Self {
        Self {
            otlp_endpoint: None,
            sample_ratio: 1.0,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogTarget {
    /// journald when stderr is connected to the journal, stderr otherwise.
    Auto,
    Journald,
    Stderr,
}

/// Where a service's configuration comes from. [`Sources::from_process`] is what
/// binaries use; tests build one by hand so they never touch the process environment.
#[derive(Debug, Clone, Default)]
pub struct Sources {
    /// A file named explicitly (`--config`, or the `_CONFIG` variable).
    pub file: Option<PathBuf>,
    /// Candidate override variables; only those with the service's prefix are used.
    pub env: HashMap<String, String>,
}

impl Sources {
    /// The file from the command line, else from `SWITCHBOARD_<SERVICE>_CONFIG`,
    /// and the process environment for overrides.
    pub fn from_process(service: &str, cli_file: Option<PathBuf>) -> Self {
        let file = cli_file.or_else(|| std::env::var_os(file_variable(service)).map(PathBuf::from));
        Self {
            file,
            env: std::env::vars().collect(),
        }
    }
}

/// `SWITCHBOARD_AUTH_CONFIG` for `auth`.
pub fn file_variable(service: &str) -> String {
    format!("{}_CONFIG", env_prefix(service))
}

/// `SWITCHBOARD_AUTH` for `auth`; keys follow after a double underscore.
pub fn env_prefix(service: &str) -> String {
    format!(
        "SWITCHBOARD_{}",
        service.to_ascii_uppercase().replace('-', "_")
    )
}

/// Loads `T` for `service`, layering defaults, the file and the environment.
pub fn load<T>(service: &str, sources: &Sources) -> Result<T, ConfigError>
where
    T: Default + Serialize + DeserializeOwned,
{
    let defaults = config::Config::try_from(&T::default())
        .map_err(|err| ConfigError::Defaults(err.to_string()))?;
    let mut builder = config::Config::builder().add_source(defaults);
    if let Some(path) = &sources.file {
        builder = builder.add_source(toml_file(path)?);
    }
    let prefix = env_prefix(service);
    let overrides: HashMap<String, String> = sources
        .env
        .iter()
        .filter(|(key, _)| key.starts_with(&format!("{prefix}__")))
        .map(|(key, value)| (key.clone(), value.clone()))
        .collect();
    builder = builder.add_source(
        config::Environment::with_prefix(&prefix)
            .prefix_separator("__")
            .separator("__")
            .try_parsing(true)
            .source(Some(overrides)),
    );
    builder
        .build()
        .and_then(|merged| merged.try_deserialize())
        .map_err(|err| ConfigError::Invalid(err.to_string()))
}

fn toml_file(
    path: &Path,
) -> Result<config::File<config::FileSourceFile, config::FileFormat>, ConfigError> {
    if !path.is_file() {
        return Err(ConfigError::MissingFile {
            path: path.to_owned(),
        });
    }
    Ok(config::File::from(path)
        .format(config::FileFormat::Toml)
        .required(true))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[derive(Debug, Default, Serialize, Deserialize, PartialEq)]
    #[serde(default, deny_unknown_fields)]
    struct Demo {
        listen: Listen,
        database: Database,
        runtime: RuntimeSettings,
    }

    #[derive(Debug, Serialize, Deserialize, PartialEq)]
    #[serde(default, deny_unknown_fields)]
    struct Listen {
        http: std::net::SocketAddr,
    }

    #[derive(Debug, Serialize, Deserialize, PartialEq)]
    #[serde(default, deny_unknown_fields)]
    struct Database {
        url: String,
        max_connections: u32,
    }

    impl Default for Listen {
        fn default() -> Self {
            Self {
                http: "127.0.0.1:8081".parse().expect("literal address"),
            }
        }
    }
    impl Default for Database {
        fn default() -> Self {
            Self {
                url: "postgres://default".into(),
                max_connections: 10,
            }
        }
    }

    fn file_with(contents: &str) -> tempfile::NamedTempFile {
        let mut file = tempfile::Builder::new()
            .suffix(".toml")
            .tempfile()
            .expect("temp file");
        file.write_all(contents.as_bytes()).expect("write");
        file
    }

    fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn defaults_apply_without_file_or_environment() {
        let loaded: Demo = load("demo", &Sources::default()).expect("defaults load");
        assert_eq!(loaded, Demo::default());
    }

    #[test]
    fn file_overrides_defaults_and_environment_overrides_file() {
        let file = file_with("[database]\nurl = \"postgres://from-file\"\nmax_connections = 3\n");
        let sources = Sources {
            file: Some(file.path().to_owned()),
            env: env(&[
                ("SWITCHBOARD_DEMO__DATABASE__MAX_CONNECTIONS", "7"),
                ("SWITCHBOARD_DEMO__LISTEN__HTTP", "127.0.0.1:9999"),
                // Another service's variables must not leak in.
                ("SWITCHBOARD_OTHER__DATABASE__URL", "postgres://other"),
            ]),
        };
        let loaded: Demo = load("demo", &sources).expect("layered load");
        assert_eq!(loaded.database.url, "postgres://from-file");
        assert_eq!(loaded.database.max_connections, 7);
        assert_eq!(loaded.listen.http.port(), 9999);
        assert_eq!(loaded.runtime, RuntimeSettings::default());
    }

    #[test]
    fn unknown_key_in_file_is_named_in_the_error() {
        let file = file_with("[database]\nmax_conections = 3\n");
        let sources = Sources {
            file: Some(file.path().to_owned()),
            env: HashMap::new(),
        };
        let err = load::<Demo>("demo", &sources).expect_err("typo must fail");
        assert!(err.to_string().contains("max_conections"), "{err}");
    }

    #[test]
    fn wrong_type_in_environment_names_the_key() {
        let sources = Sources {
            file: None,
            env: env(&[("SWITCHBOARD_DEMO__DATABASE__MAX_CONNECTIONS", "many")]),
        };
        let err = load::<Demo>("demo", &sources).expect_err("wrong type must fail");
        assert!(err.to_string().contains("max_connections"), "{err}");
    }

    #[test]
    fn explicitly_named_file_must_exist() {
        let sources = Sources {
            file: Some("/nonexistent/switchboard.toml".into()),
            env: HashMap::new(),
        };
        let err = load::<Demo>("demo", &sources).expect_err("missing file must fail");
        assert!(matches!(err, ConfigError::MissingFile { .. }), "{err}");
    }

    #[test]
    fn variable_names_follow_the_documented_scheme() {
        assert_eq!(file_variable("auth"), "SWITCHBOARD_AUTH_CONFIG");
        assert_eq!(env_prefix("logger"), "SWITCHBOARD_LOGGER");
    }
}
