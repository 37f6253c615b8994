//! The front-end's configuration: sections and keys exactly as in the README's
//! table (`SWITCHBOARD_FRONTEND__<SECTION>__<KEY>` overrides any of them).

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};
use switchboard_runtime::service::ServiceSettings;
use switchboard_runtime::{HttpLimits, RuntimeSettings, TelemetrySettings};

/// Everything `switchboard-frontend` can be configured with.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    /// Addresses to bind when no socket is passed in.
    pub listen: Listen,
    /// What the test page is told.
    pub page: Page,
    /// Bounds of the HTTP door: connections, timeouts, header sizes.
    pub http: HttpLimits,
    /// Shutdown and logging, shared by every service.
    pub runtime: RuntimeSettings,
    /// Where traces go (none by default).
    pub telemetry: TelemetrySettings,
}

impl ServiceSettings for Settings {
    fn runtime(&self) -> &RuntimeSettings {
        &self.runtime
    }

    fn telemetry(&self) -> &TelemetrySettings {
        &self.telemetry
    }
}

/// `[listen]`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Listen {
    /// The test page and its assets; socket name `http`.
    pub http: SocketAddr,
    /// The metrics door (socket name `metrics`): none unless set or passed.
    pub metrics: Option<SocketAddr>,
}

impl Default for Listen {
    fn default() -> Self {
        Self {
            http: SocketAddr::from(([127, 0, 0, 1], 8084)),
            metrics: None,
        }
    }
}

/// `[page]`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Page {
    /// Where the page's buttons send their requests, as the *browser* reaches
    /// the broker: an `http(s)://host[:port][/prefix]` URL, or a path such as
    /// `/api` when a reverse proxy serves the broker on the page's own origin.
    pub broker_url: String,
}

impl Default for Page {
    fn default() -> Self {
        Self {
            broker_url: "http://127.0.0.1:8080".to_owned(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use switchboard_runtime::config::{Sources, load};

    #[test]
    fn defaults_match_the_readme() {
        let settings: Settings = load("frontend", &Sources::default()).expect("defaults load");
        assert_eq!(settings, Settings::default());
        assert_eq!(settings.listen.http.to_string(), "127.0.0.1:8084");
        assert_eq!(settings.page.broker_url, "http://127.0.0.1:8080");
    }

    #[test]
    fn the_example_file_spells_out_the_defaults() {
        let example =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config/frontend.toml");
        let settings: Settings = load(
            "frontend",
            &Sources {
                file: Some(example),
                env: HashMap::new(),
            },
        )
        .expect("config/frontend.toml loads");
        assert_eq!(settings, Settings::default());
    }

    #[test]
    fn the_broker_url_comes_from_the_environment() {
        let env: HashMap<String, String> = [(
            "SWITCHBOARD_FRONTEND__PAGE__BROKER_URL".to_owned(),
            "https://broker.example.com".to_owned(),
        )]
        .into_iter()
        .collect();
        let settings: Settings = load("frontend", &Sources { file: None, env }).expect("load");
        assert_eq!(settings.page.broker_url, "https://broker.example.com");
    }
}
