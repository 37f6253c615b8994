//! AMQP connection defaults shared by the services that talk to RabbitMQ
//! (auth, broker, listener).

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

/// `url` with `frame_max=DEFAULT_FRAME_MAX` added to its query, unless the
/// operator chose a `frame_max` there already.
pub fn with_default_frame_max(url: &str) -> String {
    let (base, fragment) = match url.split_once('#') {
        Some((base, fragment)) => (base, Some(fragment)),
        None => (url, None),
    };
    let query = base.split_once('?').map_or("", |(_, query)| query);
    if query
        .split('&')
        .any(|pair| pair.split('=').next() == Some("frame_max"))
    {
        return url.to_owned();
    }
    let separator = match base.split_once('?') {
        None => "?",
        Some((_, "")) => "",
        Some(_) => "&",
    };
    let mut out = format!("{base}{separator}frame_max={DEFAULT_FRAME_MAX}");
    if let Some(fragment) = fragment {
        out.push('#');
        out.push_str(fragment);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adds_the_default_frame_size() {
        assert_eq!(
            with_default_frame_max("amqp://guest:guest@127.0.0.1:5672/%2f"),
            "amqp://guest:guest@127.0.0.1:5672/%2f?frame_max=16384"
        );
        assert_eq!(
            with_default_frame_max("amqp://h/%2f?heartbeat=10"),
            "amqp://h/%2f?heartbeat=10&frame_max=16384"
        );
        assert_eq!(
            with_default_frame_max("amqp://h/v?"),
            "amqp://h/v?frame_max=16384"
        );
    }

    #[test]
    fn keeps_the_operators_choice() {
        let url = "amqp://h/%2f?frame_max=131072&heartbeat=5";
        assert_eq!(with_default_frame_max(url), url);
    }
}
