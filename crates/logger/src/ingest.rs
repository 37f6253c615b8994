//! The one path every door's writes take: validate, then hand to the batching
//! writer. Doors only translate requests in and outcomes out.

use switchboard_runtime::telemetry::{self, SpanKind};

use crate::batch::Writer;
use crate::entry::{EntryError, EntryRules, ValidEntry};
use crate::metrics::{Door, LoggerMetrics, WriteOutcome};
use crate::store::StoreError;

/// Why a write did not succeed: the client's fault, or the store's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IngestError {
    #[error("invalid log entry: {0}")]
    Invalid(#[from] EntryError),
    /// The id is stored already with other content: HTTP 409, gRPC
    /// ALREADY_EXISTS, `RpcError::Conflict`. The client's to resolve (a new
    /// entry needs a new id), so the message is the client's to read.
    #[error(
        "log entry id {id:?} is already stored with a different name or data; a new entry needs a new id"
    )]
    Conflict { id: String },
    #[error("log store unavailable: {0}")]
    Store(StoreError),
}

impl From<StoreError> for IngestError {
    fn from(err: StoreError) -> Self {
        match err {
            StoreError::Conflict { id } => Self::Conflict { id },
            other => Self::Store(other),
        }
    }
}

/// Validation rules plus the writer, shared by the three doors.
#[derive(Debug, Clone)]
pub struct Ingest {
    rules: EntryRules,
    writer: Writer,
    metrics: LoggerMetrics,
}

impl Ingest {
    pub fn new(rules: EntryRules, writer: Writer, metrics: LoggerMetrics) -> Self {
        Self {
            rules,
            writer,
            metrics,
        }
    }

    pub fn metrics(&self) -> &LoggerMetrics {
        &self.metrics
    }

    pub fn rules(&self) -> EntryRules {
        self.rules
    }

    /// Validates and stores one entry; returns it once it is stored (or was
    /// stored before under its id, with the same name and data).
    /// `door` names where it came in, for the metrics.
    pub async fn log(
        &self,
        door: Door,
        name: String,
        data: String,
        id: Option<String>,
    ) -> Result<ValidEntry, IngestError> {
        let logged = self.validate_and_write(name, data, id).await;
        self.metrics.write(
            door,
            match &logged {
                Ok(_) => WriteOutcome::stored,
                Err(IngestError::Invalid(_)) => WriteOutcome::invalid,
                Err(IngestError::Conflict { .. }) => WriteOutcome::conflict,
                Err(IngestError::Store(_)) => WriteOutcome::unavailable,
            },
        );
        logged
    }

    async fn validate_and_write(
        &self,
        name: String,
        data: String,
        id: Option<String>,
    ) -> Result<ValidEntry, IngestError> {
        let entry = self.rules.parse(name, data, id)?;
        // The entry's time in the group commit: waiting for its batch and
        // the batch's insert.
        telemetry::traced(
            || telemetry::step_span("store insert", SpanKind::Client),
            self.writer.write(&entry),
        )
        .await?;
        Ok(entry)
    }
}
