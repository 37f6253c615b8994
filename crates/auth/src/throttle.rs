//! Login throttling (OWASP ASVS V2.2.1): failed logins are counted per account
//! and per client address in PostgreSQL (table `login_failures`), so that the
//! count is shared by every auth instance on the database and survives a
//! restart. Beyond a limit a login is refused with 429 and `Retry-After`
//! before its password is checked.
//!
//! No account enumeration: the account is the e-mail address as the login
//! normalises it, whether a user has it or not, and a wrong password, an
//! unknown address and an inactive user are all counted alike. The check
//! reads only `login_failures`, so a refused attempt costs the same whether
//! the account exists or not.
//!
//! The client address is the TCP peer, or, when the peer is one of
//! `throttle.trusted_proxies` (the broker, which sets `X-Forwarded-For` to
//! its own client's address), the address the header names. An IPv6 client
//! is counted by its /64, which one subscriber usually holds whole.

use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use axum::http::HeaderMap;
use sqlx::PgPool;
use time::OffsetDateTime;

use crate::domain::Email;
use crate::settings::{self, InvalidSetting};
use crate::store::StoreError;

/// The header the broker sets to its client's address.
pub const FORWARDED_FOR_HEADER: &str = "x-forwarded-for";

/// Expired rows deleted along with each new failure: more than one, so that
/// the table shrinks back after a burst while failures keep coming, and few
/// enough that no single login pays for a large clean-up.
const PRUNE_BATCH: i64 = 100;

/// An IP network (`10.0.0.0/8`, `::1/128`); a bare address is a /32 or /128.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Network {
    address: IpAddr,
    prefix: u8,
}

impl FromStr for Network {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let (address, prefix) = match text.split_once('/') {
            Some((address, prefix)) => (address, Some(prefix)),
            None => (text, None),
        };
        let address: IpAddr = address
            .parse()
            .map_err(|err| format!("{address:?}: {err}"))?;
        let bits = if address.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => bits,
            Some(prefix) => prefix
                .parse::<u8>()
                .ok()
                .filter(|prefix| *prefix <= bits)
                .ok_or_else(|| format!("prefix length {prefix:?} is not 0 to {bits}"))?,
        };
        Ok(Self { address, prefix })
    }
}

impl Network {
    pub fn contains(&self, address: IpAddr) -> bool {
        match (self.address, canonical(address)) {
            (IpAddr::V4(network), IpAddr::V4(address)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(network) & mask == u32::from(address) & mask
            }
            (IpAddr::V6(network), IpAddr::V6(address)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(network) & mask == u128::from(address) & mask
            }
            _ => false,
        }
    }
}

/// IPv4-mapped IPv6 addresses (a dual-stack socket's view of an IPv4 peer)
/// as the IPv4 address they are.
fn canonical(address: IpAddr) -> IpAddr {
    match address {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    }
}

/// What the per-address limit counts for `address`: an IPv4 address as it
/// is, an IPv6 address as its /64, since one subscriber usually holds a whole
/// /64 and could otherwise change address for every guess.
pub fn address_key(address: Option<IpAddr>) -> String {
    match address.map(canonical) {
        Some(IpAddr::V4(v4)) => v4.to_string(),
        Some(IpAddr::V6(v6)) => {
            let network = Ipv6Addr::from(u128::from(v6) & (u128::MAX << 64));
            format!("{network}/64")
        }
        // Only a router served without `serve_http` (no peer address) gets
        // here; such requests share one count rather than escape counting.
        None => "unknown".to_owned(),
    }
}

/// Which limit refused a login.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    Account,
    Address,
}

/// A login refused by the throttle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refusal {
    pub scope: Scope,
    /// Whole seconds (at least 1) until enough counted failures have left the
    /// window for a login to be checked again: `Retry-After`.
    pub retry_after_secs: u64,
}

impl Refusal {
    /// The client's message; the same for known and unknown accounts.
    pub fn message(&self) -> String {
        let whose = match self.scope {
            Scope::Account => "for this account",
            Scope::Address => "from this address",
        };
        format!(
            "too many failed logins {whose}; retry in {} s",
            self.retry_after_secs
        )
    }
}

/// The failure counts in PostgreSQL and the limits on them. Cheap to clone.
#[derive(Debug, Clone)]
pub struct LoginThrottle {
    pool: PgPool,
    max_per_account: u32,
    max_per_address: u32,
    window: Duration,
    trusted_proxies: Arc<[Network]>,
}

impl LoginThrottle {
    /// The throttle of `settings` on `pool` (the users database).
    pub fn new(pool: PgPool, settings: &settings::Throttle) -> Result<Self, InvalidSetting> {
        let trusted_proxies =
            settings
                .trusted_proxy_networks()
                .map_err(|problem| InvalidSetting {
                    key: "throttle.trusted_proxies",
                    problem,
                })?;
        Ok(Self {
            pool,
            max_per_account: settings.max_failures_per_account,
            max_per_address: settings.max_failures_per_address,
            window: settings.window(),
            trusted_proxies: trusted_proxies.into(),
        })
    }

    fn is_trusted(&self, address: IpAddr) -> bool {
        self.trusted_proxies
            .iter()
            .any(|network| network.contains(address))
    }

    /// The client a request is counted for (see [`address_key`]): the peer,
    /// unless the peer is a trusted proxy, in which case `X-Forwarded-For` is
    /// read from the right (each proxy appends the address it was reached
    /// from) past every trusted proxy to the first address that is not one.
    pub fn client_address(&self, peer: Option<SocketAddr>, headers: &HeaderMap) -> String {
        let Some(peer) = peer.map(|peer| canonical(peer.ip())) else {
            return address_key(None);
        };
        let mut client = peer;
        if self.is_trusted(peer) {
            let hops: Vec<&str> = headers
                .get_all(FORWARDED_FOR_HEADER)
                .iter()
                .filter_map(|value| value.to_str().ok())
                .flat_map(|value| value.split(','))
                .collect();
            for hop in hops.iter().rev() {
                let Some(address) = parse_hop(hop) else {
                    // Whoever added this entry is the last hop we can name.
                    tracing::debug!(entry = %hop, "unusable X-Forwarded-For entry");
                    break;
                };
                client = address;
                if !self.is_trusted(address) {
                    break;
                }
            }
        }
        address_key(Some(client))
    }

    /// Whether a login for `email` from `address` (an [`address_key`]) is to
    /// be refused now. Reads only `login_failures`.
    pub async fn check(&self, email: &Email, address: &str) -> Result<Option<Refusal>, StoreError> {
        if self.max_per_account == 0 && self.max_per_address == 0 {
            return Ok(None);
        }
        // For each limit n, the n-th newest failure in the window (none when
        // there are fewer): once it leaves the window only n - 1 remain, so
        // that is when the limit lets logins through again. With exactly n
        // failures (refused attempts are not counted) it is the oldest one.
        let (now, account, by_address): (
            OffsetDateTime,
            Option<OffsetDateTime>,
            Option<OffsetDateTime>,
        ) = sqlx::query_as(
            "SELECT now(), \
               (SELECT failed_at FROM login_failures \
                 WHERE $3 > 0 AND email = $1 AND failed_at > now() - make_interval(secs => $5) \
                 ORDER BY failed_at DESC OFFSET greatest($3 - 1, 0) LIMIT 1), \
               (SELECT failed_at FROM login_failures \
                 WHERE $4 > 0 AND address = $2 AND failed_at > now() - make_interval(secs => $5) \
                 ORDER BY failed_at DESC OFFSET greatest($4 - 1, 0) LIMIT 1)",
        )
        .bind(email.as_str())
        .bind(address)
        .bind(i64::from(self.max_per_account))
        .bind(i64::from(self.max_per_address))
        .bind(self.window.as_secs_f64())
        .fetch_one(&self.pool)
        .await?;
        let wait = |nth: Option<OffsetDateTime>| {
            nth.map(|nth| {
                let left = (nth + self.window) - now;
                // Whole seconds, rounded up (a client retrying on the dot is
                // let through), at least 1: `Retry-After: 0` invites a spin.
                let millis = u64::try_from(left.whole_milliseconds()).unwrap_or(0);
                millis.div_ceil(1000).max(1)
            })
        };
        let refusals = [
            wait(account).map(|secs| Refusal {
                scope: Scope::Account,
                retry_after_secs: secs,
            }),
            wait(by_address).map(|secs| Refusal {
                scope: Scope::Address,
                retry_after_secs: secs,
            }),
        ];
        // Both limits must allow a login: the later of the two decides.
        Ok(refusals
            .into_iter()
            .flatten()
            .max_by_key(|refusal| refusal.retry_after_secs))
    }

    /// Counts a failed login (wrong password, unknown or inactive user), and
    /// deletes a batch of failures that have left the window, so that the
    /// table holds about one window's failures however long auth runs.
    pub async fn record_failure(&self, email: &Email, address: &str) -> Result<(), StoreError> {
        if self.max_per_account == 0 && self.max_per_address == 0 {
            return Ok(());
        }
        // SKIP LOCKED: instances pruning at once take different rows instead
        // of waiting for each other.
        sqlx::query(
            "WITH expired AS ( \
               DELETE FROM login_failures WHERE id IN ( \
                 SELECT id FROM login_failures \
                  WHERE failed_at <= now() - make_interval(secs => $3) \
                  ORDER BY failed_at LIMIT $4 FOR UPDATE SKIP LOCKED)) \
             INSERT INTO login_failures (email, address) VALUES ($1, $2)",
        )
        .bind(email.as_str())
        .bind(address)
        .bind(self.window.as_secs_f64())
        .bind(PRUNE_BATCH)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// A successful login resets the account's count (its failures from any
    /// address, which also stop counting against those addresses).
    pub async fn record_success(&self, email: &Email) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM login_failures WHERE email = $1")
            .bind(email.as_str())
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}

/// One `X-Forwarded-For` entry: an address, or an address with a port
/// (`192.0.2.1:4711`, `[2001:db8::1]:4711`), which some proxies write.
fn parse_hop(hop: &str) -> Option<IpAddr> {
    let hop = hop.trim();
    hop.parse::<IpAddr>()
        .or_else(|_| hop.parse::<SocketAddr>().map(|socket| socket.ip()))
        .ok()
        .map(canonical)
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn throttle(trusted: &str) -> LoginThrottle {
        let settings = settings::Throttle {
            trusted_proxies: trusted.to_owned(),
            ..settings::Throttle::default()
        };
        // A lazy pool never connects: these tests need no database.
        let pool = sqlx::postgres::PgPoolOptions::new()
            .connect_lazy("postgres://nobody@127.0.0.1:1/none")
            .expect("lazy pool");
        LoginThrottle::new(pool, &settings).expect("throttle")
    }

    fn forwarded(values: &[&str]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for value in values {
            headers.append(
                FORWARDED_FOR_HEADER,
                HeaderValue::from_str(value).expect("header"),
            );
        }
        headers
    }

    fn peer(address: &str) -> Option<SocketAddr> {
        Some(SocketAddr::new(address.parse().expect("ip"), 40_000))
    }

    #[test]
    fn networks_parse_and_match() {
        let loopback: Network = "127.0.0.0/8".parse().expect("network");
        assert!(loopback.contains("127.1.2.3".parse().expect("ip")));
        assert!(loopback.contains("::ffff:127.0.0.1".parse().expect("ip")));
        assert!(!loopback.contains("128.0.0.1".parse().expect("ip")));
        assert!(!loopback.contains("::1".parse().expect("ip")));
        let one: Network = "::1".parse().expect("address");
        assert!(one.contains("::1".parse().expect("ip")));
        assert!(!one.contains("::2".parse().expect("ip")));
        let everything: Network = "0.0.0.0/0".parse().expect("network");
        assert!(everything.contains("203.0.113.9".parse().expect("ip")));
        for bad in ["broker", "10.0.0.0/33", "10.0.0.0/x", "::/129", ""] {
            assert!(bad.parse::<Network>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn ipv6_clients_count_by_their_64() {
        assert_eq!(
            address_key(Some("2001:db8:1:2:aaaa::1".parse().expect("ip"))),
            "2001:db8:1:2::/64"
        );
        assert_eq!(
            address_key(Some("::ffff:192.0.2.7".parse().expect("ip"))),
            "192.0.2.7"
        );
        assert_eq!(address_key(None), "unknown");
    }

    #[tokio::test]
    async fn the_header_counts_only_from_a_trusted_proxy() {
        let throttle = throttle("127.0.0.0/8, ::1");
        let header = forwarded(&["198.51.100.4"]);
        assert_eq!(
            throttle.client_address(peer("127.0.0.1"), &header),
            "198.51.100.4"
        );
        assert_eq!(
            throttle.client_address(peer("::1"), &header),
            "198.51.100.4"
        );
        // Anyone else could write anything there.
        assert_eq!(
            throttle.client_address(peer("203.0.113.9"), &header),
            "203.0.113.9"
        );
        // No header: the proxy's own request (or a local client).
        assert_eq!(
            throttle.client_address(peer("127.0.0.1"), &HeaderMap::new()),
            "127.0.0.1"
        );
    }

    #[tokio::test]
    async fn the_header_is_read_from_the_right_past_trusted_hops() {
        let throttle = throttle("127.0.0.1, 10.0.0.0/8");
        // A client-supplied first entry is never believed over what the
        // trusted hops appended after it.
        let chain = forwarded(&["192.0.2.66, 198.51.100.4", "10.1.1.1"]);
        assert_eq!(
            throttle.client_address(peer("127.0.0.1"), &chain),
            "198.51.100.4"
        );
        let with_port = forwarded(&["[2001:db8::5]:4711"]);
        assert_eq!(
            throttle.client_address(peer("127.0.0.1"), &with_port),
            "2001:db8::/64"
        );
        // Garbage stops the walk at the last hop that could be named.
        let garbage = forwarded(&["not-an-address, 10.2.2.2"]);
        assert_eq!(
            throttle.client_address(peer("127.0.0.1"), &garbage),
            "10.2.2.2"
        );
    }
}
