//! Records the `request_id` of every span created in this test process, so a
//! test can see that the id it sent to the broker reached the logger (whose
//! doors open `request`, `rpc` and `grpc` spans carrying it).

use std::fmt;
use std::sync::{Mutex, OnceLock};

use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id};
use tracing::{Subscriber, level_filters::LevelFilter};
use tracing_subscriber::layer::{Context, Layer, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;

/// One span that carried a request id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpanRecord {
    pub name: String,
    pub request_id: String,
    pub path: Option<String>,
}

static SPANS: Mutex<Vec<SpanRecord>> = Mutex::new(Vec::new());
static INSTALLED: OnceLock<()> = OnceLock::new();

/// Installs the recorder (and test-captured log output) once per process.
pub fn install() {
    INSTALLED.get_or_init(|| {
        let _ = tracing_subscriber::registry()
            .with(LevelFilter::INFO)
            .with(Recorder)
            .with(tracing_subscriber::fmt::layer().with_test_writer())
            .try_init();
    });
}

/// Spans recorded with this request id.
pub fn spans_with(request_id: &str) -> Vec<SpanRecord> {
    SPANS
        .lock()
        .map(|spans| {
            spans
                .iter()
                .filter(|span| span.request_id == request_id)
                .cloned()
                .collect()
        })
        .unwrap_or_default()
}

struct Recorder;

#[derive(Default)]
struct Fields {
    request_id: Option<String>,
    path: Option<String>,
}

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.record(field, value.to_owned());
    }
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.record(field, format!("{value:?}"));
    }
}

impl Fields {
    fn record(&mut self, field: &Field, value: String) {
        match field.name() {
            "request_id" => self.request_id = Some(value),
            "path" => self.path = Some(value),
            _ => {}
        }
    }
}

impl<S: Subscriber + for<'a> LookupSpan<'a>> Layer<S> for Recorder {
    fn on_new_span(&self, attrs: &Attributes<'_>, _id: &Id, _ctx: Context<'_, S>) {
        let mut fields = Fields::default();
        attrs.record(&mut fields);
        if let Some(request_id) = fields.request_id
            && let Ok(mut spans) = SPANS.lock()
        {
            spans.push(SpanRecord {
                name: attrs.metadata().name().to_owned(),
                request_id,
                path: fields.path,
            });
        }
    }
}
