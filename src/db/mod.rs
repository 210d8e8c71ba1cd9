//! The metadata database, through sqlx's `Any` driver so one set of queries serves SQLite
//! and PostgreSQL alike. Queries use `$N` placeholders, which both dialects accept.

pub mod contacts;
pub mod delegations;
pub mod disclosures;
pub mod documents;
pub mod dossiers;
mod ingest;
pub mod lifecycle;
pub mod messages;
pub mod notices;
pub mod ocr;
pub mod outbox;
pub mod registrations;
pub mod scope;
pub mod users;
pub mod web;

use std::str::FromStr;
use std::time::Duration;

use sqlx::any::{AnyArguments, AnyPoolOptions};
use sqlx::{Any, AnyPool, Arguments, AssertSqlSafe, Encode, Transaction, Type};

use crate::domain::Catalogue;

/// A database error, kept opaque to callers above the query layer.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// The driver failed.
    #[error(transparent)]
    Sqlx(#[from] sqlx::Error),
    /// Migrations could not be applied.
    #[error(transparent)]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// A stored value is not what the schema allows.
    #[error("corrupt row: {0}")]
    Corrupt(String),
    /// A deduplicated blob was garbage-collected before the row referencing it committed;
    /// the upload must store its bytes again.
    #[error("blob vanished before commit")]
    BlobVanished,
    /// The task writing the transaction ended before it answered (the server stopping, or a
    /// fault in that task).
    #[error("the write was interrupted before it committed")]
    Interrupted,
    /// The database URL names a backend this build does not speak.
    #[error("unsupported database URL {0:?}: use sqlite://PATH or postgres://...")]
    UnsupportedUrl(String),
}

impl DbError {
    /// True when the error is a violated unique constraint.
    pub fn is_unique_violation(&self) -> bool {
        matches!(self, DbError::Sqlx(sqlx::Error::Database(e)) if e.is_unique_violation())
    }
}

/// Which SQL dialect sits behind the pool.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// An embedded SQLite file.
    Sqlite,
    /// A PostgreSQL server.
    Postgres,
}

/// The connection pool and its dialect.
#[derive(Clone, Debug)]
pub struct Db {
    pool: AnyPool,
    /// Where write transactions run. On SQLite a pool of one connection: writers wait their
    /// turn in order here, instead of colliding on SQLite's lock, whose busy handler sleeps
    /// 1, 2, 5, 10… ms between tries. On PostgreSQL the same pool as `pool`.
    writer: AnyPool,
    backend: Backend,
    /// New documents waiting for the transaction that will carry them.
    creates: std::sync::Arc<ingest::CreateQueue>,
    /// Counts committed changes to who may do what (tokens, accounts, offices, dossiers'
    /// applicants and delegations), so that what a node keeps about callers is dropped at once.
    access_generation: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

static SQLITE_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("migrations/sqlite");
static POSTGRES_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("migrations/postgres");

impl Db {
    /// Connects to `url` (`sqlite://path` or `postgres://…`) and applies pending migrations.
    pub async fn open(url: &str) -> Result<Self, DbError> {
        sqlx::any::install_default_drivers();
        let backend = if url.starts_with("sqlite:") {
            Backend::Sqlite
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            Backend::Postgres
        } else {
            return Err(DbError::UnsupportedUrl(url.to_owned()));
        };
        let options = AnyPoolOptions::new().acquire_timeout(Duration::from_secs(30));
        // `pragmas` are run on each new connection after the common ones.
        let sqlite = |connections: u32, pragmas: &'static str| {
            options
                .clone()
                .max_connections(connections)
                // A connection to a local file does not go stale: no ping (a round trip to
                // the connection's thread) before every use.
                .test_before_acquire(false)
                .after_connect(move |conn, _| {
                    Box::pin(async move {
                        // WAL lets readers run beside a writer; FULL sync makes a commit
                        // durable before it is acknowledged; foreign keys are off by default.
                        sqlx::raw_sql(
                            "pragma journal_mode = wal; pragma synchronous = full; \
                             pragma foreign_keys = on; pragma busy_timeout = 10000;",
                        )
                        .execute(&mut *conn)
                        .await?;
                        sqlx::raw_sql(pragmas).execute(conn).await?;
                        Ok(())
                    })
                })
                .connect(url)
        };
        let (pool, writer) = match backend {
            // SQLite writes one at a time; a few readers beside the writer are plenty.
            // The writer keeps 32 MiB of pages instead of SQLite's default 2 MiB: the
            // audit table's index by dossier takes its inserts all over, and with the default
            // its pages were read back from the file for nearly every row the mover added.
            Backend::Sqlite => (
                sqlite(8, "").await?,
                sqlite(1, "pragma cache_size = -32768;").await?,
            ),
            Backend::Postgres => {
                let pool = options.max_connections(16).connect(url).await?;
                (pool.clone(), pool)
            }
        };
        let db = Self {
            pool,
            writer,
            backend,
            creates: Default::default(),
            access_generation: Default::default(),
        };
        match backend {
            Backend::Sqlite => SQLITE_MIGRATIONS.run(&db.pool).await?,
            Backend::Postgres => POSTGRES_MIGRATIONS.run(&db.pool).await?,
        }
        Ok(db)
    }

    /// How many changes to callers' rights this process has committed or applied from the
    /// change log; what is kept about a caller is valid only under the generation it was read in.
    pub fn access_generation(&self) -> u64 {
        self.access_generation
            .load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Records that a change to callers' rights was committed (call after the commit).
    pub fn access_changed(&self) {
        self.access_generation
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }

    /// The pool, for queries.
    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// The dialect behind the pool.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Starts a transaction that will write. On SQLite it runs on the single write
    /// connection, so writers queue in order for it, and takes the write lock at once
    /// (`BEGIN IMMEDIATE`), so a transaction never fails upgrading a read lock. Never call it
    /// while holding another write transaction.
    pub async fn begin_write(&self) -> Result<Transaction<'static, Any>, DbError> {
        Ok(match self.backend {
            Backend::Sqlite => self.writer.begin_with("begin immediate").await?,
            Backend::Postgres => self.writer.begin().await?,
        })
    }

    /// Where a single write statement outside a transaction runs (see `writer`).
    pub fn write_pool(&self) -> &AnyPool {
        &self.writer
    }

    /// Checks that the database answers.
    pub async fn ping(&self) -> Result<(), DbError> {
        sqlx::query("select 1").execute(&self.pool).await?;
        Ok(())
    }

    /// Writes the catalogue's offices and procedures for `tenant`, updating names and
    /// deadlines of existing ones. Codes are never deleted: old dossiers reference them.
    pub async fn sync_catalogue(&self, tenant: &str, catalogue: &Catalogue) -> Result<(), DbError> {
        let mut tx = self.begin_write().await?;
        for office in catalogue.offices() {
            sqlx::query(
                "insert into office (tenant, code, name) values ($1, $2, $3) \
                 on conflict (tenant, code) do update set name = excluded.name",
            )
            .bind(tenant)
            .bind(office.code.as_str())
            .bind(&office.name)
            .execute(&mut *tx)
            .await?;
        }
        for p in catalogue.procedures() {
            sqlx::query(
                "insert into procedure_kind (tenant, code, name, office_code, deadline_days) \
                 values ($1, $2, $3, $4, $5) on conflict (tenant, code) do update set \
                 name = excluded.name, office_code = excluded.office_code, \
                 deadline_days = excluded.deadline_days",
            )
            .bind(tenant)
            .bind(p.code.as_str())
            .bind(&p.name)
            .bind(p.office.as_str())
            .bind(p.deadline_days as i32)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }
}

/// Builds a query whose shape depends on the request (filters, permissions), numbering
/// placeholders as it goes. Values are always bound, never spliced into the text.
#[derive(Default)]
pub struct Sql {
    text: String,
    args: AnyArguments,
    count: usize,
    /// Anonymous `?` placeholders instead of `$N`.
    anonymous: bool,
}

impl Sql {
    /// Starts a query with a fixed prefix.
    pub fn new(text: &str) -> Self {
        Self {
            text: text.to_owned(),
            ..Self::default()
        }
    }

    /// Starts a query for `backend` with anonymous placeholders where the dialect has them
    /// (SQLite). SQLite looks a numbered parameter up by name in a list, so binding a
    /// statement of hundreds of `$N` costs time quadratic in their number; `?` costs nothing.
    /// Only for statements that are the same text for every call of a given size (SQLite
    /// numbers `?` by position, so the text must not mix in `$N`).
    pub fn new_positional(backend: Backend, text: &str) -> Self {
        Self {
            text: text.to_owned(),
            anonymous: backend == Backend::Sqlite,
            ..Self::default()
        }
    }

    /// Appends literal SQL.
    pub fn push(&mut self, text: &str) -> &mut Self {
        self.text.push_str(text);
        self
    }

    /// Appends a placeholder bound to `value`.
    pub fn bind<T>(&mut self, value: T) -> &mut Self
    where
        T: for<'q> Encode<'q, Any> + Type<Any> + 'static,
    {
        self.count += 1;
        if self.anonymous {
            self.text.push('?');
        } else {
            self.text.push('$');
            self.text.push_str(&self.count.to_string());
        }
        // Encoding into the Any buffer only fails for types Any cannot carry, which the
        // bound above rules out; keep the error anyway rather than panic.
        if let Err(e) = self.args.add(value) {
            tracing::error!(error = %e, "value could not be bound");
        }
        self
    }

    /// The finished query.
    pub fn query(self) -> sqlx::query::Query<'static, Any, AnyArguments> {
        sqlx::query_with(AssertSqlSafe(self.text), self.args)
    }

    /// The finished query, mapped to a row type.
    pub fn query_as<T>(self) -> sqlx::query::QueryAs<'static, Any, T, AnyArguments>
    where
        T: for<'r> sqlx::FromRow<'r, sqlx::any::AnyRow>,
    {
        sqlx::query_as_with(AssertSqlSafe(self.text), self.args)
    }

    /// The finished query, for a single column.
    pub fn query_scalar<T>(self) -> sqlx::query::QueryScalar<'static, Any, T, AnyArguments>
    where
        (T,): for<'r> sqlx::FromRow<'r, sqlx::any::AnyRow>,
    {
        sqlx::query_scalar_with(AssertSqlSafe(self.text), self.args)
    }
}

/// Rows one multi-row insert carries at most.
const ROWS_PER_INSERT: usize = 32;

/// One row's values in a multi-row insert (see [`insert_rows`]).
pub struct RowValues<'s> {
    sql: &'s mut Sql,
    first: bool,
}

impl RowValues<'_> {
    /// Appends the row's next value.
    pub fn value<T>(&mut self, value: T) -> &mut Self
    where
        T: for<'q> Encode<'q, Any> + Type<Any> + 'static,
    {
        if !self.first {
            self.sql.push(", ");
        }
        self.first = false;
        self.sql.bind(value);
        self
    }
}

/// Inserts `rows` with multi-row statements: a round trip per row would dominate a
/// transaction that writes many. Statements carry 32, 16, 8, 4, 2 or 1 rows, so the few
/// distinct texts stay prepared in the connection's statement cache. `prefix` is the statement
/// up to and including `values `, `suffix` what follows the rows (an `on conflict` clause);
/// `row` appends one row's values in column order, and is called once per row, in order.
pub async fn insert_rows<R>(
    tx: &mut Transaction<'static, Any>,
    backend: Backend,
    (prefix, suffix): (&str, &str),
    rows: &[R],
    mut row: impl FnMut(&mut RowValues<'_>, &R),
) -> Result<(), DbError> {
    let mut rest = rows;
    while !rest.is_empty() {
        let count = ROWS_PER_INSERT.min(1 << rest.len().ilog2());
        let (chunk, tail) = rest.split_at(count);
        rest = tail;
        let mut sql = Sql::new_positional(backend, prefix);
        for (i, r) in chunk.iter().enumerate() {
            sql.push(if i == 0 { "(" } else { ", (" });
            row(
                &mut RowValues {
                    sql: &mut sql,
                    first: true,
                },
                r,
            );
            sql.push(")");
        }
        sql.push(suffix);
        sql.query().execute(&mut **tx).await?;
    }
    Ok(())
}

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> i64 {
    jiff::Timestamp::now().as_millisecond()
}

/// Parses a stored enum name, reporting a corrupt row instead of panicking.
pub fn parse_stored<T: FromStr>(text: &str, column: &str) -> Result<T, DbError> {
    text.parse()
        .map_err(|_| DbError::Corrupt(format!("{column} = {text:?}")))
}
