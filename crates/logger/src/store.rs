//! The MongoDB side: connecting, preparing indexes, inserting batches and
//! reading entries back, plus [`Health`], which lets writes fail at once while
//! the server is known to be gone and notices by itself when it returns.
//!
//! Only operations that MongoDB and FerretDB v1 both support are used (no
//! transactions, no `findAndModify` projections).

use std::future::IntoFuture;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bson::oid::ObjectId;
use bson::{Bson, DateTime, Document, doc};
use futures::TryStreamExt;
use mongodb::error::{ErrorKind, InsertManyError};
use mongodb::options::{
    Acknowledgment, ClientOptions, CollectionOptions, IndexOptions, WriteConcern,
};
use mongodb::{Client, Collection, Database, IndexModel};
use serde::Serialize;
use switchboard_runtime::credentials::CredentialError;

use crate::entry::ValidEntry;
use crate::settings;

/// MongoDB's duplicate key error: a repeated idempotency id.
const DUPLICATE_KEY: i32 = 11000;
/// `createIndexes` found an index on these keys with other options.
const INDEX_OPTIONS_CONFLICT: i32 = 85;
/// `createIndexes` found an index with this name on other keys.
const INDEX_KEY_SPECS_CONFLICT: i32 = 86;
/// The retention index; its own name so that turning retention off finds it.
const TTL_INDEX: &str = "created_at_ttl";

/// Why the store could not do what was asked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// The server did not answer in time or refused the whole operation.
    #[error("{0}")]
    Unavailable(String),
    /// The server stored the rest of the batch but refused this entry.
    #[error("the store refused the entry: {0}")]
    Rejected(String),
    /// The entry's idempotency id is stored already, with another name or
    /// data: storing it would lose this entry, calling it stored would lie.
    #[error("log entry id {id:?} is already stored with a different name or data")]
    Conflict { id: String },
}

/// Whether the store is known to be unreachable, and why. Writers set it when
/// a batch fails as a whole; a prober clears it once a `ping` answers again.
#[derive(Debug, Default)]
pub struct Health {
    down: AtomicBool,
    reason: Mutex<String>,
    changed: tokio::sync::Notify,
}

impl Health {
    /// The reason writes fail right now, or `None` while the store is up.
    pub fn down_reason(&self) -> Option<String> {
        if !self.down.load(Ordering::Acquire) {
            return None;
        }
        let reason = self
            .reason
            .lock()
            .map(|reason| reason.clone())
            .unwrap_or_else(|poisoned| poisoned.into_inner().clone());
        Some(reason)
    }

    pub fn mark_down(&self, reason: &str) {
        if let Ok(mut slot) = self.reason.lock() {
            *slot = reason.to_owned();
        }
        if !self.down.swap(true, Ordering::AcqRel) {
            tracing::warn!(error = %reason, "log store unreachable; failing writes until it answers again");
            self.changed.notify_one();
        }
    }

    fn mark_up(&self) {
        if self.down.swap(false, Ordering::AcqRel) {
            tracing::info!("log store answers again");
        }
    }

    /// Pings the store while it is marked down, and marks it up when it answers.
    pub async fn probe_while_down(
        &self,
        store: &Store,
        stop: impl std::future::Future<Output = ()>,
    ) {
        tokio::pin!(stop);
        loop {
            if self.down.load(Ordering::Acquire) {
                if store.ping().await.is_ok() {
                    self.mark_up();
                    continue;
                }
                tokio::select! {
                    () = tokio::time::sleep(Duration::from_millis(250)) => {}
                    () = &mut stop => return,
                }
            } else {
                tokio::select! {
                    () = self.changed.notified() => {}
                    () = &mut stop => return,
                }
            }
        }
    }
}

/// Which kind of server answers; FerretDB v1 lacks TTL indexes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerKind {
    MongoDb { version: String },
    FerretDb { version: String },
}

/// One stored entry as the read API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct StoredEntry {
    /// ObjectId in hex, or the client's idempotency id.
    pub id: String,
    pub name: String,
    pub data: String,
    /// RFC 3339, UTC.
    pub created_at: Option<String>,
    pub updated_at: Option<String>,
}

/// A read of the newest entries.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RecentQuery {
    pub limit: u32,
    pub name: Option<String>,
    /// Only entries created strictly before this instant.
    pub before: Option<DateTime>,
    /// Only entries after this one in newest-first order: the next page.
    pub after: Option<Cursor>,
}

/// One page of a newest-first read, and where the next one starts when the
/// page is full (there may be more).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page {
    pub entries: Vec<StoredEntry>,
    pub next: Option<Cursor>,
}

/// The position of one entry in newest-first order, `(created_at, _id)`: a
/// keyset, so a page costs the same however deep it is and entries written
/// meanwhile neither repeat nor go missing. Clients see it as an opaque token.
#[derive(Debug, Clone, PartialEq)]
pub struct Cursor {
    created_at: DateTime,
    id: Bson,
}

impl Eq for Cursor {}

/// A `cursor` that this logger did not hand out.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "cursor {0:?} is not one this API handed out; pass the cursor of the previous reply's Link header unchanged"
)]
pub struct BadCursor(pub String);

impl Cursor {
    const VERSION: &str = "c1";

    /// The cursor of a stored document; `None` for documents without a
    /// `created_at` date (written by hand or by the Go original).
    fn of(document: &Document) -> Option<Self> {
        let created_at = *document.get_datetime("created_at").ok()?;
        let id = match document.get("_id")? {
            id @ (Bson::ObjectId(_) | Bson::String(_)) => id.clone(),
            _ => return None,
        };
        Some(Self { created_at, id })
    }

    /// The token: hex of `c1:<millis>:<o|s>:<id>`, so it is URL-safe as is.
    pub fn encode(&self) -> String {
        let (kind, id) = match &self.id {
            Bson::ObjectId(oid) => ('o', oid.to_hex()),
            Bson::String(id) => ('s', id.clone()),
            other => ('s', other.to_string()),
        };
        let plain = format!(
            "{}:{}:{kind}:{id}",
            Self::VERSION,
            self.created_at.timestamp_millis()
        );
        plain.bytes().map(|byte| format!("{byte:02x}")).collect()
    }

    pub fn parse(token: &str) -> Result<Self, BadCursor> {
        let bad = || BadCursor(token.chars().take(64).collect());
        if !token.len().is_multiple_of(2) || token.len() > 2 * 600 {
            return Err(bad());
        }
        let bytes = (0..token.len())
            .step_by(2)
            .map(|at| {
                token
                    .get(at..at + 2)
                    .and_then(|pair| u8::from_str_radix(pair, 16).ok())
            })
            .collect::<Option<Vec<u8>>>()
            .ok_or_else(bad)?;
        let plain = String::from_utf8(bytes).map_err(|_| bad())?;
        let mut parts = plain.splitn(4, ':');
        let (Some(Self::VERSION), Some(millis), Some(kind), Some(id)) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(bad());
        };
        let created_at = DateTime::from_millis(millis.parse().map_err(|_| bad())?);
        let id = match kind {
            "o" => Bson::ObjectId(ObjectId::parse_str(id).map_err(|_| bad())?),
            "s" => Bson::String(id.to_owned()),
            _ => return Err(bad()),
        };
        Ok(Self { created_at, id })
    }

    /// The entries after this one in `created_at: -1, _id: -1` order. Ids are
    /// ObjectIds or strings, and BSON orders every string before every
    /// ObjectId, while `$lt` only matches values of its own type: after an
    /// ObjectId come the smaller ObjectIds and then all strings of the same
    /// instant. Only `$or`, `$lt` and `$type`, which MongoDB and FerretDB both have.
    fn filter(&self) -> Document {
        let same_instant_after = match &self.id {
            Bson::ObjectId(_) => doc! { "$or": [
                { "_id": { "$lt": self.id.clone() } },
                { "_id": { "$type": "string" } },
            ] },
            _ => doc! { "_id": { "$lt": self.id.clone() } },
        };
        doc! { "$or": [
            { "created_at": { "$lt": self.created_at } },
            { "$and": [ { "created_at": self.created_at }, same_instant_after ] },
        ] }
    }
}

/// The systemd credential holding the MongoDB password (`LoadCredential=`).
pub const PASSWORD_CREDENTIAL: &str = "mongodb-password";

/// Why the client cannot be built. No variant shows the URL's userinfo.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("invalid mongodb.url: {0}")]
    Url(#[source] mongodb::error::Error),
    #[error("cannot use the MongoDB password: {0}")]
    Password(#[source] CredentialError),
    #[error(
        "mongodb.url names no user, and the password from {} needs one: write the user into the URL (mongodb://USER@host/?authSource=admin)",
        path.display()
    )]
    NoUser { path: PathBuf },
}

/// The driver's options for `mongodb.url`, with the password from
/// `mongodb.password_file` when set, else from the credential
/// [`PASSWORD_CREDENTIAL`] in `credentials` when present (the URL's own
/// password otherwise). The user, the auth source and the mechanism stay the
/// URL's.
pub async fn client_options(
    settings: &settings::MongoDb,
    credentials: Option<&Path>,
) -> Result<ClientOptions, OpenError> {
    let password = switchboard_runtime::credentials::load(
        settings.password_file.as_deref(),
        PASSWORD_CREDENTIAL,
        credentials,
    )
    .map_err(OpenError::Password)?;
    let mut options = ClientOptions::parse(&settings.url)
        .await
        .map_err(OpenError::Url)?;
    if let Some(password) = password {
        let credential = options
            .credential
            .as_mut()
            .filter(|credential| credential.username.is_some())
            .ok_or_else(|| OpenError::NoUser {
                path: password.source().to_owned(),
            })?;
        credential.password = Some(password.expose().to_owned());
    }
    Ok(options)
}

/// The log collection and the client it belongs to.
#[derive(Debug, Clone)]
pub struct Store {
    client: Client,
    database: Database,
    collection: Collection<Document>,
    /// The same collection through a client of its own
    /// (`mongodb.read_connections`), so reads never hold the writes' pool.
    reads: Collection<Document>,
    timeout: Duration,
    read_timeout: Duration,
}

impl Store {
    /// Builds the client. The driver connects lazily, so this fails only for a
    /// malformed URL (or an SRV name that does not resolve) or a password file
    /// that cannot be read.
    pub async fn new(settings: &settings::MongoDb) -> Result<Self, OpenError> {
        let mut options = client_options(
            settings,
            switchboard_runtime::credentials::directory().as_deref(),
        )
        .await?;
        let timeout = settings.timeout();
        // Without a server the driver waits this long before failing an
        // operation; the default (30 s) would hold requests far too long.
        options.server_selection_timeout = Some(timeout);
        options.connect_timeout = Some(timeout);
        options.app_name = Some("switchboard-logger".to_owned());
        let mut read_options = options.clone();
        read_options.max_pool_size = Some(settings.read_connections.max(1));
        read_options.app_name = Some("switchboard-logger-reads".to_owned());
        let client = Client::with_options(options).map_err(OpenError::Url)?;
        let reads = Client::with_options(read_options)
            .map_err(OpenError::Url)?
            .database(&settings.database)
            .collection(&settings.collection);
        let database = client.database(&settings.database);
        // Acknowledged by the server and journaled: a 202 means the entry
        // survives a crash of the database server.
        let write_concern = WriteConcern::builder()
            .w(Acknowledgment::Nodes(1))
            .journal(true)
            .build();
        let collection = database.collection_with_options(
            &settings.collection,
            CollectionOptions::builder()
                .write_concern(write_concern)
                .build(),
        );
        Ok(Self {
            client,
            database,
            collection,
            reads,
            timeout,
            read_timeout: settings.read_timeout(),
        })
    }

    /// Bounds `operation` by the configured timeout.
    async fn bounded<T>(
        &self,
        what: &str,
        operation: impl IntoFuture<Output = mongodb::error::Result<T>>,
    ) -> Result<T, StoreError> {
        match tokio::time::timeout(self.timeout, operation.into_future()).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(err)) => Err(StoreError::Unavailable(format!("{what}: {err}"))),
            Err(_) => Err(StoreError::Unavailable(format!(
                "{what}: no answer within {} ms",
                self.timeout.as_millis()
            ))),
        }
    }

    /// Bounds a read by the read timeout.
    async fn bounded_read<T>(
        &self,
        what: &str,
        operation: impl IntoFuture<Output = mongodb::error::Result<T>>,
    ) -> Result<T, StoreError> {
        match tokio::time::timeout(self.read_timeout, operation.into_future()).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(err)) => Err(StoreError::Unavailable(format!("{what}: {err}"))),
            Err(_) => Err(StoreError::Unavailable(format!(
                "{what}: no answer within {} ms (mongodb.read_timeout_ms)",
                self.read_timeout.as_millis()
            ))),
        }
    }

    /// Whether the server answers.
    pub async fn ping(&self) -> Result<(), StoreError> {
        self.bounded(
            "ping",
            self.client
                .database("admin")
                .run_command(doc! { "ping": 1 }),
        )
        .await
        .map(drop)
    }

    /// Asks the server what it is.
    pub async fn server_kind(&self) -> Result<ServerKind, StoreError> {
        let info = self
            .bounded(
                "buildInfo",
                self.client
                    .database("admin")
                    .run_command(doc! { "buildInfo": 1 }),
            )
            .await?;
        let version = info.get_str("version").unwrap_or("unknown").to_owned();
        Ok(match info.get_str("ferretdbVersion") {
            Ok(ferret) => ServerKind::FerretDb {
                version: ferret.to_owned(),
            },
            Err(_) => ServerKind::MongoDb { version },
        })
    }

    /// Creates the indexes reads need and applies the retention setting.
    pub async fn prepare(&self, retention_days: u32, kind: &ServerKind) -> Result<(), StoreError> {
        // Newest first, optionally filtered by name: GET /logs.
        for (name, keys) in [
            ("created_at_desc", doc! { "created_at": -1 }),
            ("name_created_at", doc! { "name": 1, "created_at": -1 }),
        ] {
            let model = IndexModel::builder()
                .keys(keys)
                .options(IndexOptions::builder().name(name.to_owned()).build())
                .build();
            self.bounded("createIndexes", self.collection.create_index(model))
                .await?;
        }
        self.apply_retention(retention_days, kind).await
    }

    async fn apply_retention(&self, days: u32, kind: &ServerKind) -> Result<(), StoreError> {
        if let ServerKind::FerretDb { version } = kind {
            if days > 0 {
                tracing::warn!(
                    retention_days = days,
                    ferretdb = %version,
                    "this server (FerretDB) has no TTL indexes: mongodb.retention_days is ignored and entries are kept"
                );
            }
            return Ok(());
        }
        if days == 0 {
            // Retention switched off: a TTL index left from before would
            // otherwise keep deleting entries.
            let names = self
                .bounded("listIndexes", self.collection.list_index_names())
                .await?;
            if names.iter().any(|name| name == TTL_INDEX) {
                self.bounded("dropIndexes", self.collection.drop_index(TTL_INDEX))
                    .await?;
                tracing::info!("mongodb.retention_days is 0: removed the retention (TTL) index");
            }
            return Ok(());
        }
        let seconds = u64::from(days) * 24 * 60 * 60;
        // Ascending on purpose: the descending index above serves reads, and
        // two indexes on the same keys with different options would conflict.
        let model = IndexModel::builder()
            .keys(doc! { "created_at": 1 })
            .options(
                IndexOptions::builder()
                    .name(TTL_INDEX.to_owned())
                    .expire_after(Duration::from_secs(seconds))
                    .build(),
            )
            .build();
        match tokio::time::timeout(self.timeout, self.collection.create_index(model)).await {
            Ok(Ok(_)) => {}
            Ok(Err(err))
                if matches!(
                    command_error_code(&err),
                    Some(INDEX_OPTIONS_CONFLICT | INDEX_KEY_SPECS_CONFLICT)
                ) =>
            {
                // The index exists with another period: change it in place.
                let seconds = i64::try_from(seconds).unwrap_or(i64::MAX);
                self.bounded(
                    "collMod",
                    self.database.run_command(doc! {
                        "collMod": self.collection.name(),
                        "index": { "name": TTL_INDEX, "expireAfterSeconds": seconds },
                    }),
                )
                .await?;
            }
            Ok(Err(err)) => return Err(StoreError::Unavailable(format!("createIndexes: {err}"))),
            Err(_) => return Err(StoreError::Unavailable("createIndexes: no answer".into())),
        }
        tracing::info!(
            retention_days = days,
            "entries older than the retention period are deleted by MongoDB"
        );
        Ok(())
    }

    /// Inserts `documents` in one unordered `insert_many` and says, for each
    /// one in order, whether it is stored.
    ///
    /// A duplicate `_id` is a repeated write of an idempotency id: the
    /// document already stored under it is read back, and the write counts as
    /// stored if it has the same name and data, as a [`StoreError::Conflict`]
    /// if not. This holds for a duplicate within the batch too (the unordered
    /// insert stores the first and reports the others), and for any server
    /// speaking the wire protocol: it needs only `insert_many`'s per-document
    /// write errors and a `find` by `_id`, which MongoDB and FerretDB both have.
    pub async fn insert_batch(&self, documents: &[&Document]) -> Vec<Result<(), StoreError>> {
        let count = documents.len();
        let insert = self
            .collection
            .insert_many(documents.iter().copied())
            .ordered(false);
        let err = match tokio::time::timeout(self.timeout, insert.into_future()).await {
            Ok(Ok(_)) => return vec![Ok(()); count],
            Ok(Err(err)) => err,
            Err(_) => {
                let reason = format!("insert: no answer within {} ms", self.timeout.as_millis());
                return vec![Err(StoreError::Unavailable(reason)); count];
            }
        };
        match *err.kind {
            ErrorKind::InsertMany(InsertManyError {
                write_errors,
                write_concern_error: None,
                ..
            }) => {
                let mut outcomes = vec![Ok(()); count];
                let mut duplicates = Vec::new();
                for error in write_errors.unwrap_or_default() {
                    if error.code == DUPLICATE_KEY && error.index < count {
                        duplicates.push(error.index);
                        continue;
                    }
                    if let Some(outcome) = outcomes.get_mut(error.index) {
                        *outcome = Err(StoreError::Rejected(format!(
                            "{} (code {})",
                            error.message, error.code
                        )));
                    }
                }
                if !duplicates.is_empty() {
                    self.judge_duplicates(documents, &duplicates, &mut outcomes)
                        .await;
                }
                outcomes
            }
            // Not confirmed as journaled: every entry is reported as failed so
            // that producers retry (idempotency ids keep retries single).
            ref kind => {
                let reason = format!("insert: {kind}");
                vec![Err(StoreError::Unavailable(reason)); count]
            }
        }
    }

    /// Settles the entries at `indexes`, whose `_id` was stored already: the
    /// same name and data is the same entry (stored), anything else a conflict.
    async fn judge_duplicates(
        &self,
        documents: &[&Document],
        indexes: &[usize],
        outcomes: &mut [Result<(), StoreError>],
    ) {
        let ids: Vec<Bson> = indexes
            .iter()
            .filter_map(|&index| documents[index].get("_id").cloned())
            .collect();
        let existing: Result<Vec<Document>, StoreError> = self
            .bounded("find", async {
                self.collection
                    .find(doc! { "_id": { "$in": ids } })
                    .projection(doc! { "name": 1, "data": 1 })
                    .await?
                    .try_collect()
                    .await
            })
            .await;
        for &index in indexes {
            let document = documents[index];
            let id = document.get("_id");
            outcomes[index] = match &existing {
                Err(err) => Err(StoreError::Unavailable(format!(
                    "reading back a repeated id: {err}"
                ))),
                Ok(found) => match found.iter().find(|stored| stored.get("_id") == id) {
                    Some(stored) if same_entry(stored, document) => Ok(()),
                    Some(_) => Err(StoreError::Conflict {
                        id: id.map(display_id).unwrap_or_default(),
                    }),
                    // Reported as a duplicate, yet gone (deleted meanwhile):
                    // a retry will store it. Not `Unavailable`, which would
                    // mark the whole store down.
                    None => Err(StoreError::Rejected(
                        "the id was taken, then gone when read back; retry".to_owned(),
                    )),
                },
            };
        }
    }

    /// The find of [`Store::recent`]: its filter and sort, which the
    /// indexes of [`Store::prepare`] serve on MongoDB (`name` equality, then
    /// `created_at` descending).
    pub fn recent_filter(query: &RecentQuery) -> Document {
        let mut conditions = Vec::new();
        if let Some(name) = &query.name {
            conditions.push(doc! { "name": name.as_str() });
        }
        if let Some(before) = query.before {
            conditions.push(doc! { "created_at": { "$lt": before } });
        }
        if let Some(after) = &query.after {
            conditions.push(after.filter());
        }
        match conditions.len() {
            0 => Document::new(),
            1 => conditions.remove(0),
            _ => doc! { "$and": conditions },
        }
    }

    /// Newest first, ties broken by `_id`, as the cursor expects.
    pub fn recent_sort() -> Document {
        doc! { "created_at": -1, "_id": -1 }
    }

    /// A page of the newest entries, newest first, bounded by the read
    /// timeout rather than the write one (a slow read must not look like a
    /// store outage), on the reads' own connections (writes must not wait
    /// behind it), and with the server told the same bound (`maxTimeMS`) so
    /// it stops a read the logger gave up on.
    pub async fn recent(&self, query: &RecentQuery) -> Result<Page, StoreError> {
        let filter = Self::recent_filter(query);
        let find = async {
            self.reads
                .find(filter)
                .sort(Self::recent_sort())
                .limit(i64::from(query.limit))
                .max_time(self.read_timeout)
                .await?
                .try_collect::<Vec<Document>>()
                .await
        };
        let documents = self.bounded_read("find", find).await?;
        let full = query.limit > 0 && documents.len() >= query.limit as usize;
        let next = full
            .then(|| documents.last().and_then(Cursor::of))
            .flatten();
        Ok(Page {
            entries: documents.iter().map(stored_entry).collect(),
            next,
        })
    }

    /// One entry by id: an ObjectId in hex or a client's idempotency id.
    pub async fn get(&self, id: &str) -> Result<Option<StoredEntry>, StoreError> {
        let filter = match ObjectId::parse_str(id) {
            // A client may have chosen an id that looks like an ObjectId.
            Ok(oid) => doc! { "_id": { "$in": [oid, id] } },
            Err(_) => doc! { "_id": id },
        };
        let found = self
            .bounded_read(
                "find",
                self.reads.find_one(filter).max_time(self.read_timeout),
            )
            .await?;
        Ok(found.as_ref().map(stored_entry))
    }
}

/// The document stored for `entry`, received at `now`.
pub fn document(entry: &ValidEntry, now: DateTime) -> Document {
    let id = match entry.id() {
        Some(id) => Bson::String(id.to_owned()),
        None => Bson::ObjectId(ObjectId::new()),
    };
    doc! {
        "_id": id,
        "name": entry.name(),
        "data": entry.data(),
        "created_at": now,
        "updated_at": now,
    }
}

/// Whether two documents hold the same entry: the same name and data (the
/// times differ between a write and its repetition).
fn same_entry(stored: &Document, written: &Document) -> bool {
    stored.get("name") == written.get("name") && stored.get("data") == written.get("data")
}

/// An `_id` as clients wrote it: their string, or an ObjectId in hex.
fn display_id(id: &Bson) -> String {
    match id {
        Bson::String(id) => id.clone(),
        Bson::ObjectId(oid) => oid.to_hex(),
        other => other.to_string(),
    }
}

/// Reads a stored document leniently: documents written by the original Go
/// logger (or by hand) may lack fields.
fn stored_entry(document: &Document) -> StoredEntry {
    let id = match document.get("_id") {
        Some(Bson::ObjectId(oid)) => oid.to_hex(),
        Some(Bson::String(id)) => id.clone(),
        Some(other) => other.to_string(),
        None => String::new(),
    };
    let text = |key: &str| document.get_str(key).unwrap_or_default().to_owned();
    let date = |key: &str| {
        document
            .get_datetime(key)
            .ok()
            .and_then(|date| date.try_to_rfc3339_string().ok())
    };
    StoredEntry {
        id,
        name: text("name"),
        data: text("data"),
        created_at: date("created_at"),
        updated_at: date("updated_at"),
    }
}

/// The server's error code of a failed command, if it was one.
fn command_error_code(err: &mongodb::error::Error) -> Option<i32> {
    match err.kind.as_ref() {
        ErrorKind::Command(command) => Some(command.code),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::entry::EntryRules;

    fn mongodb(url: &str, password_file: Option<&Path>) -> settings::MongoDb {
        settings::MongoDb {
            url: url.to_owned(),
            password_file: password_file.map(Path::to_owned),
            ..settings::MongoDb::default()
        }
    }

    /// (user, password, auth source) of the options.
    fn credential(options: &ClientOptions) -> Option<(String, Option<String>, Option<String>)> {
        options.credential.as_ref().map(|credential| {
            (
                credential.username.clone().unwrap_or_default(),
                credential.password.clone(),
                credential.source.clone(),
            )
        })
    }

    #[tokio::test]
    async fn the_password_comes_from_the_file_else_the_credential_else_the_url() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join(PASSWORD_CREDENTIAL), "from-credential\n").expect("write");
        let file = dir.path().join("configured");
        std::fs::write(&file, "p@ss:w/rd%2f\r\n").expect("write");
        let url = "mongodb://logger:from-url@127.0.0.1:27017/?authSource=admin";
        let expect = |password: &str| {
            Some((
                "logger".to_owned(),
                Some(password.to_owned()),
                Some("admin".to_owned()),
            ))
        };

        let options = client_options(&mongodb(url, Some(&file)), Some(dir.path()))
            .await
            .expect("options");
        assert_eq!(credential(&options), expect("p@ss:w/rd%2f"));
        let options = client_options(&mongodb(url, None), Some(dir.path()))
            .await
            .expect("options");
        assert_eq!(credential(&options), expect("from-credential"));
        let empty = tempfile::tempdir().expect("tempdir");
        let options = client_options(&mongodb(url, None), Some(empty.path()))
            .await
            .expect("options");
        assert_eq!(credential(&options), expect("from-url"));
    }

    #[tokio::test]
    async fn a_user_without_a_password_in_the_url_gets_the_credential() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join(PASSWORD_CREDENTIAL), "secret\n").expect("write");
        let options = client_options(
            &mongodb("mongodb://us%40er@db.internal/logs", None),
            Some(dir.path()),
        )
        .await
        .expect("options");
        assert_eq!(
            credential(&options),
            Some((
                "us@er".to_owned(),
                Some("secret".to_owned()),
                // The driver takes the database in the path as the auth source.
                Some("logs".to_owned())
            ))
        );
        // The driver's Debug of the options never shows it.
        assert!(!format!("{options:?}").contains("secret"));
    }

    #[tokio::test]
    async fn a_password_without_a_user_is_refused_and_names_the_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join(PASSWORD_CREDENTIAL), "secret\n").expect("write");
        let err = client_options(
            &mongodb("mongodb://127.0.0.1:27017", None),
            Some(dir.path()),
        )
        .await
        .expect_err("no user");
        let message = err.to_string();
        assert!(matches!(err, OpenError::NoUser { .. }), "{message}");
        assert!(message.contains("mongodb-password"), "{message}");
        assert!(!message.contains("secret"), "{message}");
        // No password anywhere: no credential, as before.
        let options = client_options(&mongodb("mongodb://127.0.0.1:27017", None), None)
            .await
            .expect("options");
        assert_eq!(credential(&options), None);
    }

    #[tokio::test]
    async fn an_unreadable_password_file_is_named() {
        let err = client_options(
            &mongodb(
                "mongodb://logger@127.0.0.1",
                Some(Path::new("/nonexistent/mongodb-password")),
            ),
            None,
        )
        .await
        .expect_err("missing file");
        let message = err.to_string();
        assert!(
            message.contains("/nonexistent/mongodb-password"),
            "{message}"
        );
        assert!(message.contains("MongoDB password"), "{message}");
    }

    const RULES: EntryRules = EntryRules {
        max_name_bytes: 64,
        max_data_bytes: 64,
    };

    #[test]
    fn documents_carry_the_idempotency_id_or_an_object_id() {
        let now = DateTime::from_millis(1_700_000_000_000);
        let with_id = RULES
            .parse("event".into(), "data".into(), Some("msg-1".into()))
            .expect("valid");
        let document = document(&with_id, now);
        assert_eq!(document.get_str("_id").ok(), Some("msg-1"));
        assert_eq!(document.get_datetime("created_at").ok(), Some(&now));
        assert_eq!(document.get_datetime("updated_at").ok(), Some(&now));

        let without = RULES
            .parse("event".into(), "data".into(), None)
            .expect("valid");
        assert!(super::document(&without, now).get_object_id("_id").is_ok());
    }

    #[test]
    fn stored_entries_read_back_for_both_id_kinds() {
        let now = DateTime::from_millis(1_700_000_000_000);
        let oid = ObjectId::new();
        let entry = stored_entry(&doc! {
            "_id": oid, "name": "n", "data": "d", "created_at": now, "updated_at": now,
        });
        assert_eq!(entry.id, oid.to_hex());
        assert_eq!(entry.created_at.as_deref(), Some("2023-11-14T22:13:20Z"));
        let entry = stored_entry(&doc! { "_id": "custom", "name": "n" });
        assert_eq!(entry.id, "custom");
        assert_eq!(entry.data, "");
        assert_eq!(entry.created_at, None);
    }

    #[tokio::test]
    async fn health_reports_the_reason_while_down() {
        let health = Health::default();
        assert_eq!(health.down_reason(), None);
        health.mark_down("connection refused");
        assert_eq!(health.down_reason().as_deref(), Some("connection refused"));
        health.mark_up();
        assert_eq!(health.down_reason(), None);
    }
}
