//! RabbitMQ for the services that talk to it (auth, broker, listener): the URL
//! from the settings, the password from a file or the systemd credential
//! `amqp-password`, the connection defaults ([`AmqpEndpoint`]), and the one
//! way to connect, keep a connection open and publish with confirms
//! ([`link`]).
//!
//! The URL is parsed once, at start, into lapin's own [`AMQPUri`] (lapin's
//! `lapin::uri` is the `amq-protocol-uri` crate), which the services hand to
//! `Connection::connect_uri*`. Nothing is serialised back into a string, so a
//! password read from a file needs no percent-encoding by the operator and
//! cannot be mangled on the way.
//!
//! A RabbitMQ cluster is the URL's node plus the other nodes' `host:port`
//! ([`AmqpEndpoint::with_nodes`], the services' `…nodes` settings): user,
//! password, vhost and options are the URL's for every node, and the
//! [`Connector`] tries the nodes in turn.

use std::fmt;
use std::path::{Path, PathBuf};

pub use amq_protocol_uri::AMQPUri;

pub mod link;
pub mod trace;
pub use link::{ConfirmChannel, Connector, Link, LinkError, LinkState, Outcome};

use crate::credentials::{self, CredentialError, Secret};

/// One RabbitMQ node: where a connection's TCP stream goes. Everything else
/// (user, vhost, options) is the [`AmqpEndpoint`]'s.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    /// A host name or an IP address (IPv6 without brackets).
    pub host: String,
    pub port: u16,
}

impl fmt::Display for Node {
    /// `host:port`, IPv6 in brackets.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

/// The systemd credential holding the RabbitMQ password (`LoadCredential=`).
pub const PASSWORD_CREDENTIAL: &str = "amqp-password";

/// The largest frame the services propose to RabbitMQ (the server's default
/// is 131072).
///
/// lapin keeps a receive and a send buffer of 32 frames each per connection,
/// so at 128 KiB frames every connection holds 8 MiB, nearly all of it
/// touched once traffic has flowed through: half of an idle broker's memory.
/// Events are at most a few tens of KiB, and a larger message is simply sent
/// as several frames, so 16 KiB frames cost nothing measurable and bring the
/// buffers down to 1 MiB.
pub const DEFAULT_FRAME_MAX: u32 = 16 * 1024;

/// An AMQP URL that cannot be used. The messages name the setting and, for a
/// password, the file; they never contain the URL's userinfo.
#[derive(Debug, thiserror::Error)]
pub enum AmqpUrlError {
    /// The reason is the parser's, which never quotes the input.
    #[error("{key} is not an AMQP URI: {reason}")]
    Invalid { key: &'static str, reason: String },
    #[error(
        "{key} names no user, and the password from {} needs one: write the user into the URL (amqp://USER@host:port/vhost)",
        path.display()
    )]
    NoUser { key: &'static str, path: PathBuf },
    #[error("cannot use the RabbitMQ password for {key}: {source}")]
    Password {
        key: &'static str,
        #[source]
        source: CredentialError,
    },
    /// An entry of a node list; the problem quotes the entry unless it held
    /// user information.
    #[error("{key}: {problem}")]
    Node { key: &'static str, problem: String },
}

/// Where and as whom to connect: the parsed URI with the password applied,
/// and the same address without credentials for messages.
///
/// `Debug` and `Display` show the address only.
#[derive(Clone)]
pub struct AmqpEndpoint {
    uri: AMQPUri,
    address: String,
    password_source: Option<PathBuf>,
    /// The URL's node first, then the other nodes of the cluster.
    nodes: Vec<Node>,
}

impl AmqpEndpoint {
    /// `url` (the setting `key`) with the password from `password_file` when
    /// set, else from the credential [`PASSWORD_CREDENTIAL`] in
    /// `$CREDENTIALS_DIRECTORY` when present, else the URL's own.
    pub fn from_settings(
        key: &'static str,
        url: &str,
        password_file: Option<&Path>,
    ) -> Result<Self, AmqpUrlError> {
        Self::resolve(key, url, password_file, credentials::directory().as_deref())
    }

    /// [`Self::from_settings`] with the credentials directory given.
    pub fn resolve(
        key: &'static str,
        url: &str,
        password_file: Option<&Path>,
        credentials_dir: Option<&Path>,
    ) -> Result<Self, AmqpUrlError> {
        let password = credentials::load(password_file, PASSWORD_CREDENTIAL, credentials_dir)
            .map_err(|source| AmqpUrlError::Password { key, source })?;
        Self::parse(key, url, password.as_ref())
    }

    /// Parses `url`; `password`, when given, replaces the URL's password and
    /// the user stays the URL's. `frame_max` defaults to [`DEFAULT_FRAME_MAX`]
    /// unless the URL chose one.
    pub fn parse(
        key: &'static str,
        url: &str,
        password: Option<&Secret>,
    ) -> Result<Self, AmqpUrlError> {
        let invalid = |reason: String| AmqpUrlError::Invalid { key, reason };
        // `url` first: its errors never quote the input, and it rejects what
        // lapin's parser would quote whole ("Invalid URL: '<the URL>'").
        let parsed = url::Url::parse(url).map_err(|err| invalid(err.to_string()))?;
        if !matches!(parsed.scheme(), "amqp" | "amqps") {
            return Err(invalid(format!(
                "expected amqp:// or amqps://, not {}://",
                parsed.scheme()
            )));
        }
        if parsed.cannot_be_a_base() {
            return Err(invalid("expected amqp://host:port/vhost".to_owned()));
        }
        let mut uri: AMQPUri = url.parse().map_err(invalid)?;
        // lapin takes only host names from the URL: an IP literal, which a
        // non-special URL parses only in brackets, would become "localhost".
        match parsed.host() {
            Some(url::Host::Ipv6(address)) => uri.authority.host = address.to_string(),
            Some(url::Host::Ipv4(address)) => uri.authority.host = address.to_string(),
            Some(url::Host::Domain(_)) | None => {}
        }
        if let Some(password) = password {
            if parsed.username().is_empty() {
                return Err(AmqpUrlError::NoUser {
                    key,
                    path: password.source().to_owned(),
                });
            }
            // The username is the URL's, already percent-decoded by the parser.
            password
                .expose()
                .clone_into(&mut uri.authority.userinfo.password);
        }
        uri.query.frame_max.get_or_insert(DEFAULT_FRAME_MAX);
        let node = Node {
            host: uri.authority.host.clone(),
            port: uri.authority.port,
        };
        Ok(Self {
            uri,
            address: without_userinfo(&parsed),
            password_source: password.map(|secret| secret.source().to_owned()),
            nodes: vec![node],
        })
    }

    /// Adds the other nodes of a RabbitMQ cluster: `list` (the setting
    /// `key`) holds `host:port` entries separated by commas or white space
    /// (`host` alone takes the URL's port; IPv6 in brackets). The URL's node
    /// stays the first; an entry naming a node already listed is dropped.
    /// User, password, vhost and options are the URL's for every node.
    pub fn with_nodes(mut self, key: &'static str, list: &str) -> Result<Self, AmqpUrlError> {
        let scheme = match self.uri.scheme {
            amq_protocol_uri::AMQPScheme::AMQP => "amqp",
            amq_protocol_uri::AMQPScheme::AMQPS => "amqps",
        };
        for entry in list.split([',', ' ', '\t', '\n']).filter(|e| !e.is_empty()) {
            let node = parse_node(scheme, entry, self.uri.authority.port)
                .map_err(|problem| AmqpUrlError::Node { key, problem })?;
            if !self.nodes.contains(&node) {
                self.nodes.push(node);
            }
        }
        Ok(self)
    }

    /// The URI to hand to lapin (`Connection::connect_uri*`).
    pub fn uri(&self) -> AMQPUri {
        self.uri.clone()
    }

    /// The URL as configured, without user and password: for messages.
    pub fn address(&self) -> &str {
        &self.address
    }

    /// The URL's `host:port` (IPv6 in brackets), for a plain TCP probe.
    pub fn authority(&self) -> String {
        self.nodes[0].to_string()
    }

    /// Every node, the URL's first: one for a single RabbitMQ, more for a
    /// cluster ([`Self::with_nodes`]).
    pub fn nodes(&self) -> &[Node] {
        &self.nodes
    }

    /// The user the connection logs in as.
    pub fn username(&self) -> &str {
        &self.uri.authority.userinfo.username
    }

    /// The file the password came from, when it did not come from the URL.
    pub fn password_source(&self) -> Option<&Path> {
        self.password_source.as_deref()
    }
}

impl fmt::Debug for AmqpEndpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AmqpEndpoint")
            .field("address", &self.address)
            .field("username", &self.username())
            .field("password_source", &self.password_source)
            .field("nodes", &self.nodes)
            .finish_non_exhaustive()
    }
}

impl fmt::Display for AmqpEndpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.address)
    }
}

/// One entry of a node list: `host`, `host:port`, `[v6]` or `[v6]:port`.
/// The problem quotes the entry, except one with user information (it may
/// hold a password).
fn parse_node(scheme: &str, entry: &str, default_port: u16) -> Result<Node, String> {
    if entry.contains('@') {
        return Err(
            "an entry holds user information; list host:port only (the user and password are the URL's)"
                .to_owned(),
        );
    }
    let not_a_node = |reason: &str| format!("{entry:?} is not host:port ({reason})");
    let parsed = url::Url::parse(&format!("{scheme}://{entry}/"))
        .map_err(|err| not_a_node(&err.to_string()))?;
    if parsed.path() != "/" || parsed.query().is_some() || parsed.fragment().is_some() {
        return Err(not_a_node("only a host and a port"));
    }
    let host = match parsed.host() {
        Some(url::Host::Domain(name)) => name.to_owned(),
        Some(url::Host::Ipv4(address)) => address.to_string(),
        Some(url::Host::Ipv6(address)) => address.to_string(),
        None => return Err(not_a_node("no host")),
    };
    Ok(Node {
        host,
        port: parsed.port().unwrap_or(default_port),
    })
}

/// `url` without its userinfo, otherwise as written.
fn without_userinfo(url: &url::Url) -> String {
    let mut url = url.clone();
    // Both fail only for URLs without a host, which have no userinfo either.
    let _ = url.set_password(None);
    let _ = url.set_username("");
    url.to_string()
}

/// `url` with its userinfo removed, for messages about a URL that may not
/// even parse: everything up to `://` and after the last `@` of the authority.
pub fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        // Not a URL at all; it may be `user:password@host`.
        return match url.rsplit_once('@') {
            Some((_, host)) => format!("…@{host}"),
            None => url.to_owned(),
        };
    };
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    let host = authority
        .rsplit_once('@')
        .map_or(authority, |(_, host)| host);
    format!("{scheme}://{host}{tail}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use amq_protocol_uri::{AMQPScheme, AMQPUserInfo};

    fn secret(value: &str) -> Secret {
        Secret::new(value, "/run/credentials/test/amqp-password")
    }

    #[test]
    fn the_password_replaces_the_urls_and_the_user_stays() {
        let endpoint = AmqpEndpoint::parse(
            "events.amqp_url",
            "amqp://switchboard:old@rabbit.internal:5673/logs?heartbeat=10",
            Some(&secret("new")),
        )
        .expect("valid");
        let uri = endpoint.uri();
        assert_eq!(
            uri.authority.userinfo,
            AMQPUserInfo {
                username: "switchboard".into(),
                password: "new".into(),
            }
        );
        assert_eq!(uri.scheme, AMQPScheme::AMQP);
        assert_eq!(uri.authority.host, "rabbit.internal");
        assert_eq!(uri.authority.port, 5673);
        assert_eq!(uri.vhost, "logs");
        assert_eq!(uri.query.heartbeat, Some(10));
        assert_eq!(uri.query.frame_max, Some(DEFAULT_FRAME_MAX));
        assert_eq!(
            endpoint.password_source(),
            Some(Path::new("/run/credentials/test/amqp-password"))
        );
    }

    #[test]
    fn special_characters_in_the_password_arrive_as_written() {
        // Characters that a URL would need percent-encoded: the file holds the
        // password as RabbitMQ knows it, and the URI carries it unencoded.
        let password = "p@ss:w/rd?#%2f &=+ü";
        let endpoint = AmqpEndpoint::parse(
            "amqp.url",
            "amqp://us%40er@127.0.0.1:5672/%2f",
            Some(&secret(password)),
        )
        .expect("valid");
        let uri = endpoint.uri();
        assert_eq!(uri.authority.userinfo.password, password);
        assert_eq!(uri.authority.userinfo.username, "us@er");
        assert_eq!(uri.vhost, "/");
        // lapin's serialisation percent-encodes it and parses back to the same.
        let reparsed: AMQPUri = uri.to_string().parse().expect("round trip");
        assert_eq!(reparsed.authority.userinfo.password, password);
    }

    #[test]
    fn without_a_secret_the_urls_password_is_kept() {
        let endpoint =
            AmqpEndpoint::parse("amqp.url", "amqp://guest:gu%3Aest@127.0.0.1:5672/%2f", None)
                .expect("valid");
        assert_eq!(endpoint.uri().authority.userinfo.password, "gu:est");
        assert_eq!(endpoint.password_source(), None);
    }

    #[test]
    fn a_password_without_a_user_in_the_url_is_refused() {
        for url in ["amqp://127.0.0.1:5672/%2f", "amqp://:old@127.0.0.1/%2f"] {
            let err = AmqpEndpoint::parse("events.amqp_url", url, Some(&secret("pw")))
                .expect_err("no user");
            let message = err.to_string();
            assert!(matches!(err, AmqpUrlError::NoUser { .. }), "{message}");
            assert!(message.contains("events.amqp_url"), "{message}");
            assert!(
                message.contains("/run/credentials/test/amqp-password"),
                "{message}"
            );
        }
        // Without a password the URL's (or lapin's guest) user is fine.
        AmqpEndpoint::parse("events.amqp_url", "amqp://127.0.0.1/%2f", None).expect("valid");
    }

    #[test]
    fn the_operators_frame_max_is_kept() {
        let endpoint =
            AmqpEndpoint::parse("amqp.url", "amqp://h/%2f?frame_max=131072", None).expect("valid");
        assert_eq!(endpoint.uri().query.frame_max, Some(131_072));
    }

    #[test]
    fn ip_literals_are_kept_as_hosts() {
        let endpoint =
            AmqpEndpoint::parse("amqp.url", "amqp://u:p@[::1]:5673/%2f", None).expect("valid");
        assert_eq!(endpoint.uri().authority.host, "::1");
        assert_eq!(endpoint.authority(), "[::1]:5673");
        let endpoint = AmqpEndpoint::parse("amqp.url", "amqp://10.1.2.3/%2f", None).expect("valid");
        assert_eq!(endpoint.uri().authority.host, "10.1.2.3");
        assert_eq!(endpoint.authority(), "10.1.2.3:5672");
        let endpoint = AmqpEndpoint::parse("amqp.url", "amqps://rabbit/v", None).expect("valid");
        assert_eq!(endpoint.authority(), "rabbit:5671");
    }

    #[test]
    fn messages_never_show_the_password() {
        let endpoint = AmqpEndpoint::parse(
            "amqp.url",
            "amqp://guest:url-secret@127.0.0.1:5672/%2f",
            Some(&secret("file-secret")),
        )
        .expect("valid");
        for shown in [
            endpoint.address().to_owned(),
            endpoint.to_string(),
            format!("{endpoint:?}"),
        ] {
            assert!(!shown.contains("secret"), "{shown}");
        }
        assert_eq!(endpoint.address(), "amqp://127.0.0.1:5672/%2f");

        for url in [
            "guest:url-secret@nowhere",
            "amqp//guest:url-secret@nowhere",
            "http://guest:url-secret@nowhere/",
            "amqp://guest:url-secret@ho st/",
            "amqp://guest:url-secret@h:99999/",
            "amqp://guest:url-secret@h/%2f?heartbeat=x",
        ] {
            let err = AmqpEndpoint::parse("amqp.url", url, None).expect_err(url);
            let message = err.to_string();
            assert!(
                message.starts_with("amqp.url is not an AMQP URI"),
                "{message}"
            );
            assert!(!message.contains("secret"), "{url}: {message}");
        }
    }

    #[test]
    fn unreadable_password_files_are_named() {
        let err = AmqpEndpoint::resolve(
            "amqp.url",
            "amqp://u@h/%2f",
            Some(Path::new("/nonexistent/amqp-password")),
            None,
        )
        .expect_err("missing file");
        let message = err.to_string();
        assert!(message.contains("amqp.url"), "{message}");
        assert!(message.contains("/nonexistent/amqp-password"), "{message}");
    }

    #[test]
    fn the_file_wins_over_the_credential_which_wins_over_the_url() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join(PASSWORD_CREDENTIAL), "from-credential\n").expect("write");
        let file = dir.path().join("configured");
        std::fs::write(&file, "from-file\n").expect("write");
        let url = "amqp://u:from-url@h/%2f";
        let password = |file: Option<&Path>, dir: Option<&Path>| {
            AmqpEndpoint::resolve("amqp.url", url, file, dir)
                .expect("valid")
                .uri()
                .authority
                .userinfo
                .password
        };
        assert_eq!(password(Some(&file), Some(dir.path())), "from-file");
        assert_eq!(password(None, Some(dir.path())), "from-credential");
        let empty = tempfile::tempdir().expect("tempdir");
        assert_eq!(password(None, Some(empty.path())), "from-url");
        assert_eq!(password(None, None), "from-url");
    }

    /// Logs in to a real RabbitMQ as a user whose password is only in a file:
    ///
    /// ```sh
    /// rabbitmqctl add_user 'switch@board' 'p@ss:w/rd?#%2f &=+ü'
    /// rabbitmqctl set_permissions -p / 'switch@board' '.*' '.*' '.*'
    /// printf 'p@ss:w/rd?#%%2f &=+ü\n' >/tmp/amqp-password
    /// SWITCHBOARD_TEST_AMQP_URL='amqp://switch%40board:wrong@127.0.0.1:5672/%2f' \
    /// SWITCHBOARD_TEST_AMQP_PASSWORD_FILE=/tmp/amqp-password \
    ///   cargo test -p switchboard-runtime --lib -- --ignored real_rabbitmq
    /// ```
    #[tokio::test]
    #[ignore = "needs RabbitMQ: SWITCHBOARD_TEST_AMQP_URL and SWITCHBOARD_TEST_AMQP_PASSWORD_FILE"]
    async fn real_rabbitmq_accepts_the_password_from_the_file() {
        let url = std::env::var("SWITCHBOARD_TEST_AMQP_URL").expect("SWITCHBOARD_TEST_AMQP_URL");
        let file = std::env::var_os("SWITCHBOARD_TEST_AMQP_PASSWORD_FILE")
            .map(PathBuf::from)
            .expect("SWITCHBOARD_TEST_AMQP_PASSWORD_FILE");
        let properties = lapin::ConnectionProperties::default();
        // The URL's own password is refused: the file's is what logs in.
        let refused = lapin::Connection::connect_uri(
            AmqpEndpoint::resolve("amqp.url", &url, None, None)
                .expect("valid")
                .uri(),
            properties.clone(),
        )
        .await;
        assert!(refused.is_err(), "the URL's password should be wrong");
        let endpoint =
            AmqpEndpoint::resolve("amqp.url", &url, Some(&file), None).expect("password file");
        let connection = lapin::Connection::connect_uri(endpoint.uri(), properties)
            .await
            .expect("RabbitMQ accepts the password from the file");
        assert!(connection.status().connected());
        connection.close(200, "bye".into()).await.expect("close");
    }

    #[test]
    fn nodes_follow_the_urls_node_with_its_port_as_default() {
        let endpoint = AmqpEndpoint::parse("amqp.url", "amqp://u:p@rabbit1:5673/logs", None)
            .expect("valid")
            .with_nodes(
                "amqp.nodes",
                "rabbit2:5674, rabbit3\n[fd00::3]:5675,10.0.0.4 rabbit1:5673",
            )
            .expect("valid nodes");
        let nodes: Vec<String> = endpoint.nodes().iter().map(Node::to_string).collect();
        assert_eq!(
            nodes,
            [
                "rabbit1:5673",
                "rabbit2:5674",
                "rabbit3:5673",
                "[fd00::3]:5675",
                "10.0.0.4:5673"
            ]
        );
        assert_eq!(endpoint.authority(), "rabbit1:5673");
        // The URL's node alone without a list, and with an empty one.
        let single = AmqpEndpoint::parse("amqp.url", "amqp://h/%2f", None).expect("valid");
        assert_eq!(single.nodes().len(), 1);
        assert_eq!(
            single
                .with_nodes("amqp.nodes", " ,")
                .expect("empty")
                .nodes()
                .len(),
            1
        );
    }

    #[test]
    fn a_bad_node_is_named_and_a_password_in_one_is_not_shown() {
        let endpoint =
            || AmqpEndpoint::parse("events.amqp_url", "amqp://h/%2f", None).expect("valid");
        for entry in ["rabbit2:99999", "rabbit2:5672/vhost", "<rabbit2>:1", "[::1"] {
            let message = endpoint()
                .with_nodes("events.amqp_nodes", entry)
                .expect_err(entry)
                .to_string();
            assert!(message.starts_with("events.amqp_nodes: "), "{message}");
            assert!(message.contains("is not host:port"), "{message}");
        }
        let message = endpoint()
            .with_nodes("events.amqp_nodes", "guest:secret@rabbit2:5672")
            .expect_err("userinfo")
            .to_string();
        assert!(message.contains("user information"), "{message}");
        assert!(!message.contains("secret"), "{message}");
    }

    #[test]
    fn redact_drops_the_userinfo() {
        assert_eq!(redact("amqp://u:p@h:1/v?x=1"), "amqp://h:1/v?x=1");
        assert_eq!(redact("amqp://h/v"), "amqp://h/v");
        assert_eq!(redact("amqp://u:p@ss@h/v"), "amqp://h/v");
        assert_eq!(redact("u:p@h"), "…@h");
        assert_eq!(redact("mongodb://u:p@a,b/?x=y@z"), "mongodb://a,b/?x=y@z");
    }
}
