//! Each service's configuration in the dev stack, written as the service's
//! own settings type (a renamed or misspelt key does not compile) and handed
//! to it as a TOML file named by `SWITCHBOARD_<SERVICE>_CONFIG`. The
//! environment still wins over the file, so [`crate::StackOptions::setting`]
//! and `--set` override single keys.

use std::net::SocketAddr;

use switchboard_runtime::config::{LogTarget, RuntimeSettings};

use crate::service::ServiceName;

/// Where everything the services talk to is, as the stack started it.
pub(crate) trait Wiring {
    /// The address of `service`'s socket `name` (`http`, `rpc`, `grpc`).
    fn socket(&self, service: ServiceName, name: &str) -> SocketAddr;
    fn postgres_url(&self, database: &str) -> Option<String>;
    fn amqp_url(&self) -> Option<String>;
    fn mongodb_url(&self) -> Option<String>;
    fn smtp_port(&self) -> Option<u16>;
    /// The addresses of socket `name` of `service`'s further instances
    /// (its second, third, …), in order.
    fn other_instances(&self, _service: ServiceName, _name: &str) -> Vec<SocketAddr> {
        Vec::new()
    }

    /// `http://<address>` of `service`'s HTTP socket.
    fn http(&self, service: ServiceName) -> String {
        format!("http://{}", self.socket(service, "http"))
    }
}

/// The database auth keeps its users in.
pub(crate) const USERS_DATABASE: &str = "users";

/// `service`'s configuration file: where its dependencies and downstreams
/// are, and logs on stderr (the stack reads them). The `listen.*` keys are
/// the fallback a service binds when no socket of that name is passed; the
/// stack passes them all, the `metrics` one included, so the addresses here
/// only document where they are.
pub(crate) fn service_config(
    service: ServiceName,
    wiring: &impl Wiring,
) -> Result<String, toml::ser::Error> {
    let http = wiring.socket(service, "http");
    let metrics = Some(wiring.socket(service, "metrics"));
    match service {
        ServiceName::Auth => {
            let mut settings = switchboard_auth::Settings::default();
            log_to_stderr(&mut settings.runtime);
            settings.listen.http = http;
            settings.listen.metrics = metrics;
            if let Some(url) = wiring.postgres_url(USERS_DATABASE) {
                settings.database.url = url;
            }
            if let Some(url) = wiring.amqp_url() {
                settings.events.amqp_url = url;
            }
            toml::to_string(&settings)
        }
        ServiceName::Logger => {
            let mut settings = switchboard_logger::Settings::default();
            log_to_stderr(&mut settings.runtime);
            settings.listen.http = http;
            settings.listen.metrics = metrics;
            settings.listen.rpc = wiring.socket(service, "rpc");
            settings.listen.grpc = wiring.socket(service, "grpc");
            if let Some(url) = wiring.mongodb_url() {
                settings.mongodb.url = url;
            }
            toml::to_string(&settings)
        }
        ServiceName::Mail => {
            let mut settings = switchboard_mail::settings::Settings::default();
            log_to_stderr(&mut settings.runtime);
            settings.listen.http = http;
            settings.listen.metrics = metrics;
            "127.0.0.1".clone_into(&mut settings.smtp.host);
            if let Some(port) = wiring.smtp_port() {
                settings.smtp.port = port;
            }
            toml::to_string(&settings)
        }
        ServiceName::Broker => {
            let mut settings = switchboard_broker::Settings::default();
            log_to_stderr(&mut settings.runtime);
            settings.listen.http = http;
            settings.listen.metrics = metrics;
            let downstream = &mut settings.downstream;
            downstream.auth_url = wiring.http(ServiceName::Auth);
            downstream.logger_http_url = wiring.http(ServiceName::Logger);
            downstream.logger_rpc_addr = wiring.socket(ServiceName::Logger, "rpc").to_string();
            downstream.logger_grpc_url =
                format!("http://{}", wiring.socket(ServiceName::Logger, "grpc"));
            downstream.mail_url = wiring.http(ServiceName::Mail);
            let others = |name: &str, prefix: &str| {
                wiring
                    .other_instances(ServiceName::Logger, name)
                    .iter()
                    .map(|addr| format!("{prefix}{addr}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            downstream.logger_http_urls = others("http", "http://");
            downstream.logger_rpc_addrs = others("rpc", "");
            downstream.logger_grpc_urls = others("grpc", "http://");
            // The dev stack is for looking inside; a deployment keeps it off.
            settings.admin.expose_downstreams = true;
            settings.admin.expose_logs = true;
            if let Some(url) = wiring.amqp_url() {
                settings.events.amqp_url = url;
            }
            toml::to_string(&settings)
        }
        ServiceName::Listener => {
            let mut settings = switchboard_listener::Settings::default();
            log_to_stderr(&mut settings.runtime);
            settings.listen.metrics = metrics;
            if let Some(url) = wiring.amqp_url() {
                settings.amqp.url = url;
            }
            settings.logger.rpc_addr = wiring.socket(ServiceName::Logger, "rpc").to_string();
            settings.logger.http_url = wiring.http(ServiceName::Logger);
            toml::to_string(&settings)
        }
        ServiceName::Frontend => {
            let mut settings = switchboard_frontend::settings::Settings::default();
            log_to_stderr(&mut settings.runtime);
            settings.listen.http = http;
            settings.listen.metrics = metrics;
            settings.page.broker_url = wiring.http(ServiceName::Broker);
            toml::to_string(&settings)
        }
    }
}

fn log_to_stderr(runtime: &mut RuntimeSettings) {
    runtime.log_target = LogTarget::Stderr;
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Loopback;

    impl Wiring for Loopback {
        fn socket(&self, service: ServiceName, name: &str) -> SocketAddr {
            let port = match (service, name) {
                (ServiceName::Logger, "rpc") => 15001,
                (ServiceName::Logger, "grpc") => 15002,
                (ServiceName::Logger, _) => 18082,
                (ServiceName::Auth, _) => 18081,
                (ServiceName::Mail, _) => 18083,
                (ServiceName::Broker, _) => 18080,
                (ServiceName::Frontend, _) => 18084,
                (ServiceName::Listener, _) => 0,
            };
            SocketAddr::from(([127, 0, 0, 1], port))
        }
        fn postgres_url(&self, database: &str) -> Option<String> {
            Some(format!("postgres://postgres@127.0.0.1:15432/{database}"))
        }
        fn amqp_url(&self) -> Option<String> {
            Some("amqp://guest:guest@127.0.0.1:15672/%2f".to_owned())
        }
        fn mongodb_url(&self) -> Option<String> {
            None
        }
        fn smtp_port(&self) -> Option<u16> {
            Some(11025)
        }
    }

    /// Each file loads through the service's own configuration loader, the
    /// environment still overrides it, and what the stack wired is in it.
    #[test]
    fn every_file_loads_as_the_services_settings_and_the_environment_wins() {
        let dir = tempfile::tempdir().expect("tempdir");
        let load = |service: ServiceName, env: Vec<(String, String)>| {
            let path = dir.path().join(format!("{}.toml", service.as_str()));
            std::fs::write(&path, service_config(service, &Loopback).expect("toml"))
                .expect("write");
            switchboard_runtime::config::Sources {
                file: Some(path),
                env: env.into_iter().collect(),
            }
        };
        let broker: switchboard_broker::Settings = switchboard_runtime::config::load(
            "broker",
            &load(
                ServiceName::Broker,
                vec![(
                    ServiceName::Broker.setting_variable("downstream.timeout_ms"),
                    "1234".to_owned(),
                )],
            ),
        )
        .expect("broker settings");
        assert_eq!(broker.downstream.logger_rpc_addr, "127.0.0.1:15001");
        assert_eq!(broker.downstream.logger_grpc_url, "http://127.0.0.1:15002");
        assert_eq!(broker.downstream.timeout_ms, 1234);
        assert!(broker.admin.expose_downstreams);
        assert_eq!(broker.runtime.log_target, LogTarget::Stderr);

        let mail: switchboard_mail::settings::Settings =
            switchboard_runtime::config::load("mail", &load(ServiceName::Mail, Vec::new()))
                .expect("mail settings");
        assert_eq!(mail.smtp.port, 11025);
        let logger: switchboard_logger::Settings =
            switchboard_runtime::config::load("logger", &load(ServiceName::Logger, Vec::new()))
                .expect("logger settings");
        // No MongoDB wired: the logger's own default stays.
        assert_eq!(
            logger.mongodb.url,
            switchboard_logger::Settings::default().mongodb.url
        );
        assert_eq!(logger.listen.grpc.port(), 15002);
        let _: switchboard_auth::Settings =
            switchboard_runtime::config::load("auth", &load(ServiceName::Auth, Vec::new()))
                .expect("auth settings");
        let _: switchboard_listener::Settings =
            switchboard_runtime::config::load("listener", &load(ServiceName::Listener, Vec::new()))
                .expect("listener settings");
        let frontend: switchboard_frontend::settings::Settings =
            switchboard_runtime::config::load("frontend", &load(ServiceName::Frontend, Vec::new()))
                .expect("frontend settings");
        assert_eq!(frontend.page.broker_url, "http://127.0.0.1:18080");
    }
}
