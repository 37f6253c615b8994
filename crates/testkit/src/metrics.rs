//! Reading a Prometheus text exposition in tests: the value of one series.

/// The value of `series` (the name with its labels, exactly as exposed:
/// `switchboard_http_requests_total{route="/",method="POST",status="200"}`)
/// in `exposition`, if it is there.
pub fn sample(exposition: &str, series: &str) -> Option<f64> {
    exposition.lines().find_map(|line| {
        let value = line.strip_prefix(series)?.strip_prefix(' ')?;
        value.split_whitespace().next()?.parse().ok()
    })
}

/// The sum of every series of `name` whose labels include all of `labels`
/// (`[("route", "/handle")]`), so a test need not spell the labels it does
/// not care about. `None` when no series matches.
pub fn sum(exposition: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let wanted: Vec<String> = labels
        .iter()
        .map(|(key, value)| format!("{key}=\"{value}\""))
        .collect();
    let mut total = None;
    for line in exposition.lines() {
        let Some(rest) = line.strip_prefix(name) else {
            continue;
        };
        let (labels, value) = match rest.strip_prefix('{') {
            Some(labelled) => match labelled.split_once("} ") {
                Some((labels, value)) => (labels, value),
                None => continue,
            },
            None => match rest.strip_prefix(' ') {
                Some(value) => ("", value),
                None => continue,
            },
        };
        let has_all = wanted
            .iter()
            .all(|pair| labels.split(',').any(|label| label == pair));
        if !has_all {
            continue;
        }
        if let Some(value) = value
            .split_whitespace()
            .next()
            .and_then(|v| v.parse::<f64>().ok())
        {
            *total.get_or_insert(0.0) += value;
        }
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXPOSITION: &str = "\
# HELP switchboard_http_requests_total HTTP requests answered.
# TYPE switchboard_http_requests_total counter
switchboard_http_requests_total{route=\"/\",method=\"POST\",status=\"200\"} 3
switchboard_http_requests_total{route=\"/handle\",method=\"POST\",status=\"202\"} 5
switchboard_http_requests_total{route=\"/handle\",method=\"POST\",status=\"400\"} 2
switchboard_http_requests_total_other 9
process_open_fds 17
";

    #[test]
    fn finds_one_series_and_sums_by_labels() {
        assert_eq!(sample(EXPOSITION, "process_open_fds"), Some(17.0));
        assert_eq!(
            sample(
                EXPOSITION,
                r#"switchboard_http_requests_total{route="/",method="POST",status="200"}"#
            ),
            Some(3.0)
        );
        assert_eq!(
            sum(
                EXPOSITION,
                "switchboard_http_requests_total",
                &[("route", "/handle")]
            ),
            Some(7.0)
        );
        assert_eq!(
            sum(EXPOSITION, "switchboard_http_requests_total", &[]),
            Some(10.0)
        );
        assert_eq!(
            sum(
                EXPOSITION,
                "switchboard_http_requests_total",
                &[("route", "/x")]
            ),
            None
        );
    }
}
