//! Where work enters a service (a request served, a message consumed, an
//! entry of a batch), its trace is decided once, before its span exists:
//! kept, or not. A kept trace's spans become OpenTelemetry spans; a trace
//! that is not kept costs no OpenTelemetry work at all, in its entry span or
//! in any span made while its work runs, because the trace layer's filter
//! ([`KeptTraces`]) never lets them through. (Left to the sampler, every
//! span would be built, sampled and dropped: with `sample_ratio = 0` that
//! cost the broker half again its instructions per request.)
//!
//! The decision is the sampler's rule ([`super::WithinRatio`]), taken early:
//! a caller's trace is kept when the caller kept it and its trace id falls
//! within the ratio; a trace started here when its new id does. So that the
//! id the decision was made on is the id the trace gets, a kept new trace's
//! id is handed to the SDK's id generator ([`PresetIds`]) when its span
//! starts, on the thread that decided.
//!
//! A trace that is not kept still travels: while its work runs (a task-local
//! around the work's future, see [`Traced::instrument`]) outgoing calls send
//! its trace id on flagged not sampled, so the services after this one do
//! not start (and keep) a trace of their own for it. The task-local, not a
//! mark on the span, because the span need not exist: with the log filter
//! above `info` nothing else wants it.

use std::cell::Cell;
use std::future::Future;

use futures::future::Either;
use opentelemetry::propagation::{Extractor, Injector};
use opentelemetry::trace::{
    SpanContext, SpanId, TraceContextExt as _, TraceFlags, TraceId, TraceState,
};
use opentelemetry_sdk::trace::{IdGenerator, RandomIdGenerator};
use tracing::subscriber::Interest;
use tracing::{Instrument as _, Metadata, Span, Subscriber};
use tracing_opentelemetry::OpenTelemetrySpanExt as _;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::{Context, Filter};
use tracing_subscriber::registry::LookupSpan;

use super::SpanKind;

/// The trace of one unit of work entering this service; make its span with
/// [`Entry::span`].
#[derive(Debug)]
pub struct Entry(Decision);

#[derive(Debug)]
enum Decision {
    /// Traces are off.
    Off,
    /// No trace context came with the work, and it runs inside a span of
    /// this process: its trace is that span's.
    Inherit,
    Kept {
        /// The caller's context; `None` for a trace started here.
        parent: Option<opentelemetry::Context>,
        /// The id a trace started here was decided on.
        new_trace: Option<TraceId>,
    },
    Unkept(Unkept),
}

/// A trace that is not kept: what goes on to the next service (this trace
/// id, the caller's span, not sampled).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Unkept {
    trace_id: TraceId,
    span_id: SpanId,
}

impl Unkept {
    pub(super) fn context(self) -> opentelemetry::Context {
        opentelemetry::Context::new().with_remote_span_context(SpanContext::new(
            self.trace_id,
            self.span_id,
            TraceFlags::default(),
            true,
            TraceState::default(),
        ))
    }
}

tokio::task_local! {
    /// Set while the work of a trace not kept runs.
    static UNKEPT: Unkept;
}

/// The trace not kept whose work is running here, if any.
pub(super) fn running_unkept() -> Option<Unkept> {
    UNKEPT.try_with(|unkept| *unkept).ok()
}

/// What the span being made is, for [`KeptTraces`]: set around the one call
/// that makes an entry span, on the thread that makes it (span creation
/// runs the layers synchronously).
#[derive(Debug, Clone, Copy)]
enum Hint {
    Kept,
    Unkept,
}

thread_local! {
    static HINT: Cell<Option<Hint>> = const { Cell::new(None) };
    static NEW_TRACE: Cell<Option<TraceId>> = const { Cell::new(None) };
}

/// The trace of work that came with `carrier` (its headers).
pub fn entry(carrier: &dyn Extractor) -> Entry {
    match super::sample_ratio() {
        None => Entry(Decision::Off),
        Some(ratio) => Entry(decide(super::extract(carrier), ratio)),
    }
}

/// The trace of work that came with `traceparent` (an entry of a batch, a
/// queued event).
pub fn entry_from_traceparent(traceparent: Option<&str>) -> Entry {
    match super::sample_ratio() {
        None => Entry(Decision::Off),
        Some(ratio) => {
            let parent = traceparent
                .map(super::context_from_traceparent)
                .unwrap_or_default();
            Entry(decide(parent, ratio))
        }
    }
}

fn decide(parent: opentelemetry::Context, ratio: f64) -> Decision {
    let caller = parent.span().span_context().clone();
    if caller.is_valid() {
        return if caller.is_sampled() && super::within_ratio(ratio, caller.trace_id()) {
            Decision::Kept {
                parent: Some(parent),
                new_trace: None,
            }
        } else {
            Decision::Unkept(Unkept {
                trace_id: caller.trace_id(),
                span_id: caller.span_id(),
            })
        };
    }
    if let Some(unkept) = running_unkept() {
        return Decision::Unkept(unkept);
    }
    if !Span::current().is_none() {
        return Decision::Inherit;
    }
    let ids = RandomIdGenerator::default();
    let trace_id = ids.new_trace_id();
    if super::within_ratio(ratio, trace_id) {
        Decision::Kept {
            parent: None,
            new_trace: Some(trace_id),
        }
    } else {
        Decision::Unkept(Unkept {
            trace_id,
            span_id: ids.new_span_id(),
        })
    }
}

impl Entry {
    /// Makes the entry's span with `make` (a span that declares
    /// `otel.kind`, `otel.name` and, where its lines should carry
    /// `TRACE_ID`, `trace_id` as `Empty`) and joins it to its trace, named
    /// `name` and of `kind` there. Run the work through
    /// [`Traced::instrument`] (or [`Traced::in_scope`]).
    pub fn span(
        self,
        kind: SpanKind,
        name: std::fmt::Arguments<'_>,
        make: impl FnOnce() -> Span,
    ) -> Traced {
        match self.0 {
            Decision::Off => Traced::kept(make()),
            Decision::Unkept(unkept) => Traced {
                // A span every layer then turns down would still be made:
                // the registry keeps a span some per-layer filter was asked
                // about. Only the logs can want it.
                span: if super::logs_want_spans() {
                    with_hint(Hint::Unkept, make)
                } else {
                    Span::none()
                },
                unkept: Some(unkept),
            },
            Decision::Inherit => {
                let span = make();
                super::describe(&span, kind, name);
                super::record_trace_id(&span);
                Traced::kept(span)
            }
            Decision::Kept { parent, new_trace } => {
                let span = with_hint(Hint::Kept, make);
                super::describe(&span, kind, name);
                if let Some(parent) = parent {
                    // Only fails for a span already started.
                    let _ = span.set_parent(parent);
                }
                // Recording the id starts the span, here: a new trace takes
                // the id it was kept for.
                NEW_TRACE.set(new_trace);
                super::record_trace_id(&span);
                NEW_TRACE.set(None);
                Traced::kept(span)
            }
        }
    }

    /// An outgoing call's span (see [`super::call_span`]) as the entry of
    /// the work it carries on: a queued event's publish, a batch's call.
    pub fn call_span(self, downstream: &str, transport: &str, kind: SpanKind) -> Traced {
        self.span(kind, format_args!("{downstream} {transport}"), || {
            super::new_call_span(downstream, transport)
        })
    }
}

/// The span of work that entered this service, and whether its trace is
/// kept.
#[derive(Debug, Clone)]
pub struct Traced {
    span: Span,
    unkept: Option<Unkept>,
}

impl Traced {
    fn kept(span: Span) -> Self {
        Self { span, unkept: None }
    }

    /// The work's span (disabled when neither the logs nor a kept trace
    /// want it).
    pub fn span(&self) -> &Span {
        &self.span
    }

    /// Whether the work's spans can reach a collector: traces are on and
    /// its trace was not turned down.
    pub fn is_traced(&self) -> bool {
        super::enabled() && self.unkept.is_none()
    }

    /// Runs `work` (the work's future) inside the span, and for a trace not
    /// kept with that known to every span and outgoing call it makes.
    pub fn instrument<F: Future>(self, work: F) -> impl Future<Output = F::Output> {
        let work = work.instrument(self.span);
        match self.unkept {
            None => Either::Left(work),
            Some(unkept) => Either::Right(UNKEPT.scope(unkept, work)),
        }
    }

    /// [`Traced::instrument`] for synchronous work.
    pub fn in_scope<R>(&self, work: impl FnOnce() -> R) -> R {
        match self.unkept {
            None => self.span.in_scope(work),
            Some(unkept) => UNKEPT.sync_scope(unkept, || self.span.in_scope(work)),
        }
    }

    /// Writes the work's trace context into `carrier`: for work carried on
    /// outside its span (a queued event's publish).
    pub fn inject(&self, carrier: &mut dyn Injector) {
        match self.unkept {
            Some(unkept) => super::inject_context(&unkept.context(), carrier),
            None => super::inject_span(&self.span, carrier),
        }
    }
}

fn with_hint(hint: Hint, make: impl FnOnce() -> Span) -> Span {
    /// Clears the hint even if `make` panics: a stale hint would decide the
    /// next span made on this thread.
    struct Clear;
    impl Drop for Clear {
        fn drop(&mut self) {
            HINT.set(None);
        }
    }
    HINT.set(Some(hint));
    let _clear = Clear;
    make()
}

/// The trace layer's filter: the spans a trace is made of (`spans`), and of
/// those only the spans of kept traces. A span is turned down when it is the
/// entry span of a trace not kept, when it is made while the work of such a
/// trace runs, or when its traced parent was turned down; a span with no
/// traced parent starts a trace of its own (tarpc's server span, which takes
/// its caller's context right after) and is left to the sampler.
pub(super) struct KeptTraces {
    pub(super) spans: Targets,
}

impl<S> Filter<S> for KeptTraces
where
    S: Subscriber + for<'lookup> LookupSpan<'lookup>,
{
    fn enabled(&self, meta: &Metadata<'_>, cx: &Context<'_, S>) -> bool {
        if !meta.is_span() || !self.spans.would_enable(meta.target(), meta.level()) {
            return false;
        }
        match HINT.get() {
            Some(Hint::Kept) => return true,
            Some(Hint::Unkept) => return false,
            None => {}
        }
        if running_unkept().is_some() {
            return false;
        }
        // `current_span` is the registry's, unfiltered: a traceable parent
        // this filter turned down was in a trace not kept.
        let parent = cx.current_span();
        match (parent.id(), parent.metadata()) {
            (Some(id), Some(parent))
                if self.spans.would_enable(parent.target(), parent.level()) =>
            {
                cx.span(id).is_some()
            }
            _ => true,
        }
    }

    fn callsite_enabled(&self, meta: &'static Metadata<'static>) -> Interest {
        // Decided per span, not per call site.
        if meta.is_span() && self.spans.would_enable(meta.target(), meta.level()) {
            Interest::sometimes()
        } else {
            Interest::never()
        }
    }
}

/// The SDK's random ids, except for the trace [`Entry::span`] just decided
/// to keep, which gets the id it was decided on.
#[derive(Debug, Default)]
pub(super) struct PresetIds(RandomIdGenerator);

impl IdGenerator for PresetIds {
    fn new_trace_id(&self) -> TraceId {
        NEW_TRACE.take().unwrap_or_else(|| self.0.new_trace_id())
    }

    fn new_span_id(&self) -> SpanId {
        self.0.new_span_id()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use opentelemetry::trace::TracerProvider as _;
    use opentelemetry_sdk::error::OTelSdkResult;
    use opentelemetry_sdk::trace::{SdkTracerProvider, SpanData, SpanExporter};

    use super::*;

    /// The spans the SDK ended, as an exporter receives them.
    #[derive(Debug, Clone, Default)]
    struct Received(Arc<Mutex<Vec<SpanData>>>);

    impl SpanExporter for Received {
        async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
            self.0.lock().expect("not poisoned").extend(batch);
            Ok(())
        }
    }

    impl Received {
        fn spans(&self) -> Vec<SpanData> {
            self.0.lock().expect("not poisoned").clone()
        }
    }

    /// Runs `work` under the services' trace layers with `ratio`, and
    /// returns the spans exported.
    fn traced_with(ratio: f64, work: impl FnOnce()) -> Vec<SpanData> {
        let received = Received::default();
        let provider = SdkTracerProvider::builder()
            .with_simple_exporter(received.clone())
            .with_sampler(super::super::WithinRatio(
                opentelemetry_sdk::trace::Sampler::TraceIdRatioBased(ratio),
            ))
            .with_id_generator(PresetIds::default())
            .build();
        // As the services run it, with logs that write nothing and a log
        // filter that turns everything down.
        let subscriber = super::super::traced_subscriber(
            tracing_subscriber::layer::Identity::new(),
            tracing_subscriber::EnvFilter::new("off"),
            provider.tracer("test"),
        );
        tracing::subscriber::with_default(subscriber, work);
        received.spans()
    }

    fn entry_span() -> Span {
        tracing::info_span!(
            "request",
            trace_id = tracing::field::Empty,
            otel.kind = tracing::field::Empty,
            otel.name = tracing::field::Empty,
        )
    }

    fn traceparent_sent() -> Option<String> {
        let mut headers = axum::http::HeaderMap::new();
        let context = super::super::context_to_send(&Span::current())?;
        super::super::inject_context(&context, &mut super::super::HeaderCarrier(&mut headers));
        Some(headers.get("traceparent")?.to_str().ok()?.to_owned())
    }

    fn new_trace(ratio: f64) -> Decision {
        tracing::subscriber::with_default(tracing_subscriber::registry(), || {
            decide(opentelemetry::Context::new(), ratio)
        })
    }

    #[test]
    fn a_trace_not_kept_exports_nothing_and_goes_on_unsampled() {
        let unkept = Unkept {
            trace_id: TraceId::from(0x0af7_6519_16cd_43dd_8448_eb21_1c80_319c_u128),
            span_id: SpanId::from(0x00f0_67aa_0ba9_02b7_u64),
        };
        let mut sent = None;
        let exported = traced_with(1.0, || {
            let span = Entry(Decision::Unkept(unkept)).span(
                super::super::SpanKind::Server,
                format_args!("GET"),
                entry_span,
            );
            span.in_scope(|| {
                tracing::info_span!("call", downstream = "logger").in_scope(|| {
                    tracing::info_span!("step").in_scope(|| sent = traceparent_sent());
                });
            });
        });
        assert!(exported.is_empty(), "{exported:?}");
        assert_eq!(
            sent.as_deref(),
            Some("00-0af7651916cd43dd8448eb211c80319c-00f067aa0ba902b7-00")
        );
    }

    #[test]
    fn a_kept_trace_is_exported_whole_under_the_id_it_was_kept_for() {
        let Decision::Kept {
            new_trace: Some(trace_id),
            ..
        } = new_trace(1.0)
        else {
            panic!("at ratio 1 a new trace is kept");
        };
        let mut sent = None;
        let exported = traced_with(1.0, || {
            let span = Entry(Decision::Kept {
                parent: None,
                new_trace: Some(trace_id),
            })
            .span(
                super::super::SpanKind::Server,
                format_args!("GET"),
                entry_span,
            );
            span.in_scope(|| {
                tracing::info_span!("call").in_scope(|| sent = traceparent_sent());
            });
        });
        assert_eq!(exported.len(), 2, "{exported:?}");
        let (call, request) = (&exported[0], &exported[1]);
        assert_eq!(request.name, "GET");
        assert_eq!(request.span_context.trace_id(), trace_id);
        assert_eq!(call.span_context.trace_id(), trace_id);
        assert_eq!(call.parent_span_id, request.span_context.span_id());
        assert_eq!(
            sent,
            Some(format!("00-{trace_id}-{}-01", call.span_context.span_id()))
        );
    }

    #[test]
    fn the_early_decision_is_the_samplers() {
        let caller = |sampled, trace_id| super::super::tests::parent(true, sampled, trace_id);
        let mut kept = 0;
        for n in 1..=1_000_u128 {
            let trace_id = TraceId::from(n.wrapping_mul(0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c835));
            let within = super::super::within_ratio(0.25, trace_id);
            kept += usize::from(within);
            assert_eq!(
                matches!(decide(caller(true, trace_id), 0.25), Decision::Kept { .. }),
                within
            );
            // A caller that did not keep it is followed, and its ids go on.
            assert!(matches!(
                decide(caller(false, trace_id), 1.0),
                Decision::Unkept(Unkept { trace_id: id, span_id }) if id == trace_id && span_id == SpanId::from(7)
            ));
        }
        assert!((150..350).contains(&kept), "{kept} of 1000 within 0.25");
        // A trace started here is kept for an id within the ratio.
        for _ in 0..100 {
            match new_trace(0.5) {
                Decision::Kept {
                    new_trace: Some(id),
                    ..
                } => assert!(super::super::within_ratio(0.5, id)),
                Decision::Unkept(unkept) => {
                    assert!(!super::super::within_ratio(0.5, unkept.trace_id))
                }
                other => panic!("{other:?}"),
            }
        }
        assert!(matches!(new_trace(0.0), Decision::Unkept(_)));
    }

    struct TestCallsite(&'static Metadata<'static>);

    impl tracing::Callsite for TestCallsite {
        fn set_interest(&self, _: Interest) {}
        fn metadata(&self) -> &Metadata<'_> {
            self.0
        }
    }

    static LIBRARY_TRACE: TestCallsite = TestCallsite(&LIBRARY_TRACE_META);
    static LIBRARY_TRACE_META: Metadata<'static> = Metadata::new(
        "a library's trace line",
        "hyper::proto::h1",
        tracing::Level::TRACE,
        None,
        None,
        None,
        tracing::field::FieldSet::new(&[], tracing::callsite::Identifier(&LIBRARY_TRACE)),
        tracing::metadata::Kind::EVENT,
    );
    static OUR_SPAN: TestCallsite = TestCallsite(&OUR_SPAN_META);
    static OUR_SPAN_META: Metadata<'static> = Metadata::new(
        "request",
        "switchboard_runtime::edge",
        tracing::Level::INFO,
        None,
        None,
        None,
        tracing::field::FieldSet::new(&[], tracing::callsite::Identifier(&OUR_SPAN)),
        tracing::metadata::Kind::SPAN,
    );

    #[test]
    fn traces_on_leave_the_call_sites_every_layer_turns_down_turned_down() {
        let provider = SdkTracerProvider::builder().build();
        let dispatch = tracing::Dispatch::new(super::super::traced_subscriber(
            tracing_subscriber::layer::Identity::new(),
            tracing_subscriber::EnvFilter::new("info"),
            provider.tracer("test"),
        ));
        // Asked on every call, hyper's trace lines would cost every request.
        assert!(dispatch.register_callsite(&LIBRARY_TRACE_META).is_never());
        // A span of ours is decided span by span: kept or not.
        assert!(dispatch.register_callsite(&OUR_SPAN_META).is_sometimes());
    }
}
