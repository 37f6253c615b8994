//! What a client asks to send, checked field by field, and the e-mail built
//! from it: a `multipart/alternative` message with a plain-text part first and
//! an HTML part second, both rendered from templates compiled into the binary.
//!
//! Every check names the field at fault, because the message ends up in a
//! browser's output pane or a broker's log. Header injection is refused
//! outright rather than "cleaned": a CR or LF in an address or the subject is
//! an attack or a bug, and sending a guessed variant would hide either.

use askama::Template;
use lettre::Message;
use lettre::message::header::{HeaderName, HeaderValue};
use lettre::message::{Mailbox, MultiPart};
use serde::Deserialize;

/// RFC 5322 §2.1.1: no line of a message may exceed 998 bytes, and a subject
/// longer than that cannot be folded into a valid header.
pub const MAX_SUBJECT_BYTES: usize = 998;

/// The JSON body of `POST /send` (the original system's shape).
#[derive(Debug, Clone, Deserialize)]
pub struct SendRequest {
    /// Sender; absent or empty means the configured default sender.
    #[serde(default)]
    pub from: Option<String>,
    /// One recipient: `user@example.com` or `Name <user@example.com>`.
    pub to: String,
    pub subject: String,
    pub message: String,
}

/// Why a request cannot be sent; each message says what to fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidMail {
    #[error("`{field}` is required")]
    Missing { field: &'static str },
    #[error("`{field}` contains a line break or control character; header injection is refused")]
    HeaderInjection { field: &'static str },
    #[error(
        "`{field}` is not a valid mailbox ({value:?}); expected user@example.com or Name <user@example.com>"
    )]
    NotAMailbox { field: &'static str, value: String },
    #[error("`subject` is {actual} bytes long; the limit is {MAX_SUBJECT_BYTES} bytes")]
    SubjectTooLong { actual: usize },
    #[error("`message` is {actual} bytes long; the limit is {limit} bytes")]
    MessageTooLarge { actual: usize, limit: usize },
    #[error("`message` contains a NUL character")]
    NulInMessage,
    #[error(
        "`{field}` has non-ASCII characters in its address ({address:?}); the relay is not asked for SMTPUTF8, so use an ASCII address (a domain in its xn-- form)"
    )]
    NonAsciiAddress {
        field: &'static str,
        address: String,
    },
}

/// A single mailbox taken from a request field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidMailbox(Mailbox);

impl ValidMailbox {
    /// Parses `value` as exactly one mailbox and nothing else.
    pub fn parse(field: &'static str, value: &str) -> Result<Self, InvalidMail> {
        if value.chars().any(char::is_control) {
            return Err(InvalidMail::HeaderInjection { field });
        }
        let trimmed = value.trim();
        if trimmed.is_empty() {
            return Err(InvalidMail::Missing { field });
        }
        let not_a_mailbox = || InvalidMail::NotAMailbox {
            field,
            value: value.to_owned(),
        };
        let mailbox: Mailbox = trimmed.parse().map_err(|_| not_a_mailbox())?;
        // lettre's parser stops after the first mailbox and ignores what follows
        // (`a@b.example, c@d.example` or `a@b.example garbage` parse as a@b.example),
        // so insist that the address ends the input, bare or in angle brackets.
        let address = mailbox.email.to_string();
        let bracketed = format!("<{address}>");
        let consumed_everything = match mailbox.name {
            None => trimmed == address || trimmed == bracketed,
            Some(_) => trimmed.ends_with(&bracketed),
        };
        if !consumed_everything {
            return Err(not_a_mailbox());
        }
        // The display name is encoded into the header (RFC 2047), but the
        // address goes into MAIL FROM / RCPT TO as it is: without SMTPUTF8
        // (RFC 6531) a relay refuses it, and the client would get a 502 for
        // what is its own input.
        if !address.is_ascii() {
            return Err(InvalidMail::NonAsciiAddress { field, address });
        }
        Ok(Self(mailbox))
    }

    pub fn mailbox(&self) -> &Mailbox {
        &self.0
    }

    /// The bare address, `user@example.com`.
    pub fn address(&self) -> String {
        self.0.email.to_string()
    }
}

/// A subject: one header line, at most [`MAX_SUBJECT_BYTES`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subject(String);

impl Subject {
    pub fn parse(value: &str) -> Result<Self, InvalidMail> {
        // A tab is legal in a header; every other control character either
        // splits the header (CR, LF) or has no business in a subject.
        if value.chars().any(|c| c.is_control() && c != '\t') {
            return Err(InvalidMail::HeaderInjection { field: "subject" });
        }
        if value.len() > MAX_SUBJECT_BYTES {
            return Err(InvalidMail::SubjectTooLong {
                actual: value.len(),
            });
        }
        Ok(Self(value.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The message text, with line breaks normalised to `\n`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Body(String);

impl Body {
    pub fn parse(value: &str, max_bytes: usize) -> Result<Self, InvalidMail> {
        if value.len() > max_bytes {
            return Err(InvalidMail::MessageTooLarge {
                actual: value.len(),
                limit: max_bytes,
            });
        }
        if value.contains('\0') {
            return Err(InvalidMail::NulInMessage);
        }
        Ok(Self(value.replace("\r\n", "\n").replace('\r', "\n")))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Paragraphs (separated by blank lines), each a list of lines.
    fn paragraphs(&self) -> Vec<Vec<&str>> {
        self.0
            .split("\n\n")
            .map(|paragraph| paragraph.trim_matches('\n'))
            .filter(|paragraph| !paragraph.is_empty())
            .map(|paragraph| paragraph.split('\n').collect())
            .collect()
    }
}

/// A request that passed every check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outgoing {
    pub from: ValidMailbox,
    pub to: ValidMailbox,
    pub subject: Subject,
    pub body: Body,
}

impl Outgoing {
    /// Checks `request`; an absent or blank `from` becomes `default_sender`.
    pub fn parse(
        request: &SendRequest,
        default_sender: &ValidMailbox,
        max_message_bytes: usize,
    ) -> Result<Self, InvalidMail> {
        let from = match request.from.as_deref() {
            None => default_sender.clone(),
            Some(from) if from.trim().is_empty() && !from.chars().any(char::is_control) => {
                default_sender.clone()
            }
            Some(from) => ValidMailbox::parse("from", from)?,
        };
        Ok(Self {
            from,
            to: ValidMailbox::parse("to", &request.to)?,
            subject: Subject::parse(&request.subject)?,
            body: Body::parse(&request.message, max_message_bytes)?,
        })
    }
}

/// HTML escaping as Go's `html/template` does it: `&lt; &gt; &amp; &#34; &#39;`
/// (configured for `.html` templates in `askama.toml`).
#[derive(Debug, Clone, Copy)]
pub struct GoHtmlEscaper;

impl askama::filters::Escaper for GoHtmlEscaper {
    fn write_escaped_str<W: std::fmt::Write>(&self, mut dest: W, string: &str) -> std::fmt::Result {
        let mut unescaped_from = 0;
        for (index, byte) in string.bytes().enumerate() {
            let entity = match byte {
                b'<' => "&lt;",
                b'>' => "&gt;",
                b'&' => "&amp;",
                b'"' => "&#34;",
                b'\'' => "&#39;",
                _ => continue,
            };
            dest.write_str(&string[unescaped_from..index])?;
            dest.write_str(entity)?;
            unescaped_from = index + 1;
        }
        dest.write_str(&string[unescaped_from..])
    }
}

#[derive(Template)]
#[template(path = "message.html")]
struct HtmlPart<'a> {
    subject: &'a str,
    paragraphs: Vec<Vec<&'a str>>,
}

#[derive(Template)]
#[template(path = "message.txt")]
struct PlainPart<'a> {
    message: &'a str,
}

/// Rendering or assembling the e-mail failed; both would be bugs, not bad input.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("cannot render the {part} template: {source}")]
    Template {
        part: &'static str,
        #[source]
        source: askama::Error,
    },
    #[error("cannot assemble the e-mail: {0}")]
    Assemble(#[from] lettre::error::Error),
}

/// The plain-text and HTML renderings of a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendered {
    pub plain: String,
    pub html: String,
}

/// Renders both parts. The HTML template escapes `&<>"'`; the plain one does not.
pub fn render(subject: &Subject, body: &Body) -> Result<Rendered, BuildError> {
    let plain = PlainPart {
        message: body.as_str(),
    }
    .render()
    .map_err(|source| BuildError::Template {
        part: "plain-text",
        source,
    })?;
    let html = HtmlPart {
        subject: subject.as_str(),
        paragraphs: body.paragraphs(),
    }
    .render()
    .map_err(|source| BuildError::Template {
        part: "HTML",
        source,
    })?;
    Ok(Rendered { plain, html })
}

/// The header that ties a message to the request that sent it (and so to the
/// broker's and this service's log lines with the same `REQUEST_ID`).
const REQUEST_ID_HEADER: HeaderName = HeaderName::new_from_ascii_str("X-Request-Id");

/// The complete e-mail: headers plus `multipart/alternative` (plain, then HTML,
/// because clients show the last alternative they understand). A request id
/// made of safe characters (at most 128 of `A-Z a-z 0-9 - _ . :`) is added as
/// `X-Request-Id`; anything else is left out rather than put in a header.
pub fn build(outgoing: &Outgoing, request_id: Option<&str>) -> Result<Message, BuildError> {
    let rendered = render(&outgoing.subject, &outgoing.body)?;
    let mut builder = Message::builder()
        .from(outgoing.from.mailbox().clone())
        .to(outgoing.to.mailbox().clone())
        .subject(outgoing.subject.as_str())
        .message_id(None);
    if let Some(id) = request_id.filter(|id| is_safe_request_id(id)) {
        builder = builder.raw_header(HeaderValue::new(REQUEST_ID_HEADER, id.to_owned()));
    }
    Ok(builder.multipart(MultiPart::alternative_plain_html(
        rendered.plain,
        rendered.html,
    ))?)
}

fn is_safe_request_id(id: &str) -> bool {
    (1..=128).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn default_sender() -> ValidMailbox {
        ValidMailbox::parse("sender", "Switchboard <switchboard@example.com>").expect("valid")
    }

    fn request(from: Option<&str>, to: &str, subject: &str, message: &str) -> SendRequest {
        SendRequest {
            from: from.map(str::to_owned),
            to: to.to_owned(),
            subject: subject.to_owned(),
            message: message.to_owned(),
        }
    }

    #[test]
    fn accepts_bare_and_named_mailboxes() {
        let bare = ValidMailbox::parse("to", "you@there.com").expect("bare");
        assert_eq!(bare.address(), "you@there.com");
        let named = ValidMailbox::parse("to", " Some One <one@there.com> ").expect("named");
        assert_eq!(named.address(), "one@there.com");
        assert_eq!(named.mailbox().name.as_deref(), Some("Some One"));
    }

    #[test]
    fn refuses_non_ascii_addresses_but_not_names() {
        for value in [
            "rcpt🚀@example.com",
            "user@exämple.com",
            "Ünï <ü@example.com>",
        ] {
            assert!(
                matches!(
                    ValidMailbox::parse("to", value),
                    Err(InvalidMail::NonAsciiAddress { field: "to", .. })
                ),
                "{value}"
            );
        }
        let named = ValidMailbox::parse("to", "Jörg Müller <joerg@xn--exmple-cua.com>")
            .expect("ASCII address");
        assert_eq!(named.address(), "joerg@xn--exmple-cua.com");
    }

    #[test]
    fn refuses_anything_but_exactly_one_mailbox() {
        for value in [
            "not an address",
            "a@b.example, c@d.example",
            "a@b.example garbage",
            "a@b.example>",
            "<a@b.example",
            "@b.example",
            "a@",
        ] {
            let err = ValidMailbox::parse("to", value).expect_err(value);
            assert!(
                matches!(err, InvalidMail::NotAMailbox { field: "to", .. }),
                "{value}: {err}"
            );
        }
    }

    #[test]
    fn refuses_header_injection_in_addresses_and_subject() {
        for value in [
            "a@b.example\r\nBcc: victim@c.example",
            "a@b.example\nBcc: victim@c.example",
            "Name\r\n <a@b.example>",
            "a@b.example\0",
        ] {
            assert_eq!(
                ValidMailbox::parse("from", value),
                Err(InvalidMail::HeaderInjection { field: "from" }),
                "{value:?}"
            );
        }
        assert_eq!(
            Subject::parse("Hi\r\nBcc: victim@c.example"),
            Err(InvalidMail::HeaderInjection { field: "subject" })
        );
        assert!(Subject::parse("tab\tis fine").is_ok());
    }

    #[test]
    fn an_empty_from_means_the_default_sender_but_an_injected_one_does_not() {
        let sender = default_sender();
        for from in [None, Some(""), Some("   ")] {
            let outgoing = Outgoing::parse(&request(from, "you@there.com", "s", "m"), &sender, 100)
                .expect("valid");
            assert_eq!(outgoing.from, sender);
        }
        let err = Outgoing::parse(
            &request(Some("\r\n"), "you@there.com", "s", "m"),
            &sender,
            100,
        )
        .expect_err("CRLF only");
        assert_eq!(err, InvalidMail::HeaderInjection { field: "from" });
    }

    #[test]
    fn limits_are_enforced_with_the_numbers_in_the_message() {
        let long_subject = "x".repeat(MAX_SUBJECT_BYTES + 1);
        let err = Subject::parse(&long_subject).expect_err("too long");
        assert!(err.to_string().contains("999 bytes"), "{err}");
        assert!(Subject::parse(&"x".repeat(MAX_SUBJECT_BYTES)).is_ok());
        let err = Body::parse("12345", 4).expect_err("too large");
        assert_eq!(
            err.to_string(),
            "`message` is 5 bytes long; the limit is 4 bytes"
        );
        assert!(Body::parse("1234", 4).is_ok());
        assert_eq!(
            Outgoing::parse(&request(None, "", "s", "m"), &default_sender(), 10),
            Err(InvalidMail::Missing { field: "to" })
        );
    }

    #[test]
    fn html_is_escaped_and_line_breaks_kept_plain_is_raw() {
        let body = Body::parse("<b>&\"x\"\r\nsecond line\n\nnew paragraph", 1000).expect("body");
        let subject = Subject::parse("<subject>").expect("subject");
        let rendered = render(&subject, &body).expect("render");
        assert!(
            rendered
                .html
                .contains("<p>&lt;b&gt;&amp;&#34;x&#34;<br>\n      second line</p>"),
            "{}",
            rendered.html
        );
        assert!(
            rendered.html.contains("<p>new paragraph</p>"),
            "{}",
            rendered.html
        );
        assert!(!rendered.html.contains("<b>"), "{}", rendered.html);
        assert!(
            rendered.html.contains("<title>&lt;subject&gt;</title>"),
            "{}",
            rendered.html
        );
        assert_eq!(rendered.plain, "<b>&\"x\"\nsecond line\n\nnew paragraph");
    }

    #[test]
    fn the_email_is_multipart_alternative_plain_first() {
        let outgoing = Outgoing::parse(
            &request(
                Some("me@example.com"),
                "you@there.com",
                "Test email",
                "Hello world!",
            ),
            &default_sender(),
            1000,
        )
        .expect("valid");
        let formatted =
            String::from_utf8(build(&outgoing, Some("req-1")).expect("build").formatted())
                .expect("utf-8");
        assert!(formatted.contains("From: me@example.com"), "{formatted}");
        assert!(formatted.contains("To: you@there.com"), "{formatted}");
        assert!(formatted.contains("Subject: Test email"), "{formatted}");
        assert!(formatted.contains("Message-ID: <"), "{formatted}");
        assert!(formatted.contains("X-Request-Id: req-1\r\n"), "{formatted}");
        let unsafe_id = build(&outgoing, Some("a\r\nBcc: x@y.example"))
            .expect("build")
            .formatted();
        let unsafe_id = String::from_utf8(unsafe_id).expect("utf-8");
        assert!(!unsafe_id.contains("X-Request-Id"), "{unsafe_id}");
        assert!(
            formatted.contains("Content-Type: multipart/alternative"),
            "{formatted}"
        );
        let plain = formatted
            .find("Content-Type: text/plain")
            .expect("plain part");
        let html = formatted
            .find("Content-Type: text/html")
            .expect("html part");
        assert!(plain < html, "plain part must come first");
    }
}
