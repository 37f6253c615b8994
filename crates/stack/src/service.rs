//! The six services and four dependency servers the stack runs: their names,
//! binaries, socket names, default ports, configuration prefixes, and which
//! service needs which server.

use std::fmt;
use std::str::FromStr;

/// A Switchboard service. The order of [`ServiceName::ALL`] is the start order;
/// the stack stops services in the reverse order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ServiceName {
    Logger,
    Mail,
    Auth,
    Listener,
    Broker,
    Frontend,
}

/// One listening socket of a service: its `FileDescriptorName=`, the port
/// README.md gives it by default, and whether a connection waiting on it
/// starts the service in lazy mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SocketSpec {
    pub name: &'static str,
    pub default_port: u16,
    /// `false` for the `metrics` socket: a scrape finds a lazy service that
    /// is not running down (the connection waits, the scrape times out)
    /// instead of starting it, so that Prometheus, which scrapes every
    /// service every few seconds, does not undo `--lazy`.
    pub activates: bool,
}

/// The `FileDescriptorName=` of every service's Prometheus socket (`GET /metrics`).
pub const METRICS_SOCKET: &str = "metrics";

const fn socket(name: &'static str, default_port: u16) -> SocketSpec {
    SocketSpec {
        name,
        default_port,
        activates: true,
    }
}

/// The `metrics` socket on its default port.
const fn metrics(default_port: u16) -> SocketSpec {
    SocketSpec {
        name: METRICS_SOCKET,
        default_port,
        activates: false,
    }
}

impl ServiceName {
    /// Every service, in start order.
    pub const ALL: [ServiceName; 6] = [
        ServiceName::Logger,
        ServiceName::Mail,
        ServiceName::Auth,
        ServiceName::Listener,
        ServiceName::Broker,
        ServiceName::Frontend,
    ];

    /// The short name (`broker`), as in the configuration prefix and the units.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Logger => "logger",
            Self::Mail => "mail",
            Self::Auth => "auth",
            Self::Listener => "listener",
            Self::Broker => "broker",
            Self::Frontend => "frontend",
        }
    }

    /// The executable's file name (`switchboard-broker`).
    pub fn binary_name(self) -> String {
        format!("switchboard-{}", self.as_str())
    }

    /// The sockets the service takes from its service manager, in the order
    /// they are passed (fd 3, 4, …), with README.md's default ports. Every
    /// service has a `metrics` socket, last; it is the listener's only one.
    pub fn sockets(self) -> &'static [SocketSpec] {
        const BROKER: &[SocketSpec] = &[socket("http", 8080), metrics(9180)];
        const AUTH: &[SocketSpec] = &[socket("http", 8081), metrics(9181)];
        const LOGGER: &[SocketSpec] = &[
            socket("http", 8082),
            socket("rpc", 5001),
            socket("grpc", 50001),
            metrics(9182),
        ];
        const MAIL: &[SocketSpec] = &[socket("http", 8083), metrics(9183)];
        const FRONTEND: &[SocketSpec] = &[socket("http", 8084), metrics(9184)];
        const LISTENER: &[SocketSpec] = &[metrics(9185)];
        match self {
            Self::Broker => BROKER,
            Self::Auth => AUTH,
            Self::Logger => LOGGER,
            Self::Mail => MAIL,
            Self::Listener => LISTENER,
            Self::Frontend => FRONTEND,
        }
    }

    /// The job name Prometheus scrapes the service under: `switchboard-broker`.
    pub fn metrics_job(self) -> String {
        self.binary_name()
    }

    /// `SWITCHBOARD_<SERVICE>__<SECTION>__<KEY>` for a dotted key such as
    /// `downstream.timeout_ms`.
    pub fn setting_variable(self, dotted_key: &str) -> String {
        let mut variable = format!("SWITCHBOARD_{}", self.as_str().to_ascii_uppercase());
        for part in dotted_key.split('.') {
            variable.push_str("__");
            variable.push_str(&part.to_ascii_uppercase());
        }
        variable
    }

    /// The dependency servers the service talks to.
    pub fn dependencies(self) -> &'static [Dependency] {
        match self {
            Self::Auth => &[Dependency::Postgres, Dependency::RabbitMq],
            Self::Logger => &[Dependency::MongoDb],
            Self::Mail => &[Dependency::MailHog],
            Self::Broker | Self::Listener => &[Dependency::RabbitMq],
            Self::Frontend => &[],
        }
    }
}

impl fmt::Display for ServiceName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A name that is not one of the six services.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown service {0:?}: expected one of logger, mail, auth, listener, broker, frontend")]
pub struct UnknownService(pub String);

impl FromStr for ServiceName {
    type Err = UnknownService;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let wanted = text.trim().to_ascii_lowercase();
        let wanted = wanted.strip_prefix("switchboard-").unwrap_or(&wanted);
        Self::ALL
            .into_iter()
            .find(|service| service.as_str() == wanted)
            .ok_or_else(|| UnknownService(text.to_owned()))
    }
}

/// A dependency server. The order of [`Dependency::ALL`] is the start order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Dependency {
    Postgres,
    RabbitMq,
    MongoDb,
    MailHog,
}

impl Dependency {
    /// Every dependency, in start order.
    pub const ALL: [Dependency; 4] = [
        Dependency::Postgres,
        Dependency::RabbitMq,
        Dependency::MongoDb,
        Dependency::MailHog,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Postgres => "postgres",
            Self::RabbitMq => "rabbitmq",
            Self::MongoDb => "mongodb",
            Self::MailHog => "mailhog",
        }
    }
}

impl fmt::Display for Dependency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_accept_the_binary_name() {
        for service in ServiceName::ALL {
            assert_eq!(service.as_str().parse::<ServiceName>(), Ok(service));
            assert_eq!(service.binary_name().parse::<ServiceName>(), Ok(service));
        }
        assert!("gateway".parse::<ServiceName>().is_err());
    }

    #[test]
    fn setting_variables_follow_the_readme_scheme() {
        assert_eq!(
            ServiceName::Broker.setting_variable("downstream.timeout_ms"),
            "SWITCHBOARD_BROKER__DOWNSTREAM__TIMEOUT_MS"
        );
        assert_eq!(
            ServiceName::Logger.setting_variable("listen.grpc"),
            "SWITCHBOARD_LOGGER__LISTEN__GRPC"
        );
    }

    #[test]
    fn default_ports_are_the_readme_ports() {
        let ports: Vec<(ServiceName, &str, u16)> = ServiceName::ALL
            .into_iter()
            .flat_map(|service| {
                service
                    .sockets()
                    .iter()
                    .map(move |socket| (service, socket.name, socket.default_port))
            })
            .collect();
        assert_eq!(
            ports,
            vec![
                (ServiceName::Logger, "http", 8082),
                (ServiceName::Logger, "rpc", 5001),
                (ServiceName::Logger, "grpc", 50001),
                (ServiceName::Logger, "metrics", 9182),
                (ServiceName::Mail, "http", 8083),
                (ServiceName::Mail, "metrics", 9183),
                (ServiceName::Auth, "http", 8081),
                (ServiceName::Auth, "metrics", 9181),
                (ServiceName::Listener, "metrics", 9185),
                (ServiceName::Broker, "http", 8080),
                (ServiceName::Broker, "metrics", 9180),
                (ServiceName::Frontend, "http", 8084),
                (ServiceName::Frontend, "metrics", 9184),
            ]
        );
    }

    /// Every service has one `metrics` socket, the last, and it alone
    /// never starts a lazy service.
    #[test]
    fn every_service_has_a_metrics_socket_that_does_not_activate() {
        for service in ServiceName::ALL {
            let sockets = service.sockets();
            let last = sockets.last().expect("a socket");
            assert_eq!(last.name, METRICS_SOCKET, "{service}");
            assert!(!last.activates, "{service}");
            assert!(
                sockets[..sockets.len() - 1]
                    .iter()
                    .all(|socket| socket.activates && socket.name != METRICS_SOCKET),
                "{service}"
            );
        }
        assert_eq!(ServiceName::Listener.metrics_job(), "switchboard-listener");
    }
}
