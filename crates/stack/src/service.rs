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

/// One listening socket of a service: its `FileDescriptorName=` and the port
/// README.md gives it by default.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SocketSpec {
    pub name: &'static str,
    pub default_port: u16,
}

const fn socket(name: &'static str, default_port: u16) -> SocketSpec {
    SocketSpec { name, default_port }
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
    /// they are passed (fd 3, 4, …), with README.md's default ports.
    pub fn sockets(self) -> &'static [SocketSpec] {
        const BROKER: &[SocketSpec] = &[socket("http", 8080)];
        const AUTH: &[SocketSpec] = &[socket("http", 8081)];
        const LOGGER: &[SocketSpec] = &[
            socket("http", 8082),
            socket("rpc", 5001),
            socket("grpc", 50001),
        ];
        const MAIL: &[SocketSpec] = &[socket("http", 8083)];
        const FRONTEND: &[SocketSpec] = &[socket("http", 8084)];
        match self {
            Self::Broker => BROKER,
            Self::Auth => AUTH,
            Self::Logger => LOGGER,
            Self::Mail => MAIL,
            Self::Listener => &[],
            Self::Frontend => FRONTEND,
        }
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
                (ServiceName::Mail, "http", 8083),
                (ServiceName::Auth, "http", 8081),
                (ServiceName::Broker, "http", 8080),
                (ServiceName::Frontend, "http", 8084),
            ]
        );
    }
}
