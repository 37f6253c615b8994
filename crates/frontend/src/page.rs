//! The test page and its assets, all compiled into the binary: the HTML
//! (rendered once at start with the broker URL), the stylesheet and the script.
//!
//! Assets are referenced as `/static/app.js?v=<content hash>`: a request that
//! names the current version may be cached for a year, anything else must be
//! revalidated, and every response carries an `ETag` so revalidation is a 304.
//! The page itself is never cached without revalidation, so a new broker URL
//! or a new release shows on the next load.

use askama::Template;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

/// The stylesheet, served at `/static/app.css`.
pub const APP_CSS: &str = include_str!("../assets/app.css");
/// The script, served at `/static/app.js`.
pub const APP_JS: &str = include_str!("../assets/app.js");

/// `page.broker_url` is unusable; the message says what is accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "page.broker_url {value:?} is not usable: {reason}; expected http(s)://host[:port][/prefix] or a path like /api"
)]
pub struct InvalidBrokerUrl {
    pub value: String,
    pub reason: &'static str,
}

/// Where the page's buttons send their requests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerUrl {
    /// Without a trailing slash; request paths (`/handle`) are appended.
    url: String,
    /// `scheme://host[:port]` for the page's `connect-src`, `None` for a path
    /// on the page's own origin.
    origin: Option<String>,
}

impl BrokerUrl {
    pub fn parse(value: &str) -> Result<Self, InvalidBrokerUrl> {
        let invalid = |reason| InvalidBrokerUrl {
            value: value.to_owned(),
            reason,
        };
        let trimmed = value.trim();
        if trimmed.is_empty() {
            return Err(invalid("it is empty"));
        }
        // Checked before parsing so nothing odd can reach the HTML or the
        // Content-Security-Policy header (where `;` and `,` separate directives).
        if !trimmed
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-._~:/[]%".contains(c))
        {
            return Err(invalid(
                "it may only contain letters, digits and - . _ ~ : / [ ] %",
            ));
        }
        let url = trimmed.trim_end_matches('/');
        if trimmed.starts_with('/') {
            if trimmed.starts_with("//") {
                return Err(invalid("a scheme-relative URL is ambiguous"));
            }
            return Ok(Self {
                url: url.to_owned(),
                origin: None,
            });
        }
        let uri: axum::http::Uri = url.parse().map_err(|_| invalid("it is not a URL"))?;
        match uri.scheme_str() {
            Some("http" | "https") => {}
            _ => return Err(invalid("the scheme must be http or https")),
        }
        let Some(authority) = uri.authority() else {
            return Err(invalid("it has no host"));
        };
        if authority.host().is_empty() {
            return Err(invalid("it has no host"));
        }
        let origin = format!("{}://{}", uri.scheme_str().unwrap_or("http"), authority);
        Ok(Self {
            url: url.to_owned(),
            origin: Some(origin),
        })
    }

    /// The URL request paths are appended to (no trailing slash).
    pub fn as_str(&self) -> &str {
        &self.url
    }
}

#[derive(Template)]
#[template(path = "index.html")]
struct IndexTemplate<'a> {
    broker_url: &'a str,
    asset_version: &'a str,
}

/// One embedded file ready to serve.
#[derive(Debug, Clone)]
pub struct Asset {
    body: &'static [u8],
    content_type: &'static str,
    etag: HeaderValue,
}

/// Everything the service serves, prepared once at start.
#[derive(Debug, Clone)]
pub struct Site {
    index: Vec<u8>,
    index_etag: HeaderValue,
    content_security_policy: HeaderValue,
    asset_version: String,
    css: Asset,
    js: Asset,
}

/// The page could not be prepared.
#[derive(Debug, thiserror::Error)]
pub enum SiteError {
    #[error(transparent)]
    BrokerUrl(#[from] InvalidBrokerUrl),
    #[error("cannot render the page: {0}")]
    Template(#[from] askama::Error),
    #[error("cannot build a response header: {0}")]
    Header(#[from] axum::http::header::InvalidHeaderValue),
}

impl Site {
    pub fn new(broker_url: &str) -> Result<Self, SiteError> {
        let broker = BrokerUrl::parse(broker_url)?;
        let asset_version = hex(fnv1a(&[APP_CSS.as_bytes(), APP_JS.as_bytes()]));
        let index = IndexTemplate {
            broker_url: broker.as_str(),
            asset_version: &asset_version,
        }
        .render()?
        .into_bytes();
        let index_etag = etag(&index)?;
        let connect_src = match &broker.origin {
            Some(origin) => format!("'self' {origin}"),
            None => "'self'".to_owned(),
        };
        let content_security_policy = HeaderValue::from_str(&format!(
            "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
             connect-src {connect_src}; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
        ))?;
        Ok(Self {
            index,
            index_etag,
            content_security_policy,
            asset_version,
            css: Asset {
                body: APP_CSS.as_bytes(),
                content_type: "text/css; charset=utf-8",
                etag: etag(APP_CSS.as_bytes())?,
            },
            js: Asset {
                body: APP_JS.as_bytes(),
                content_type: "text/javascript; charset=utf-8",
                etag: etag(APP_JS.as_bytes())?,
            },
        })
    }

    /// The `?v=` value the page uses for its assets.
    pub fn asset_version(&self) -> &str {
        &self.asset_version
    }

    /// `GET /`.
    pub fn index(&self, request: &HeaderMap) -> Response {
        let mut response = conditional(
            request,
            &self.index_etag,
            "text/html; charset=utf-8",
            HeaderValue::from_static("no-cache"),
            self.index.clone(),
        );
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_SECURITY_POLICY,
            self.content_security_policy.clone(),
        );
        headers.insert(
            header::REFERRER_POLICY,
            HeaderValue::from_static("no-referrer"),
        );
        response
    }

    /// `GET /static/app.css` and `GET /static/app.js`.
    pub fn css(&self, request: &HeaderMap, query: Option<&str>) -> Response {
        self.asset(&self.css, request, query)
    }

    pub fn js(&self, request: &HeaderMap, query: Option<&str>) -> Response {
        self.asset(&self.js, request, query)
    }

    fn asset(&self, asset: &Asset, request: &HeaderMap, query: Option<&str>) -> Response {
        let current = query
            .into_iter()
            .flat_map(|query| query.split('&'))
            .any(|pair| pair == format!("v={}", self.asset_version));
        let cache_control = if current {
            HeaderValue::from_static("public, max-age=31536000, immutable")
        } else {
            HeaderValue::from_static("no-cache")
        };
        conditional(
            request,
            &asset.etag,
            asset.content_type,
            cache_control,
            asset.body.to_vec(),
        )
    }
}

/// 304 when the client already has this version, else the body.
fn conditional(
    request: &HeaderMap,
    etag: &HeaderValue,
    content_type: &'static str,
    cache_control: HeaderValue,
    body: Vec<u8>,
) -> Response {
    let mut response = if matches_etag(request, etag) {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        let mut response = body.into_response();
        response
            .headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
        response
    };
    let headers = response.headers_mut();
    headers.insert(header::ETAG, etag.clone());
    headers.insert(header::CACHE_CONTROL, cache_control);
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    response
}

/// `If-None-Match` uses weak comparison: `W/"x"` matches `"x"`, `*` matches all.
fn matches_etag(request: &HeaderMap, etag: &HeaderValue) -> bool {
    let Ok(current) = etag.to_str() else {
        return false;
    };
    request
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .map(|tag| tag.trim())
        .any(|tag| tag == "*" || tag.trim_start_matches("W/") == current)
}

fn etag(body: &[u8]) -> Result<HeaderValue, axum::http::header::InvalidHeaderValue> {
    HeaderValue::from_str(&format!("\"{}\"", hex(fnv1a(&[body]))))
}

/// FNV-1a: a content fingerprint for cache validation, not a security hash.
fn fnv1a(chunks: &[&[u8]]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for chunk in chunks {
        for byte in *chunk {
            hash ^= u64::from(*byte);
            hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    hash
}

fn hex(value: u64) -> String {
    format!("{value:016x}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broker_urls_are_normalised() {
        let url = BrokerUrl::parse(" http://127.0.0.1:8080/ ").expect("valid");
        assert_eq!(url.as_str(), "http://127.0.0.1:8080");
        assert_eq!(url.origin.as_deref(), Some("http://127.0.0.1:8080"));
        let url = BrokerUrl::parse("https://broker.example.com/api/").expect("valid");
        assert_eq!(url.as_str(), "https://broker.example.com/api");
        assert_eq!(url.origin.as_deref(), Some("https://broker.example.com"));
        let url = BrokerUrl::parse("http://[::1]:8080").expect("valid");
        assert_eq!(url.origin.as_deref(), Some("http://[::1]:8080"));
        let url = BrokerUrl::parse("/api").expect("valid");
        assert_eq!(url.as_str(), "/api");
        assert_eq!(url.origin, None);
    }

    #[test]
    fn unusable_broker_urls_are_refused_with_a_reason() {
        for (value, reason) in [
            ("", "empty"),
            ("ftp://broker", "scheme"),
            ("javascript:alert", "scheme"),
            ("javascript:alert(1)", "may only contain"),
            ("http://a\"><script>", "may only contain"),
            ("http://a; script-src *", "may only contain"),
            ("http://user@host", "may only contain"),
            ("http://host/?q=1", "may only contain"),
            ("//host", "scheme-relative"),
            ("broker:8080", "scheme"),
        ] {
            let err = BrokerUrl::parse(value).expect_err(value);
            assert!(err.to_string().contains(reason), "{value}: {err}");
            assert!(err.to_string().contains("page.broker_url"), "{err}");
        }
    }

    #[test]
    fn the_page_names_the_broker_and_versioned_assets() {
        let site = Site::new("http://127.0.0.1:8080").expect("site");
        let page = String::from_utf8(site.index.clone()).expect("utf-8");
        assert!(
            page.contains(
                r#"<meta name="switchboard-broker-url" content="http://127.0.0.1:8080">"#
            ),
            "{page}"
        );
        let version = site.asset_version();
        assert!(
            page.contains(&format!("/static/app.js?v={version}")),
            "{page}"
        );
        assert!(
            page.contains(&format!("/static/app.css?v={version}")),
            "{page}"
        );
        for id in [
            "brokerBtn",
            "authBrokerBtn",
            "logBtn",
            "logGBtn",
            "logAmqpBtn",
            "logHttpBtn",
            "mailBtn",
            "payload",
            "received",
            "output",
        ] {
            assert!(
                page.contains(&format!("id=\"{id}\"")),
                "no #{id} in the page"
            );
        }
        assert!(!page.contains("://cdn"), "the page must not use a CDN");
    }

    #[test]
    fn etags_match_weakly_and_in_lists() {
        let tag = HeaderValue::from_static("\"abc\"");
        let mut headers = HeaderMap::new();
        assert!(!matches_etag(&headers, &tag));
        headers.insert(
            header::IF_NONE_MATCH,
            HeaderValue::from_static("\"x\", W/\"abc\""),
        );
        assert!(matches_etag(&headers, &tag));
        headers.insert(header::IF_NONE_MATCH, HeaderValue::from_static("*"));
        assert!(matches_etag(&headers, &tag));
        headers.insert(header::IF_NONE_MATCH, HeaderValue::from_static("\"abcd\""));
        assert!(!matches_etag(&headers, &tag));
    }
}
